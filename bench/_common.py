"""Shared helpers for the benchmarks: sample data in a temp dir, timing, peak memory of a child."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test-support modules: TAO-shaped models, comparisons

from stages import bundled_sample  # noqa: E402


def sample_images(folder: Path, count: int, distinct: int = 32, size=bundled_sample.KITTI_SIZE, seed: int = 7) -> Path:
    """`count` KITTI-sized PNGs in folder/image_2 (the first `distinct` generated, the rest copies)."""
    bundled_sample.write_dataset(folder, {"training": min(count, distinct)}, seed, size)
    images = folder / "training" / "image_2"
    for index in range(distinct, count):
        shutil.copy(images / f"{index % distinct:06d}.png", images / f"{index:06d}.png")
    return images


def exported_sample_model(folder: Path, width: int, height: int) -> Path:
    """The sample DetectNet_v2 model, exported as the export stage does."""
    from stages.formats.onnx_model import export_model
    bundled_sample.build_model(folder / "sample.onnx", width, height)
    export_model(folder / "sample.onnx", folder / "model.onnx")
    return folder / "model.onnx"


def count_of(count: int, noun: str) -> str:
    """'1 core', '2 cores'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def best_of(repeats: int, fn) -> float:
    """Fastest wall time of `repeats` calls: the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def child_peak_rss_mib(code: str, *args: str) -> float:
    """Run `python -c code args...` in a fresh process and return its peak resident memory."""
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))})
    if result.returncode:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_kib"] / 1024


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child started by a
# big benchmark process would report the parent's peak.
PEAK_SNIPPET = """
import json, re
status = open("/proc/self/status").read()
print(json.dumps({"peak_kib": int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))}))
"""


def engine_request(export_dir: Path, data_type: str, output: Path, **changes):
    """The engine request the convert stage makes with conf/'s values, with `changes`."""
    import dataclasses

    from stages.open_backend.engine_request import EngineRequest
    from stages.pipeline import config
    request = EngineRequest.of(config.load([]).convert, export_dir, data_type, output, None)
    return dataclasses.replace(request, **changes)


def decoding(images: list[Path], batch: int, width: int, height: int):
    """A call that decodes the images in batches and drops them: the tensorfile's bound."""
    from stages.detectnet_v2.preprocessing import iter_batches

    def decode() -> None:
        for _ in iter_batches(images, batch, width, height):
            pass
    return decode


def tensorfile_writing(path: Path, images: list[Path], batch: int, width: int, height: int):
    """A call that writes the images' calibration tensorfile (uncompressed) as the stage does."""
    from stages.detectnet_v2.preprocessing import iter_batches
    from stages.formats.tensorfile import TensorFileWriter

    def write() -> None:
        with TensorFileWriter(path, None) as writer:
            for decoded in iter_batches(images, batch, width, height, reuse=True):
                writer.write(decoded)
    return write
