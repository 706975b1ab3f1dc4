"""The deployable ONNX, measured in one run.

1. Its cost: on a DetectNet_v2 of TAO's ResNet-18 shape at 960x544 (TAO 5's opset-12 export, 4 classes,
   random weights), the time export takes to write model.int8.onnx and model.fp16.onnx from the cache,
   against the calibration itself (entropy, TensorRT's default, on 8 images); and export's check of each
   deployable graph with NVIDIA's TensorRT-RTX (parse and build ahead of time, batches 1 to 8), against
   that export (calibration and writing the graph; target: the check <= 0.10x).
2. Against NVIDIA ModelOpt's ONNX PTQ (`python -m modelopt.onnx.quantization --quantize_mode int8
   --calibration_method max`, fp16 elsewhere, its defaults), on the same images, preprocessed the same way,
   for each model of the TAO family (tests/tao_family.py: fitted, TAO-shaped, opset 11-13) and a wider
   fitted one: mAP on the member's validation images (this project's evaluator, which equals TAO Deploy's),
   coverage cosine against fp32, Q/DQ nodes, and wall time (ours: minmax calibration + the deployable;
   ModelOpt: its whole run, its own calibration included), each run in onnxruntime on the CPU.

ModelOpt imports torch, so it is not in the lock: it runs in an environment of its own, named by
$MODELOPT_PYTHON (skipped, saying so, without it):

    python3 -m venv /tmp/modelopt-env
    /tmp/modelopt-env/bin/pip install "nvidia-modelopt[onnx]==0.47.0" onnxruntime   # pulls torch: ~3 GB
    MODELOPT_PYTHON=/tmp/modelopt-env/bin/python python bench/bench_deployable.py

About 5 minutes on a 2-core machine without ModelOpt; part of `make bench`, not of `make test`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from _common import ROOT, sample_images

sys.path.insert(0, str(ROOT / "tests"))

from tao_shapes import RESNET18_WIDTHS, build_resnet18_shape  # noqa: E402
from tao_shapes import TAO_INPUT_NAME, TAO_OUTPUT_NAMES, as_tao_export  # noqa: E402
from stages.detectnet_v2.evaluation import ModelResult, evaluate, evaluation_setup, validation_set  # noqa: E402
from stages.detectnet_v2.inference import OnnxRunner  # noqa: E402
from stages.detectnet_v2.preprocessing import iter_batches, list_images  # noqa: E402
from stages.formats.calibration_cache import write_cache  # noqa: E402
from stages.quantization.export_folder import write_for_export# noqa: E402
from stages.quantization.lint import lint, qdq_count, quantized_convolutions# noqa: E402
from stages.formats.onnx_model import TAO_OUTPUTS, export_model  # noqa: E402
from tensor_compare import cosine  # noqa: E402
from stages.quantization.calibrate import collect_ranges# noqa: E402
from stages.spec import Spec  # noqa: E402
from stages.quantization.builder_check import check# noqa: E402
from tao_family import FAMILY, Member, write_member  # noqa: E402

BATCH, CALIBRATION_IMAGES = 4, 16
WIDE = Member("tao5_opset12_640x480_wide", 12, ("car",), 640, 480, train_images=96, val_images=48,
              widths=(32, 64, 128, 128), calibration_method="minmax")


def cost_of_the_deployable() -> None:
    width, height = 960, 544
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_resnet18_shape(folder / "plain.onnx", width, height, 4, RESNET18_WIDTHS)
        onnx.save(as_tao_export(onnx.load(folder / "plain.onnx"), 12), folder / "tao5.onnx")
        start = time.perf_counter()
        export_model(folder / "tao5.onnx", folder / "model.onnx", TAO_INPUT_NAME,
                     dict(zip(TAO_OUTPUTS, TAO_OUTPUT_NAMES)), (3, height, width))
        exporting = time.perf_counter() - start
        images = list_images(sample_images(folder / "images", 8, size=(width, height)))
        start = time.perf_counter()
        maxima = {}
        amax = collect_ranges(folder / "model.onnx", iter_batches(images, BATCH, width, height), "entropy",
                              maxima=maxima, percentile=None, skip_zeros=True)
        write_cache(folder / "calibration.bin", amax, "entropy", 8601)
        calibration = time.perf_counter() - start
        times = {}
        for data_type in ("int8", "fp16"):
            start = time.perf_counter()
            write_for_export(folder, data_type, "fp16", maxima)
            times[data_type] = time.perf_counter() - start
        print(f"1. TAO 5-shaped ResNet-18 DetectNet_v2 at {width}x{height}: entropy calibration on 8 images "
              f"{calibration:.2f} s")
        for data_type, seconds in times.items():
            print(f"   writing model.{data_type}.onnx {seconds:.2f} s: {seconds / calibration:.3f}x the calibration")
        for data_type, deployable in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"), ("fp16", "model.fp16.onnx")):
            start = time.perf_counter()
            entry = check(folder / deployable, (3, height, width), 8)
            checking = time.perf_counter() - start
            if not entry["checked"]:
                print(f"   NVIDIA's builder check skipped: {entry['reason']}")
                break
            # fp32 export calibrates nothing: its work is the model's rewrite alone
            export = exporting + (calibration + times[data_type] if data_type in times else 0.0)
            print(f"   TensorRT-RTX check of {deployable}: {checking:.2f} s (plan {entry['plan_bytes'] >> 20} "
                  f"MiB) = {checking / export:.3f}x export's own work ({export:.2f} s; target <= 0.10)")


def modelopt_python() -> str | None:
    return os.environ.get("MODELOPT_PYTHON")


def versus_modelopt(member: Member) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "conf" / "experiment").mkdir(parents=True)
        write_member(project, member)
        data, models = project / "data" / member.name, project / "models" / member.name
        folder = project / "export"
        folder.mkdir()
        export_model(models / "model.onnx", folder / "model.onnx", TAO_INPUT_NAME,
                     dict(zip(TAO_OUTPUTS, TAO_OUTPUT_NAMES)), (3, member.height, member.width))
        images = list_images(data / "training" / "image_2")[:CALIBRATION_IMAGES]
        batches = [np.array(b) for b in iter_batches(images, BATCH, member.width, member.height)]
        np.save(folder / "calibration.npy", np.concatenate(batches))

        start = time.perf_counter()
        maxima = {}
        write_cache(folder / "calibration.bin", collect_ranges(folder / "model.onnx", iter(batches), "minmax",
                                                               maxima=maxima, percentile=None, skip_zeros=True), "minmax", 8601)
        write_for_export(folder, "int8", "fp16", maxima)
        ours_seconds = time.perf_counter() - start
        models_run = {"fp32": folder / "model.onnx", "ours": folder / "model.int8.onnx"}
        seconds = {"ours": ours_seconds}
        if modelopt_python():
            start = time.perf_counter()
            subprocess.run([modelopt_python(), "-m", "modelopt.onnx.quantization", "--onnx_path",
                            str(folder / "model.onnx"), "--quantize_mode", "int8", "--calibration_method", "max",
                            "--calibration_data_path", str(folder / "calibration.npy"), "--calibration_eps", "cpu",
                            "--output_path", str(folder / "modelopt.onnx"), "--log_level", "ERROR"],
                           check=True, capture_output=True, text=True)
            seconds["modelopt"] = time.perf_counter() - start
            models_run["modelopt"] = folder / "modelopt.onnx"
        runners = {name: OnnxRunner(path) for name, path in models_run.items()}
        setup = evaluation_setup(Spec.load(data / "spec.txt"), member.width, member.height)
        samples = validation_set(data / "validation" / "image_2", data / "validation" / "label_2")
        results = {name: ModelResult.of(e) for name, e in evaluate(runners, samples, setup, BATCH).items()}
        check = next(iter_batches([s.image for s in samples], BATCH, member.width, member.height))
        reference = runners["fp32"](check)[0]
        print(f"   {member.name} (widths {member.widths}, opset {member.opset}, {len(member.classes)} classes): "
              f"fp32 mAP {np.mean(list(results['fp32'].aps.values())):.4f}")
        for name in [n for n in models_run if n != "fp32"]:
            model = onnx.load(models_run[name])
            mean_ap = np.mean(list(results[name].aps.values()))
            print(f"     {name:9s} mAP {mean_ap:.4f}  coverage cosine {cosine(runners[name](check)[0], reference):.5f}  "
                  f"Q/DQ {qdq_count(model):4d}  quantized convolutions {len(quantized_convolutions(model)):3d}  "
                  f"{seconds[name]:6.2f} s  lint: {'clean' if not lint(model, 'int8') else lint(model, 'int8')[:2]}")


def main() -> None:
    np.seterr(all="ignore")
    cost_of_the_deployable()
    print("2. the deployable int8 ONNX against ModelOpt's ONNX PTQ (max calibration, the same "
          f"{CALIBRATION_IMAGES} images)" + ("" if modelopt_python() else
                                             ": $MODELOPT_PYTHON is not set, ModelOpt skipped"))
    for member in (*FAMILY, WIDE):
        versus_modelopt(member)


if __name__ == "__main__":
    main()
