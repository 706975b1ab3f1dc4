"""The pipeline's ratios at the size users deploy: a DetectNet_v2 graph of TAO's ResNet-18 shape
(widths 64-128-256-512, random weights, 3 classes) at KITTI's input, 1248x384, on 8 batches of 8
KITTI-sized images. Every figure is measured in this one run; each ratio is against a bound measured
beside it.

  inference     plain fp32 onnxruntime over the 8 batches (read from the tensorfile): the bound for
                calibration and for evaluation
  calibration   entropy calibration, cache written, / inference          (target <= 1.3x)
                its peak memory / one batch's activations, every tensor   (target <= 2x)
                its statistics (a later batch's histograms, every tensor) on 1 worker / on every
                allowed core, and / that batch's inference
  tensorfile    throughput / decoding alone (decode, resize, scale)       (target >= 0.85x)
                peak memory at 40 batches / at 4                          (target <= 1.2x)
  evaluation    the evaluate stage's evaluator (engine and fp32 on the validation and 64 calibration
                images, bootstrap interval, agreement) / the two models alone (target <= 1.3x)
                the work outside the engine (decoding, post-processing, AP; the engine's outputs
                replayed) on 1 worker / on every allowed core            (target on 2 cores >= 1.7x)

    python bench/bench_full_size.py [--size WIDTHxHEIGHT] [--widths 64,128,256,512] [--only evaluation]
    python bench/bench_full_size.py --cores 2,4,16     # the scaling table: one run per count, then the table

The cores are those the process may use (os.sched_getaffinity): `taskset -c 0-3 python bench/...` measures
4 of a machine's cores; -S backend.workers=N sets the same count for the stages. `--cores` runs this
benchmark once per count under `taskset -c 0-(N-1)` (Linux's util-linux) and prints every row for every
count in one table.

About 10 minutes on a 2-core machine; part of `make bench`, not of `make test`.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from _common import (PEAK_SNIPPET, best_of, child_peak_rss_mib, count_of, decoding, sample_images,
                     tensorfile_writing)

from stages import bundled_sample
from tao_shapes import RESNET18_WIDTHS, build_resnet18_shape
from stages.compute.workers import allowed_cores
from stages.detectnet_v2 import verdict
from stages.detectnet_v2.evaluation import ModelResult, Sample, evaluate, evaluation_setup, validation_set
from stages.detectnet_v2.inference import OnnxRunner
from stages.detectnet_v2.preprocessing import EVALUATION_RESAMPLE, iter_batches, list_images
from stages.formats.onnx_model import export_model
from stages.formats.tensorfile import read_batches
from stages.formats.calibration_cache import calibration_tensor_names, write_cache
from stages.quantization.activations import AllTensors, all_tensors_session, derivable_relus
from stages.quantization.calibrate import collect_ranges
from stages.quantization.ranges import Calibrator, load_kernels
from stages.spec import Spec

BATCH, BATCHES = 8, 8
AGREEMENT_IMAGES = 64  # conf/config.yaml's evaluate.agreement_images

CALIBRATE_SNIPPET = """
import sys
from stages.formats.tensorfile import read_batches
from stages.quantization.calibrate import collect_ranges
collect_ranges(sys.argv[1], read_batches(sys.argv[2], int(sys.argv[3])), "entropy", percentile=None, skip_zeros=True)
""" + PEAK_SNIPPET

WRITE_SNIPPET = """
import sys
from stages.detectnet_v2.preprocessing import iter_batches, list_images
from stages.formats.tensorfile import TensorFileWriter
batch, width, height = 8, int(sys.argv[4]), int(sys.argv[5])
images = list_images(sys.argv[1])[: int(sys.argv[2]) * batch]
with TensorFileWriter(sys.argv[3], None) as writer:
    for batch_array in iter_batches(images, batch, width, height, reuse=True):
        writer.write(batch_array)
