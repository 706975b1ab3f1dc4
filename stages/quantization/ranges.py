"""Every tensor's range over batches: a batch of tensors reduced on a thread pool the caller owns (numba and
numpy release the GIL), each tensor into its collector (histograms.py), and each method's amax at the end
(thresholds.py). No onnxruntime: the batches come from wherever the caller runs the model."""
from __future__ import annotations

from concurrent.futures import Executor
from typing import Mapping

import numpy as np

from ..formats.calibration_cache import AUTO
from . import histograms, thresholds
from .histograms import HistogramCollector, MaxCollector, chunks, largest_magnitude
from .thresholds import METHODS, amax_of


def load_kernels() -> None:
    """Load numba's kernels (compiled, or read from numba's cache, on first use): on a worker, while the
    caller builds its session and runs the first batch, they are out of the way of the first reduction."""
    histograms.load_kernel()
    thresholds.load_kernel()


class Calibrator:
    """Collects every tensor's range over batches and computes amax per tensor. `add` reduces a batch on
    `pool`'s threads, in pieces of `chunk_elements`, and returns when it is done. Method `auto` keeps
    histograms and exact maxima, so that candidates() gives every method's amax. No defaults that conf/
    holds: the method, backend.percentile (only where a percentile is computed) and backend.skip_zeros come
    from the caller."""

    def __init__(self, method: str, percentile: float | None, skip_zeros: bool, pool: Executor,
                 chunk_elements: int = histograms.CHUNK_ELEMENTS):
        if method not in (*METHODS, AUTO):
            raise ValueError(f"calibration method {method!r} is not one of {', '.join(METHODS)} or {AUTO}")
        if method == "percentile" and percentile is None:
            raise ValueError("calibration method percentile needs the percentile (backend.percentile)")
        self.method, self.percentile, self.skip_zeros = method, percentile, skip_zeros
        self.pool, self.chunk_elements = pool, chunk_elements
        self.collectors: dict[str, MaxCollector | HistogramCollector] = {}

    def add(self, tensors: Mapping[str, np.ndarray], relus: Mapping[str, str] | None = None) -> None:
        """Reduce one batch. `relus` maps a ReLU's output name to its input's: that tensor is
        collected from the input (onnxruntime need not hand it over)."""
        relus = relus or {}
        for name in [*tensors, *relus]:
            if name not in self.collectors:
                self.collectors[name] = (MaxCollector() if self.method == "minmax"
                                         else HistogramCollector(self.skip_zeros))
        work = [(self.collectors[name], values, False) for name, values in tensors.items()]
        work += [(self.collectors[relu], tensors[source], True) for relu, source in relus.items()]
        self._reduce(work)

    def _reduce(self, work: list[tuple[MaxCollector | HistogramCollector, np.ndarray, bool]]) -> None:
        """Every tensor of one batch, in pieces over the pool: first the largest magnitudes (which set
        each histogram's grid), then the histograms."""
        pieces = [(index, piece) for index, (_, values, _) in enumerate(work)
                  for piece in chunks(values, self.chunk_elements)]
        tops = [0.0] * len(work)
        for (index, _), top in zip(pieces, self.pool.map(lambda item: largest_magnitude(item[1], work[item[0]][2]),
                                                         pieces)):
            tops[index] = max(tops[index], top)
        binning = set()
        for index, (collector, values, _) in enumerate(work):
            if not values.size:
                continue
            if isinstance(collector, MaxCollector):
                collector.observe(tops[index])
            elif collector.observe(tops[index], values.size):
                binning.add(index)
        to_bin = [(index, piece) for index, piece in pieces if index in binning]
        for (index, _), binned in zip(to_bin, self.pool.map(
                lambda item: work[item[0]][0].binned(item[1], work[item[0]][2]), to_bin)):
            work[index][0].merge(*binned)

    def amax(self) -> dict[str, float]:
        """{tensor: amax} by the calibrator's method."""
        if self.method == AUTO:
            raise ValueError("calibration method auto has several answers: candidates() gives them")
        return dict(zip(self.collectors, self.pool.map(lambda c: amax_of(c, self.method, self.percentile),
                                                        self.collectors.values())))

    def maxima(self) -> dict[str, float]:
        """Each tensor's largest magnitude seen: what decides whether it fits fp16."""
        return {name: c.compute() if isinstance(c, MaxCollector) else c.top for name, c in self.collectors.items()}

    def candidates(self) -> dict[str, dict[str, float]]:
        """{method: {tensor: amax}} for each of METHODS, from the one pass (method `auto`)."""
        if self.method != AUTO:
            raise ValueError(f"a calibrator of method {self.method} has one answer: amax() gives it")
        if self.percentile is None:
            raise ValueError("the percentile candidate needs the percentile (backend.percentile)")
        collectors = list(self.collectors.values())
        return {method: dict(zip(self.collectors, self.pool.map(
                    lambda c, m=method: amax_of(c, m, self.percentile), collectors)))
                for method in METHODS}
