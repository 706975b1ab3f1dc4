"""numba's compiled kernels, compiled once per test session instead of once per test project.

The stages' kernels (`@numba.njit(cache=True)`: calibration's histograms, DBSCAN's neighbour sweep) are
cached next to their source, in stages/**/__pycache__, and each test project is a copy of the checkout:
left alone, every project compiles them again (about 6 s of each small `dvc repro`). numba reuses a
cache whose index matches its source file's modification time and size, which copy2 keeps; so this
checkout's kernels are compiled once, by running the real code paths on tiny inputs, and copied into
every project with its files. On another machine numba finds the CPU differs and compiles anew: the
cache is an optimisation, never a result."""
from __future__ import annotations

import contextlib
import fcntl
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("*.nbi", "*.nbc")


@contextlib.contextmanager
def _checkout_lock(mode: int):
    """Each pytest-xdist worker compiles in this checkout: one writes its caches at a time, and no worker
    copies them while another writes (numba replaces each file whole, but an index and its data files
    are separate files)."""
    path = ROOT / "stages" / "__pycache__" / "numba_kernels.lock"  # ignored by git and by DVC
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.cache
def compiled() -> list[Path]:
    """Compile this checkout's kernels (once per session) and list their cache files."""
    from stages import bundled_sample
    from stages.detectnet_v2.postprocessing import Clustering, cluster
    from stages.quantization.calibrate import collect_ranges

    with _checkout_lock(fcntl.LOCK_EX), tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.onnx"
        bundled_sample.build_model(model, 32, 32, base_width=2, seed=0, batch="N")
        batch = np.random.default_rng(0).random((2, 3, 32, 32), np.float32)
        for method in ("entropy", "percentile"):
            collect_ranges(model, [batch, batch], method, percentile=99.99, skip_zeros=True)
        boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float64)
        cluster(boxes, np.array([0.9, 0.8, 0.7]), Clustering(dbscan_eps=0.5, dbscan_min_samples=0.1))
    return [p for pattern in PATTERNS for p in (ROOT / "stages").rglob(f"__pycache__/{pattern}")]


def copy_into(project: Path) -> None:
    """Give a copy of this checkout's stages/ the compiled kernels (its sources keep their times)."""
    caches = compiled()
    with _checkout_lock(fcntl.LOCK_SH):
        for cache in caches:
            target = project / cache.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cache, target)
