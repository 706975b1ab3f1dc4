"""Every tensor's range over batches: a batch of tensors reduced on a thread pool the caller owns (numba and
numpy release the GIL), each tensor into its collector (histograms.py), and each method's amax at the end
(thresholds.py). No onnxruntime: the batches come from wherever the caller runs the model."""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..formats.calibration_cache import AUTO
from . import histograms, thresholds
from .histograms import GridPass, HistogramCollector, MaxCollector, chunks, largest, largest_magnitude
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
        collected from the input (onnxruntime need not hand it over), in the same pass over it."""
        relus = relus or {}
        for name in [*tensors, *relus]:
            if name not in self.collectors:
                self.collectors[name] = (MaxCollector() if self.method == "minmax"
                                         else HistogramCollector(self.skip_zeros))
        partner: dict[str, str] = {}  # a tensor's ReLU, collected in the same pass over it
        first: list[_Reduction] = []  # those that find their largest magnitude before they bin
        for relu, source in relus.items():
            if source in partner:  # a second ReLU of the same tensor: a pass of its own
                first.append(_Reduction(relu, self.collectors[relu], tensors[source], True))
            else:
                partner[source] = relu
        on_grids: list[GridPass] = []
        for name, values in tensors.items():
            collector, relu = self.collectors[name], partner.get(name)
            if isinstance(collector, HistogramCollector) and collector.on_grid:
                # a ReLU's grid is fixed only once its input's is (a positive value is a non-zero one)
                together = relu is not None and self.collectors[relu].on_grid
                on_grids.append(GridPass(name, values, collector, self.collectors[relu] if together else None))
                if relu is not None and not together:
                    first.append(_Reduction(relu, self.collectors[relu], values, True))
            else:
                first.append(_Reduction(name, collector, values, False))
                if relu is not None:
                    first.append(_Reduction(relu, self.collectors[relu], values, True))
        self._reduce(on_grids, first)

    def _reduce(self, on_grids: list[GridPass], first: list[_Reduction]) -> None:
        """Every tensor of one batch, in pieces over the pool. A histogram whose grid is fixed (every batch
        but a tensor's first) is binned in one pass that also finds the batch's largest magnitude, and
        binned again only if the batch reaches past the grid, once the grid has widened to reach it. The
        others first find the largest magnitude (which fixes or widens the grid; all a maximum needs), then
        bin. Either way each histogram is the one binning the batch on its widened grid gives, to the count."""
        pieces = [(grid_pass, piece, False) for grid_pass in on_grids
                  for piece in chunks(grid_pass.values, self.chunk_elements)]
        pieces += [(reduction, piece, reduction.relu) for reduction in first
                   for piece in chunks(reduction.values, self.chunk_elements)]
        for (owner, _, _), found in zip(pieces, self.pool.map(_first_pass, pieces)):
            owner.take(found)
        for name, top in [*((g.name, g.top) for g in on_grids), *((r.name, r.top) for r in first)]:
            if not np.isfinite(top):
                raise ValueError(f"calibration tensor {name} holds {'NaN' if np.isnan(top) else 'infinite'} "
                                 "values: the model's activations overflow float32 on these images, or an "
                                 "image decoded to NaN")
        again = []  # (collector, the tensor, relu): binned once the grids are fixed or widened
        for grid_pass in on_grids:
            again += grid_pass.settle()
        for reduction in first:
            if not reduction.values.size:
                continue
            if isinstance(reduction.collector, MaxCollector):
                reduction.collector.observe(reduction.top)
            elif reduction.collector.observe(reduction.top, reduction.values.size):
                again.append((reduction.collector, reduction.values, reduction.relu))
        to_bin = [(collector, piece, relu) for collector, values, relu in again
                  for piece in chunks(values, self.chunk_elements)]
        for (collector, _, _), binned in zip(to_bin, self.pool.map(lambda item: item[0].binned(item[1], item[2]),
                                                                   to_bin)):
            collector.merge(*binned)

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


@dataclass
class _Reduction:
    """A tensor whose largest magnitude is found before it is binned (its histogram's grid is not fixed
    yet, or it is a maximum alone): `top` gathers its pieces'."""
    name: str
    collector: MaxCollector | HistogramCollector
    values: np.ndarray
    relu: bool
    top: float = 0.0

    def take(self, top: float) -> None:
        self.top = largest(self.top, top)


def _first_pass(item: tuple[GridPass | _Reduction, np.ndarray, bool]):
    """A piece's first pass: binned on its grids (a GridPass's piece), or its largest magnitude."""
    owner, piece, relu = item
    return owner.bin(piece) if isinstance(owner, GridPass) else largest_magnitude(piece, relu)
