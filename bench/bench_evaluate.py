"""Evaluation vs plain inference of the same engine over the same validation images, in one run (the
target: evaluation <= 1.3x). The model is the sample's, fitted so that it detects (clustering and
matching cost grow with the detections; a model that finds nothing would flatter the figure).

Three timings, each the fastest of a few runs:
  inference   the engine over the images already decoded and preprocessed in memory (the bound);
  pipeline    decoding + preprocessing (LANCZOS, as evaluation does) + inference: what any evaluation
              must do before post-processing;
  evaluation  the evaluate stage's evaluator: all of the above, then decoding of the grid, clustering
              per class (DBSCAN) and KITTI AP.

    python bench/bench_evaluate.py [sample] [kitti] [kitti-wide] [--profile]

`sample` is the bundled sample's size (624x192); `kitti` is KITTI's DetectNet_v2 input (1248x384), where
inference costs 4x as much while reading the images costs the same.
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import best_of

from stages import bundled_sample
from stages.detectnet_v2.evaluation import evaluate, evaluation_setup, validation_set
from stages.detectnet_v2.inference import OnnxRunner
from stages.detectnet_v2.preprocessing import EVALUATION_RESAMPLE, iter_batches
from stages.formats.onnx_model import export_model
from stages.spec import Spec

BATCH, IMAGES = 8, 64
SIZES = {"sample": (624, 192, 16), "kitti": (1248, 384, 16), "kitti-wide": (1248, 384, 32)}  # width, height, base


def main() -> None:
    for size in [a for a in sys.argv[1:] if a in SIZES] or ["sample", "kitti"]:
        measure(*SIZES[size])


def measure(WIDTH: int, HEIGHT: int, base_width: int) -> None:  # noqa: N803 - the constants of one run
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundled_sample.write_dataset(tmp, {"training": 96, "validation": IMAGES}, seed=7)
        bundled_sample.write_spec(tmp / "spec.txt", WIDTH, HEIGHT, BATCH)
        bundled_sample.fit_model(tmp / "fitted.onnx", tmp / "training", bundled_sample.CLASSES, WIDTH, HEIGHT,
                                 base_width)
        export_model(tmp / "fitted.onnx", tmp / "model.onnx")
        engine = OnnxRunner(tmp / "model.onnx")
        setup = evaluation_setup(Spec.load(tmp / "spec.txt"), WIDTH, HEIGHT)
        samples = validation_set(tmp / "validation/image_2", tmp / "validation/label_2")
        images = [s.image for s in samples]
        decoded = [np.array(b) for b in iter_batches(images, BATCH, WIDTH, HEIGHT, resample=EVALUATION_RESAMPLE)]

        def pipeline():
            for batch in iter_batches(images, BATCH, WIDTH, HEIGHT, resample=EVALUATION_RESAMPLE):
                engine(batch)

        def evaluation():
            return evaluate({"engine": engine}, samples, setup, BATCH)["engine"]

        found = evaluation()  # warm-up: imports, numba kernels, onnxruntime's first runs
        inference = best_of(5, lambda: [engine(b) for b in decoded])
        preprocess_and_infer = best_of(5, pipeline)
        evaluated = best_of(5, evaluation)
        detections = sum(len(d[name].confidences) for d in found.detections for name in setup.classes)
        aps = found.average_precisions()
        print(f"evaluation of a fitted sample model ({WIDTH}x{HEIGHT}, base width {base_width}) on {IMAGES} "
              f"KITTI-sized images, "
              f"{detections} detections, mAP {np.mean(list(aps.values())):.3f}")
        print(f"  inference alone (decoded images)     {inference * 1000:8.1f} ms")
        print(f"  decoding + inference                 {preprocess_and_infer * 1000:8.1f} ms")
        print(f"  evaluation                           {evaluated * 1000:8.1f} ms")
        print(f"  evaluation / inference alone         {evaluated / inference:8.2f}x  (target <= 1.3x)")
        print(f"  evaluation / decoding + inference    {evaluated / preprocess_and_infer:8.2f}x")
        if "--profile" in sys.argv:
            profile = cProfile.Profile()
            profile.runcall(evaluation)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
