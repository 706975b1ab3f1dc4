"""The calibration entry points: one pass of a model over real batches gives every calibration tensor's amax
(the ranges TensorRT's calibration cache scales, formats/calibration_cache.py), every method's at once for
auto, or the histograms themselves. Each pass owns its thread pool and its onnxruntime session, and lets both
go when it returns. No defaults that conf/ holds: the method, backend.percentile and backend.skip_zeros come
from the caller; `schedule` (activations.Schedule) only changes time and memory, never a range."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx

from ..compute.workers import worker_count
from ..formats.calibration_cache import AUTO, calibration_tensor_names
from .activations import AllTensors, Schedule, all_tensors_session, derivable_relus
from .histograms import HistogramCollector
from .ranges import Calibrator, load_kernels
from .thresholds import METHODS


def collect_ranges(model_path: str | Path, batches: Iterable[np.ndarray], method: str, *,
                   percentile: float | None, skip_zeros: bool, progress=None, maxima: dict[str, float] | None = None,
                   schedule: Schedule | None = None) -> dict[str, float]:
    """amax of every calibration tensor of the model over the batches (streamed), by `method` (one of
    METHODS); each tensor's largest magnitude goes into `maxima` where one is given. `percentile`:
    backend.percentile, for method percentile (None for the others)."""
    if method == AUTO:
        raise ValueError("calibration method auto has several answers: collect_candidates gives them")
    with _calibrated(model_path, batches, method, percentile, skip_zeros, progress, maxima, schedule) as (c, names):
        amax = c.amax()
    return {name: amax[name] for name in names if name in amax}


def collect_candidates(model_path: str | Path, batches: Iterable[np.ndarray], *, percentile: float,
                       skip_zeros: bool, progress=None, maxima: dict[str, float] | None = None,
                       schedule: Schedule | None = None) -> dict[str, dict[str, float]]:
    """{method: {tensor: amax}} for every method of METHODS, from one pass over the batches."""
    with _calibrated(model_path, batches, AUTO, percentile, skip_zeros, progress, maxima, schedule) as (c, names):
        candidates = c.candidates()
    return {method: {name: candidates[method][name] for name in names if name in candidates[method]}
            for method in METHODS}


def collect_histograms(model_path: str | Path, batches: Iterable[np.ndarray], *, skip_zeros: bool,
                       schedule: Schedule | None = None) -> dict[str, HistogramCollector]:
    """Each calibration tensor's histogram of |x| (and exact maximum) over the batches."""
    with _calibrated(model_path, batches, AUTO, None, skip_zeros, None, None, schedule) as (calibrator, _):
        return dict(calibrator.collectors)


@contextmanager
def _calibrated(model_path, batches, method, percentile, skip_zeros, progress, maxima,
                schedule: Schedule | None) -> Iterator[tuple[Calibrator, list[str]]]:
    """(the calibrator after one pass over the batches, the model's calibration tensors in order); its
    thread pool ends with the context."""
    schedule = schedule or Schedule(worker_count())
    with ThreadPoolExecutor(schedule.workers) as pool:
        calibrator = Calibrator(method, percentile, skip_zeros, pool, schedule.chunk_elements)
        if method != "minmax":
            pool.submit(load_kernels)  # while the session is built and the first batch runs
        model = onnx.load(str(model_path))
        names = calibration_tensor_names(model)
        relus = derivable_relus(model)  # collected from their inputs in the same pass
        run = AllTensors(all_tensors_session(model, relus, schedule.workers), model, names[0], schedule.halves_bytes)
        for batch in batches:
            values = run.run(batch)
            # reduced before onnxruntime writes the next batch into the same buffers
            calibrator.add({name: values[name] for name in names if name not in relus}, relus)
            if progress is not None:
                progress.update(1)
        if maxima is not None:
            maxima.update(calibrator.maxima())
        yield calibrator, names
