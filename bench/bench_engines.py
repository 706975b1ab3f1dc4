"""fp32, fp16 and int8 engines of the sample side by side: agreement with the fp32 model and
latency, all measured in one run (the INT8 target is cosine >= 0.99 on both outputs).

    python bench/bench_engines.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from _common import engine_request, exported_sample_model, sample_images

from stages.detectnet_v2.inference import OnnxRunner
from stages.detectnet_v2.preprocessing import iter_batches, list_images
from stages.formats.calibration_cache import write_cache
from stages.quantization.export_folder import write_for_export
from stages.open_backend.engines import build_engine, verify
from stages.quantization.calibrate import collect_ranges

WIDTH, HEIGHT, BATCH = 624, 192, 8


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = exported_sample_model(tmp, WIDTH, HEIGHT)
        train = list_images(sample_images(tmp / "train", 10 * BATCH, distinct=80, seed=7))
        val = list_images(sample_images(tmp / "val", 16, distinct=16, seed=99))
        maxima = {}
        write_cache(tmp / "calibration.bin", collect_ranges(model, iter_batches(train, BATCH, WIDTH, HEIGHT), "entropy",
                                                            maxima=maxima, percentile=None, skip_zeros=True), "entropy", 8601)
        reference = OnnxRunner(model)
        print(f"engines of the sample ({WIDTH}x{HEIGHT}), verified on 16 validation images")
        print(f"  {'precision':9s} {'cos(cov)':>9s} {'cos(bbox)':>9s} {'maxerr(bbox)':>12s} "
              f"{'ms@1':>7s} {'ms@8':>7s} {'size KiB':>9s}")
        for data_type in ("fp32", "fp16", "int8"):
            engine = tmp / f"{data_type}.engine.onnx"
            write_for_export(tmp, data_type, "fp16", maxima)  # the deployable ONNX, as export writes it
            build_engine(engine_request(tmp, data_type, engine))
            m = verify(OnnxRunner(engine), reference, iter_batches(val, BATCH, WIDTH, HEIGHT), BATCH,
                       data_type, engine, "onnxruntime")
            cov, bbox = m["outputs"]["output_cov/Sigmoid"], m["outputs"]["output_bbox/BiasAdd"]
            print(f"  {data_type:9s} {cov['cosine_similarity']:9.6f} {bbox['cosine_similarity']:9.6f} "
                  f"{bbox['max_abs_error']:12.6f} {m['latency_ms']['batch_1']:7.2f} "
                  f"{m['latency_ms']['max_batch']:7.2f} {m['engine_size_bytes'] / 1024:9.0f}")


if __name__ == "__main__":
    main()
