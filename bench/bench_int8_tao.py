"""INT8 against fp32 on a model shaped as TAO 5 exports one at NGC's size: a DetectNet_v2 graph of TAO's
ResNet-18 shape (random weights, 4 classes, as TrafficCamNet) at 960x544, in the form of TAO 5's tf2onnx
export (opset 12, `:0` names, batch norm as Mul/Add after each convolution). It goes the pipeline's way:
export (TAO's names), calibration on 8 images, the deployable int8 ONNX (upgraded to opset 19 for
per-channel weights and fp16 Q/DQ), then an fp32 and an int8 onnxruntime engine. Measured in this one run, on the same inputs:

  latency       int8 engine / fp32 engine, at batch 1 and at batch 4 (best of 3)
  agreement     coverage and bbox cosine of the int8 engine's outputs against fp32's (a diagnostic:
                the pipeline judges engines by mAP)

    python bench/bench_int8_tao.py [--widths 64,128,256,512] [--batch 4]

About 2 minutes on a 2-core machine; part of `make bench`, not of `make test`.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from _common import best_of, engine_request, sample_images

from tao_shapes import RESNET18_WIDTHS, build_resnet18_shape
from tao_shapes import TAO_INPUT_NAME, TAO_OUTPUT_NAMES, as_tao_export
from stages.detectnet_v2.inference import OnnxRunner
from stages.detectnet_v2.preprocessing import iter_batches, list_images
from stages.formats.calibration_cache import write_cache
from stages.quantization.export_folder import write_for_export
from stages.formats.onnx_model import TAO_OUTPUTS, export_model
from stages.open_backend.engines import build_engine
from tensor_compare import cosine
from stages.quantization.calibrate import collect_ranges

WIDTH, HEIGHT, CLASSES = 960, 544, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default=",".join(map(str, RESNET18_WIDTHS)))
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_resnet18_shape(folder / "plain.onnx", WIDTH, HEIGHT, CLASSES, widths)
        onnx.save(as_tao_export(onnx.load(folder / "plain.onnx"), 12), folder / "tao5.onnx")
        export_model(folder / "tao5.onnx", folder / "model.onnx", TAO_INPUT_NAME,
                     dict(zip(TAO_OUTPUTS, TAO_OUTPUT_NAMES)), (3, HEIGHT, WIDTH))
        images = list_images(sample_images(folder / "images", 8, size=(WIDTH, HEIGHT)))
        maxima = {}
        write_cache(folder / "calibration.bin", collect_ranges(folder / "model.onnx", iter_batches(images, 4, WIDTH,
                                                                                                  HEIGHT),
                                                               "minmax", maxima=maxima, percentile=None, skip_zeros=True), "minmax", 8601)
        write_for_export(folder, "int8", "fp16", maxima)
        engines = {}
        for data_type in ("fp32", "int8"):
            path = folder / f"{data_type}.engine.onnx"
            build_engine(engine_request(folder, data_type, path, max_batch_size=args.batch,
                                        opt_batch_size=args.batch))
            engines[data_type] = OnnxRunner(path)
        batch = next(iter_batches(images, args.batch, WIDTH, HEIGHT))
        print(f"TAO 5-shaped DetectNet_v2, ResNet-18 widths {widths}, {CLASSES} classes, {WIDTH}x{HEIGHT}, opset 12")
        for size in (1, args.batch):
            inputs = batch[:size]
            for engine in engines.values():
                engine(inputs)  # warm-up
            times = {name: best_of(3, lambda e=engine: e(inputs)) for name, engine in engines.items()}
            print(f"  batch {size}: fp32 {times['fp32'] * 1000:.0f} ms, int8 {times['int8'] * 1000:.0f} ms: "
                  f"int8 / fp32 = {times['int8'] / times['fp32']:.2f}")
        for name, got, want in zip(TAO_OUTPUTS, engines["int8"](batch), engines["fp32"](batch)):
            print(f"  {name}: int8 vs fp32 cosine {cosine(got, want):.5f} (diagnostic)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
