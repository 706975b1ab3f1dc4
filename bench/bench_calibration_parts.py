"""Where calibration's time goes, at the size users deploy (bench_full_size's model and images): each part
timed alone over the same 8 batches, on the cores this process may use.

  inference          plain fp32 onnxruntime (graph optimised, two outputs): the bound
  every tensor       the calibration session (every tensor bound as an output, written into our buffers),
                     no statistics: what binding every tensor costs; whole batches, and as calibration runs
                     them (a batch this large as two halves)
  statistics         every tensor's histogram of one batch, 8 times, no onnxruntime running beside it
  calibration        the whole (entropy, cache written)
  tensorfile         decoding alone, the tensorfile written (disk), written to /dev/shm; the disk's own
                     O_DIRECT write speed for the same bytes (dd)

    python bench/bench_calibration_parts.py            # on every allowed core
    taskset -c 0-3 python bench/bench_calibration_parts.py
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from _common import best_of, count_of, decoding, sample_images, tensorfile_writing

from tao_shapes import RESNET18_WIDTHS, build_resnet18_shape
from stages.compute.workers import allowed_cores
from stages.detectnet_v2.inference import OnnxRunner
from stages.detectnet_v2.preprocessing import list_images
from stages.formats.calibration_cache import calibration_tensor_names, write_cache
from stages.formats.onnx_model import export_model
from stages.formats.tensorfile import read_batches
from stages.compute.workers import worker_count
from stages.quantization.activations import HALVES_BYTES, AllTensors, all_tensors_session, derivable_relus
from stages.quantization.calibrate import collect_ranges
from stages.quantization.ranges import Calibrator, load_kernels

BATCH, BATCHES = 8, 8


def line(label: str, seconds: float, bound: float | None = None) -> None:
    ratio = f" = {seconds / bound:.2f}x inference" if bound else ""
    print(f"{label:<44} {seconds:7.2f} s{ratio}", flush=True)


def every_tensor(model_path: Path, batches: list[np.ndarray], bound: float, repeats: int) -> None:
    """The calibration session alone (made, then run whole and as calibration runs it), and the statistics
    alone, each against the bound."""
    model = onnx.load(str(model_path))
    names = calibration_tensor_names(model)
    relus = derivable_relus(model)
    threads = worker_count()
    started = time.perf_counter()
    session = all_tensors_session(model, relus, threads)
    whole = AllTensors(session, model, names[0], 1 << 62)
    runner = AllTensors(session, model, names[0], HALVES_BYTES)
    whole.bind_for(batches[0].shape)
    line("calibration session made, buffers bound", time.perf_counter() - started, bound)
    whole.run(batches[0])
    line("every tensor, whole batches", best_of(repeats, lambda: [whole.run(b) for b in batches]), bound)
    line("every tensor, as calibration runs them", best_of(repeats, lambda: [runner.run(b) for b in batches]), bound)
    values = whole.run(batches[0])
    tensors = {name: values[name] for name in names if name not in relus}

    def statistics():
        with ThreadPoolExecutor(threads) as pool:
            calibrator = Calibrator("entropy", None, True, pool)
            for _ in batches:
                calibrator.add(tensors, relus)
    load_kernels()
    statistics()
    line("statistics of 8 batches alone", best_of(repeats, statistics), bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--size", default="1248x384", help="model input WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs (default: %(default)s)")
    args = parser.parse_args()
    repeats = args.repeats
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_resnet18_shape(tmp / "resnet18.onnx", width, height, widths=RESNET18_WIDTHS)
        model_path = tmp / "model.onnx"
        export_model(tmp / "resnet18.onnx", model_path)
        images = list_images(sample_images(tmp / "data", BATCHES * BATCH))
        print(f"calibration's parts at {width}x{height}, {BATCHES} batches of {BATCH}, "
              f"on {count_of(allowed_cores(), 'core')}", flush=True)
        tensorfile = tmp / "cal.tensor"

        line("decoding alone", best_of(repeats, decoding(images, BATCH, width, height)))
        line("tensorfile written (disk)", best_of(repeats, tensorfile_writing(tensorfile, images, BATCH, width, height)))
        with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
            line("tensorfile written (/dev/shm)", best_of(repeats, tensorfile_writing(Path(shm) / "cal.tensor", images, BATCH, width,
                                                                                 height)))
        size = tensorfile.stat().st_size
        started = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", f"of={tmp / 'dd.bin'}", "bs=4M", f"count={size >> 22}",
                        "oflag=direct", "status=none"], check=True)
        line(f"dd, {size >> 20} MiB, O_DIRECT", time.perf_counter() - started)

        batches = list(read_batches(tensorfile, BATCHES))
        engine = OnnxRunner(model_path)
        engine(batches[0])
        bound = best_of(repeats, lambda: [engine(b) for b in batches])
        line("inference (the bound)", bound, bound)

        every_tensor(model_path, batches, bound, repeats)

        def calibrate():
            write_cache(tmp / "cal.bin", collect_ranges(model_path, iter(batches), "entropy", percentile=None, skip_zeros=True),
                        "entropy", 8601)
        line("calibration", best_of(repeats, calibrate), bound)


if __name__ == "__main__":
    main()
