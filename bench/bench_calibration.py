"""Calibration-cache computation vs plain fp32 onnxruntime inference over the same batches, vs
onnxruntime's own entropy calibrator on the same data, and peak memory at 4 vs 40 batches.

    python bench/bench_calibration.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from _common import exported_sample_model, PEAK_SNIPPET, best_of, child_peak_rss_mib, sample_images

from stages.detectnet_v2.inference import OnnxRunner
from stages.detectnet_v2.preprocessing import iter_batches, list_images
from stages.formats.calibration_cache import write_cache
from stages.formats.tensorfile import TensorFileWriter, read_batches
from stages.quantization.calibrate import collect_ranges
from stages.pipeline import config

WIDTH, HEIGHT, BATCH, BATCHES = 624, 192, 8, 10
PERCENTILE = config.load([]).backend.percentile  # conf/'s

CALIBRATE_SNIPPET = """
import sys
from stages.formats.tensorfile import read_batches
from stages.quantization.calibrate import collect_ranges
collect_ranges(sys.argv[1], read_batches(sys.argv[2], int(sys.argv[3])), "entropy", percentile=None, skip_zeros=True)
""" + PEAK_SNIPPET


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = exported_sample_model(tmp, WIDTH, HEIGHT)
        tensorfile = tmp / "cal.tensor"
        images = list_images(sample_images(tmp / "data", 40 * BATCH))
        with TensorFileWriter(tensorfile, None) as writer:
            for batch in iter_batches(images, BATCH, WIDTH, HEIGHT):
                writer.write(batch)

        engine = OnnxRunner(model)  # one thread per allowed core, as calibration's session has

        def inference():
            for batch in read_batches(tensorfile, BATCHES):
                engine(batch)

        def ours(method):
            def calibrate():
                write_cache(tmp / "cal.bin", collect_ranges(model, read_batches(tensorfile, BATCHES), method,
                                                                  percentile=PERCENTILE, skip_zeros=True), method, 8601)
            return calibrate

        def onnxruntime_entropy():
            from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.batches = read_batches(tensorfile, BATCHES)

                def get_next(self):
                    batch = next(self.batches, None)
                    return None if batch is None else {"input_1": batch}

            calibrator = create_calibrator(model, augmented_model_path=str(tmp / "augmented.onnx"),
                                           calibrate_method=CalibrationMethod.Entropy)
            calibrator.collect_data(Reader())
            calibrator.compute_data()

        inference()  # warm-up
        base = best_of(3, inference)
        print(f"calibration: {BATCHES} batches of {BATCH}x3x{HEIGHT}x{WIDTH}, sample DetectNet_v2 model")
        print(f"  plain fp32 onnxruntime inference:         {base:.3f} s")
        for method in ("entropy", "minmax", "percentile"):
            seconds = best_of(3, ours(method))
            print(f"  ours, {method:10s} (cache written):     {seconds:.3f} s = {seconds / base:.2f} x inference"
                  + ("  (target <= 2.5)" if method == "entropy" else ""))
        peer = best_of(1, onnxruntime_entropy)
        entropy = best_of(1, ours("entropy"))
        print(f"  onnxruntime's entropy calibrator:         {peer:.3f} s = {peer / base:.2f} x inference; "
              f"ours is {peer / entropy:.2f} x faster")

        peaks = {n: child_peak_rss_mib(CALIBRATE_SNIPPET, str(model), str(tensorfile), str(n)) for n in (4, 40)}
        print(f"  peak memory: 4 batches {peaks[4]:.0f} MiB, 40 batches {peaks[40]:.0f} MiB, "
              f"ratio {peaks[40] / peaks[4]:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