""" + PEAK_SNIPPET


def activation_bytes(model_path: Path, batch: int) -> int:
    """Bytes of every tensor one batch makes (the input, each intermediate tensor, the outputs), as
    float32: the least a collector that sees all of a batch's tensors at once must hold."""
    model = onnx.load(str(model_path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    inferred = onnx.shape_inference.infer_shapes(model)
    weights = {init.name for init in model.graph.initializer}
    total = 0
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if value.name not in weights:
            total += 4 * int(np.prod([d.dim_value for d in value.type.tensor_type.shape.dim]))
    return total


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    print(f"  ({label}: {time.perf_counter() - start:.1f} s)", flush=True)
    return result


# The table's rows: (label, the line of a run's output that holds the figure, how to show it, target)
TABLE_ROWS = (
    ("plain fp32 inference, 8 batches", r"^inference: .*: ([\d.]+) s", "{:.2f} s", "(the bound)"),
    ("entropy calibration / inference", r"^calibration: .* = ([\d.]+)x inference", "{:.2f}x", "<= 1.3"),
    ("tensorfile / decoding alone", r"^tensorfile: .*throughput ([\d.]+)x decoding alone", "{:.2f}x", ">= 0.85"),
    ("evaluation / engine alone", r"^evaluation: .* = ([\d.]+)x \(target <= 1.3\)", "{:.2f}x", "<= 1.3"),
    ("statistics of one batch, 1 worker -> all", r"statistics of one batch .* ([\d.]+)x faster", "{:.2f}x", ""),
)


def scaling_table(counts: list[int], passed: list[str]) -> None:
    """This benchmark once per core count, on the first N cores (taskset), and every row in one table."""
    import re
    import shutil
    import subprocess

    available = sorted(allowed_cores_set())
    if shutil.which("taskset") is None:
        sys.exit("--cores needs taskset (util-linux)")
    figures = {}
    for count in counts:
        if count > len(available):
            sys.exit(f"--cores {count}: this process may use {len(available)} cores")
        cores = ",".join(map(str, available[:count]))
        print(f"--- on {count} cores ({cores})", flush=True)
        result = subprocess.run(["taskset", "-c", cores, sys.executable, __file__, *passed], text=True,
                                stdout=subprocess.PIPE, check=True)
        print(result.stdout, end="", flush=True)
        for label, pattern, _, _ in TABLE_ROWS:
            found = re.search(pattern, result.stdout, re.M)
            figures[label, count] = float(found[1]) if found else None
    header = ["figure", *(f"{n} cores" for n in counts), "target at every count"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for label, _, shown, target in TABLE_ROWS:
        cells = [shown.format(figures[label, n]) if figures[label, n] is not None else "" for n in counts]
        print(f"| {label} | " + " | ".join(cells) + f" | {target} |")


def allowed_cores_set() -> set[int]:
    import os
    return os.sched_getaffinity(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--size", default="1248x384", help="model input WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--widths", default=",".join(map(str, RESNET18_WIDTHS)),
                        help="channels of the four ResNet stages (default: %(default)s)")
    parser.add_argument("--only", choices=("tensorfile", "calibration", "evaluation"), action="append",
                        help="measure only these parts (repeatable; default: every part)")
    parser.add_argument("--cores", metavar="N,N,...",
                        help="run once per core count (taskset) and print the scaling table")
    args = parser.parse_args()
    if args.cores:
        scaling_table([int(n) for n in args.cores.split(",")], [a for a in sys.argv[1:] if not a.startswith("--cores")
                                                                  and a != args.cores])
        return
    parts = set(args.only or ("tensorfile", "calibration", "evaluation"))
    width, height = map(int, args.size.split("x"))
    widths = tuple(int(w) for w in args.widths.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_resnet18_shape(tmp / "resnet18.onnx", width, height, widths=widths)
        model = tmp / "model.onnx"
        export_model(tmp / "resnet18.onnx", model)
        folder = sample_images(tmp / "data", 40 * BATCH)
        images = list_images(folder)[: BATCHES * BATCH]
        print(f"full size: ResNet-18-shaped DetectNet_v2 (widths {'-'.join(map(str, widths))}, random weights, "
              f"{onnx.load(str(model)).ByteSize() / 2**20:.0f} MiB) at {width}x{height}, "
              f"{BATCHES} batches of {BATCH} KITTI-sized images, on {count_of(allowed_cores(), 'core')} "
              "(os.sched_getaffinity)",
              flush=True)
        tensorfile = tmp / "cal.tensor"
        if parts & {"tensorfile", "calibration"}:
            measure_tensorfile(tmp, images, folder, tensorfile, width, height, "tensorfile" in parts)
        if "calibration" in parts:
            measure_calibration(model, tensorfile, tmp)
        if "evaluation" in parts:
            measure_evaluation(model, tmp, width, height)


def measure_tensorfile(tmp: Path, images, folder: Path, tensorfile: Path, width: int, height: int,
                       report: bool) -> None:
    """Writes the calibration tensorfile (which calibration reads); with `report`, its figures."""
    if not report:
        tensorfile_writing(tensorfile, images, BATCH, width, height)()
        return
    decoding_s = best_of(3, decoding(images, BATCH, width, height))
    writing = best_of(3, tensorfile_writing(tensorfile, images, BATCH, width, height))
    peaks = {n: child_peak_rss_mib(WRITE_SNIPPET, str(folder), str(n), str(tmp / f"{n}.tensor"), str(width),
                                   str(height)) for n in (4, 40)}
    print(f"tensorfile: decoding alone {decoding_s:.2f} s, tensorfile written {writing:.2f} s: "
          f"throughput {decoding_s / writing:.2f}x decoding alone (target >= 0.85)")
    # 46 MiB a batch at this size: to tell the writer's cost from the disk's, the same into memory
    if Path("/dev/shm").is_dir():
        with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
            in_memory = best_of(3, tensorfile_writing(Path(shm) / "cal.tensor", images, BATCH, width, height))
        print(f"  written to /dev/shm (memory, no disk) {in_memory:.2f} s: "
              f"{decoding_s / in_memory:.2f}x decoding alone")
    print(f"  peak memory: 4 batches {peaks[4]:.0f} MiB, 40 batches {peaks[40]:.0f} MiB, "
          f"ratio {peaks[40] / peaks[4]:.2f} (target <= 1.2)", flush=True)


def measure_calibration(model: Path, tensorfile: Path, tmp: Path) -> None:
    """Entropy calibration against plain inference of the same batches, the bound; its peak memory."""
    # the product's session: one thread per allowed core. onnxruntime's default pins a thread to each
    # physical core of the host, out of `taskset`'s reach, and would measure the bound on every core
    engine = OnnxRunner(model)

    def inference():
        for batch in read_batches(tensorfile, BATCHES):
            engine(batch)

    engine(next(read_batches(tensorfile, 1)))  # warm-up
    bound = best_of(2, inference)
    print(f"inference: plain fp32 onnxruntime, {BATCHES} batches: {bound:.2f} s", flush=True)

    def calibrate():
        write_cache(tmp / "cal.bin", collect_ranges(model, read_batches(tensorfile, BATCHES), "entropy", percentile=None, skip_zeros=True),
                    "entropy", 8601)

    calibrating = best_of(2, calibrate)
    print(f"calibration: entropy, cache written: {calibrating:.2f} s = {calibrating / bound:.2f}x inference "
          "(target <= 1.3)", flush=True)
    activations = activation_bytes(model, BATCH) / 2**20
    peak = child_peak_rss_mib(CALIBRATE_SNIPPET, str(model), str(tensorfile), str(BATCHES))
    print(f"  peak memory {peak:.0f} MiB; one batch's activations, every tensor: {activations:.0f} MiB; "
          f"ratio {peak / activations:.2f} (target <= 2)", flush=True)
    measure_statistics(model, tensorfile, bound / BATCHES)


def measure_statistics(model_path: Path, tensorfile: Path, inference_per_batch: float) -> None:
    """One batch's statistics (every tensor's histogram) on 1 worker and on every allowed core: the part of
    calibration that should scale with the cores as onnxruntime does. The batch is a later one: the first
    fixed every histogram's grid, so it is binned in one pass, as every batch but the first is."""
    # the calibrator's own pieces, put together as quantization.calibrate does
    model = onnx.load(str(model_path))
    names = calibration_tensor_names(model)
    relus = derivable_relus(model)
    cores = allowed_cores()
    run_all = AllTensors(all_tensors_session(model, relus, cores), model, names[0], 1 << 62)
    first, later = read_batches(tensorfile, 2)
    with ThreadPoolExecutor(cores) as pool:
        primed = Calibrator("entropy", None, True, pool)
        values = run_all.run(first)
        primed.add({name: values[name] for name in names if name not in relus}, relus)
    values = run_all.run(later)
    tensors = {name: values[name] for name in names if name not in relus}

    def statistics(count: int):
        with ThreadPoolExecutor(count) as pool:  # the batch reduced, no threshold computed: as before #54
            calibrator = Calibrator("entropy", None, True, pool)
            calibrator.collectors = copy.deepcopy(primed.collectors)
            calibrator.add(tensors, relus)

    load_kernels()
    took = {count: best_of(3, lambda c=count: statistics(c)) for count in sorted({1, cores})}
    print(f"  statistics of one batch ({sum(v.size for v in tensors.values()) / 1e6:.0f} M values, "
          f"{len(tensors) + len(relus)} histograms): 1 worker {took[1]:.2f} s, "
          f"{count_of(cores, 'worker')} {took[cores]:.2f} s: "
          f"{took[1] / took[cores]:.2f}x faster; {took[cores] / inference_per_batch:.2f}x the batch's plain inference",
          flush=True)


class _Replay:
    """The engine's outputs of each batch, handed back at once: evaluation with the engine taken out."""

    def __init__(self, outputs: list):
        self.outputs, self.calls = outputs, 0

    def __call__(self, batch: np.ndarray):
        self.calls += 1
        return self.outputs[self.calls - 1]


def measure_evaluation(model: Path, tmp: Path, width: int, height: int) -> None:
    """The evaluate stage's evaluator (the engine and the fp32 reference over the validation images and over
    evaluate.agreement_images calibration images, then the bootstrap interval and the agreement) against the
    two models alone on the same decoded images; and the work around the engine on 1 worker and on every
    allowed core."""
    bundled_sample.write_dataset(tmp / "eval", {"validation": BATCHES * BATCH, "training": AGREEMENT_IMAGES},
                                 seed=11)
    bundled_sample.write_spec(tmp / "eval" / "spec.txt", width, height, BATCH)
    setup = evaluation_setup(Spec.load(tmp / "eval" / "spec.txt"), width, height)
    samples = validation_set(tmp / "eval/validation/image_2", tmp / "eval/validation/label_2")
    calibration = [Sample(image, None) for image in list_images(tmp / "eval/training/image_2")]
    models = {"engine": OnnxRunner(model), "reference": OnnxRunner(model)}
    decoded = [np.array(b) for b in iter_batches([s.image for s in samples + calibration], BATCH, width, height,
                                                    resample=EVALUATION_RESAMPLE)]
    models["engine"](decoded[0])  # warm-up
    engines_alone = best_of(2, lambda: [runner(b) for b in decoded for runner in models.values()])
    found = {}

    def stage_evaluator():
        results = evaluate(models, samples, setup, BATCH)
        unlabelled = evaluate(models, calibration, setup, BATCH)
        found.update({name: ModelResult(result.average_precisions(), result, unlabelled[name].detections)
                      for name, result in results.items()})
        return verdict.weigh(setup, found["engine"], found["reference"], {name: 1 for name in setup.classes})

    evaluating = best_of(2, stage_evaluator)
    started = time.perf_counter()
    evidence, _ = verdict.weigh(setup, found["engine"], found["reference"], {name: 1 for name in setup.classes})
    weighing = time.perf_counter() - started
    detections = sum(len(d[name].confidences) for d in found["engine"].evaluation.detections + found["engine"].calibration
                     for name in setup.classes)
    print(f"evaluation: {len(samples)} validation and {len(calibration)} calibration images, {detections} detections "
          f"(random heads), engine and fp32 reference: {evaluating:.2f} s vs the two alone on decoded images "
          f"{engines_alone:.2f} s = {evaluating / engines_alone:.2f}x (target <= 1.3); of it the bootstrap "
          f"interval and the agreement {weighing:.2f} s (interval {evidence.interval})",
          flush=True)
    engine = models["engine"]
    validation_decoded = decoded[:BATCHES]
    outputs = [engine(b) for b in validation_decoded]
    cores = allowed_cores()
    outside = {workers: best_of(3, lambda w=workers: evaluate({"engine": _Replay(outputs)}, samples, setup, BATCH,
                                                               workers=w))
               for workers in sorted({1, cores})}
    print(f"  the work outside the engine (decoding, post-processing, AP; the engine's outputs replayed): "
          f"1 worker {outside[1]:.2f} s, {count_of(cores, 'worker')} {outside[cores]:.2f} s: "
          f"{outside[1] / outside[cores]:.2f}x "
          f"faster (target on 2 cores >= 1.7x)")


if __name__ == "__main__":
    main()
