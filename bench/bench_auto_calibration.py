"""backend.calibration_method=auto against one entropy calibration (TensorRT's default), measured in one run
on a DetectNet_v2 of TAO's ResNet-18 shape at 960x544 (TAO 5's opset-12 export, 4 classes, random weights)
with the pipeline's defaults: 10 calibration batches of 8 images, 32 selection images. The target: auto at
most 1.15x its own work, measured in the same run: one statistics pass (every method's ranges, the pass auto
makes) plus the candidates' scoring at the deployable graphs' own speed (fp32 and the three INT8 models run
over the selection images, decoded beforehand, sessions made beforehand). What auto adds to that is the
graphs' writing, their sessions, the decoding, the post-processing and the metric.

  entropy   one calibration pass, the cache written
  auto      one pass collecting every method's statistics, the three deployable INT8 models (and fp32)
            scored on the selection images by their boxes' agreement with fp32's less the mAP they lose;
            no layer left out (random heads: every mAP is 0)
  fallback  auto made to leave layers out (a gate no model passes): the sensitivity screen and up to
            export.max_float_layers (4) more selection scores, the worst case

    python bench/bench_auto_calibration.py [--batches 10] [--selection 32] [--no-fallback]

About 10 minutes on a 2-core machine; part of `make bench`, not of `make test`.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from _common import ROOT  # noqa: F401 - puts the project on sys.path

from stages import bundled_sample
from tao_shapes import RESNET18_WIDTHS, build_resnet18_shape
from tao_shapes import TAO_INPUT_NAME, TAO_OUTPUT_NAMES, as_tao_export
from stages.detectnet_v2.evaluation import Sample, evaluation_setup
from stages.detectnet_v2.preprocessing import iter_batches, list_images
from stages.formats.calibration_cache import write_cache
from stages.formats.onnx_model import TAO_OUTPUTS, export_model
from stages.open_backend import int8_selection
from stages.quantization.calibrate import collect_candidates, collect_ranges
from stages.pipeline import config
from stages.spec import Spec

WIDTH, HEIGHT, CLASSES, BATCH = 960, 544, ("car", "cyclist", "pedestrian", "road_sign"), 8
PERCENTILE = config.load([]).backend.percentile  # conf/'s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--selection", type=int, default=32)
    parser.add_argument("--no-fallback", action="store_true", help="measure auto only, not its worst case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_resnet18_shape(folder / "plain.onnx", WIDTH, HEIGHT, len(CLASSES), RESNET18_WIDTHS)
        onnx.save(as_tao_export(onnx.load(folder / "plain.onnx"), 12), folder / "tao5.onnx")
        export_model(folder / "tao5.onnx", folder / "model.onnx", TAO_INPUT_NAME,
                     dict(zip(TAO_OUTPUTS, TAO_OUTPUT_NAMES)), (3, HEIGHT, WIDTH))
        count = args.batches * BATCH
        bundled_sample.write_dataset(folder, {"training": count}, 7, (WIDTH, HEIGHT), classes=CLASSES)
        bundled_sample.write_spec(folder / "spec.txt", WIDTH, HEIGHT, BATCH, CLASSES)
        images = list_images(folder / "training" / "image_2")

        def batches():
            return iter_batches(images, BATCH, WIDTH, HEIGHT)

        start = time.perf_counter()
        write_cache(folder / "calibration.bin", collect_ranges(folder / "model.onnx", batches(), "entropy", percentile=None, skip_zeros=True),
                    "entropy", 8601)
        entropy = time.perf_counter() - start
        setup = evaluation_setup(Spec.load(folder / "spec.txt"), WIDTH, HEIGHT)
        picked = [images[i * len(images) // args.selection] for i in range(args.selection)]
        samples = [Sample(p, p.parent.parent / "label_2" / f"{p.stem}.txt") for p in picked]
        statistics, scoring = own_work(folder / "model.onnx", batches, samples, setup)
        times = {}
        for name, max_drop in (("auto", 0.02), ("fallback", -1.0))[: 1 if args.no_fallback else 2]:
            start = time.perf_counter()
            maxima = {}
            candidates = collect_candidates(folder / "model.onnx", batches(), percentile=PERCENTILE, maxima=maxima, skip_zeros=True)
            selection = int8_selection.choose(folder / "model.onnx", candidates, samples, setup, BATCH, "fp16", maxima,
                                              max_drop, 4)
            write_cache(folder / "calibration.bin", candidates[selection.chosen], selection.chosen, 8601)
            times[name] = time.perf_counter() - start
            print(f"  {name}: chose {selection.chosen}, left out {selection.float_layers or 'nothing'}")
        print(f"TAO 5-shaped ResNet-18 at {WIDTH}x{HEIGHT}, {args.batches} calibration batches of {BATCH}, "
              f"{args.selection} selection images")
        print(f"  one entropy calibration {entropy:.1f} s")
        for name, seconds in times.items():
            print(f"  {name} {seconds:.1f} s: {seconds / entropy:.2f}x")
        work = statistics + scoring
        print(f"  auto's own work {work:.1f} s (the statistics pass {statistics:.1f} s, the scoring at the graphs' "
              f"own speed {scoring:.1f} s): auto {times['auto'] / work:.2f}x its own work (target <= 1.15)")


def own_work(model: Path, batches, samples: list, setup) -> tuple[float, float]:
    """The statistics pass alone, and fp32's and the three candidates' deployable graphs alone over the
    selection images (decoded and sessions made beforehand, by auto's own scorer): the work auto cannot do
    without."""
    from stages.formats.calibration_cache import scales_of

    start = time.perf_counter()
    maxima = {}
    candidates = collect_candidates(model, batches(), percentile=PERCENTILE, maxima=maxima, skip_zeros=True)
    statistics = time.perf_counter() - start
    scorer = int8_selection._Scorer(model, samples, setup, BATCH, "fp16", maxima, None)
    runners = [scorer.reference, *(scorer.runner(scales_of(amax)) for amax in candidates.values())]
    for runner in runners:
        runner(scorer.batches[0])  # warm-up, as the sessions' first run in auto is
    start = time.perf_counter()
    for runner in runners:
        for batch in scorer.batches:
            runner(batch)
    return statistics, time.perf_counter() - start


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
