"""Range statistics of one tensor, streamed over batches: the running maximum (minmax), and the histogram of
|x| that entropy and percentile calibration read (thresholds.py). Pure numpy and numba: no onnxruntime.

A batch is reduced and dropped, so memory does not grow with the number of batches. A large tensor is
reduced in pieces (chunks()), each on any free thread (ranges.py): the histogram's counts are integers,
so the pieces' sum is the same histogram to the last count, whatever the number of pieces or threads.

Once a histogram's grid is fixed (by its tensor's first batch with a non-zero value), a batch is binned in
the pass that finds its largest magnitude, with a ReLU of the tensor in the same pass (GridPass): one read
of the tensor where there were three. Only a batch that reaches past the grid is binned again, once the
grid has widened; so the histogram is the same to the count as when the largest magnitude comes first.
bench/README.md, "Measurements behind the code", has what the one pass saves."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

NUM_BINS = 2048

# A large tensor's pieces: this many elements (8 MiB). With one task per tensor, the largest tensors (234 MiB
# at TAO's ResNet-18 on 1248x384) leave every other core idle at the end of each batch.
CHUNK_ELEMENTS = 1 << 21


def _flat(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).ravel()


def chunks(values: np.ndarray, size: int) -> list[np.ndarray]:
    """The tensor as contiguous float32 pieces of at most `size` elements (views, no copy)."""
    flat = _flat(values)
    return [flat[start:start + size] for start in range(0, flat.size, size)]


def largest_magnitude(values: np.ndarray, relu: bool = False) -> float:
    """max |x|, or max(max(x), 0) with relu, of a non-empty array."""
    return max(float(values.max()), 0.0 if relu else -float(values.min()))


class MaxCollector:
    def __init__(self):
        self.amax = 0.0

    def observe(self, top: float) -> None:
        self.amax = max(self.amax, top)

    def compute(self) -> float:
        return self.amax


@numba.njit(cache=True, nogil=True)
def _bin(values: np.ndarray, inv: np.float32, hist: np.ndarray, relu: bool) -> int:
    """hist[int(|v| * inv)] += 1 for every non-zero v (v -> max(v, 0) with relu), in one pass without
    temporaries (numpy needs five passes and two arrays as large as the tensor); returns how many values
    were zero. Zeros are counted, not binned: half of a ReLU's values are, and incrementing one counter
    in memory over and over makes each increment wait for the last (bench/README.md)."""
    zeros = 0
    for v in values:
        a = (v if v > 0 else np.float32(0)) if relu else abs(v)
        if a == 0:
            zeros += 1
        else:
            hist[np.intp(a * inv)] += 1
    return zeros


@numba.njit(cache=True, nogil=True)
def _bin_on_grids(values: np.ndarray, inv: np.float32, hist: np.ndarray, relu_inv: np.float32,
                  relu_hist: np.ndarray, with_relu: bool) -> tuple:
    """One pass over a piece, on grids already fixed: |v| into hist and, with_relu, max(v, 0) into relu_hist
    (a ReLU's tensor from its input's), every non-zero value whose bin the grid has. Returns, for each of the
    two, (zeros, largest value, values past the last bin): a piece with values past the last bin is binned
    again by _bin once the grid has widened. A NaN or an infinity counts as past the last bin and makes the
    largest value NaN or infinite, so that the grid's widening refuses it as it refuses any batch's."""
    n, relu_n = len(hist), len(relu_hist)
    zeros, top, past = 0, np.float32(0), 0
    relu_zeros, relu_top, relu_past = 0, np.float32(0), 0
    for v in values:
        a = abs(v)
        if a > top:
            top = a
        if a == 0:
            zeros += 1
        else:
            index = np.intp(a * inv)
            if 0 <= index < n:
                hist[index] += 1
            else:
                past += 1
                if a != a:  # NaN: no comparison keeps it as the largest value
                    top = a
        if with_relu:
            if v > 0:
                if v > relu_top:
                    relu_top = v
                index = np.intp(v * relu_inv)
                if 0 <= index < relu_n:
                    relu_hist[index] += 1
                else:
                    relu_past += 1
            else:
                relu_zeros += 1  # NaN among them: counted on the |v| side
    return zeros, top, past, relu_zeros, relu_top, relu_past


def load_kernel() -> None:
    """Load the binning kernels (numba compiles them, or reads them from its cache, on the first call)."""
    _bin(np.zeros(1, np.float32), np.float32(1), np.zeros(1, np.int64), False)
    _bin_on_grids(np.zeros(1, np.float32), np.float32(1), np.zeros(1, np.int64), np.float32(1),
                  np.zeros(1, np.int64), True)


class HistogramCollector:
    """Histogram of |x| with a fixed bin width set by the first non-zero batch (max / 2048). Later
    batches that reach further add bins of the same width; past 2 x 2048 bins, neighbouring bins are
    merged in pairs, which keeps the histogram exact on a coarser grid. Exact zeros (ReLU's) are
    left out with skip_zeros, as pytorch-quantization's option of that name does: otherwise the
    zero spike dominates the KL search and clips most of the range.

    A batch is added in three steps, so that its pieces can be binned on several threads: observe()
    the batch's largest magnitude (which fixes or widens the grid), binned() each piece into a
    histogram of its own, merge() those. add() does the three for one array; GridPass bins first, on a
    fixed grid, and observes after."""

    def __init__(self, skip_zeros: bool, num_bins: int = NUM_BINS):
        self.num_bins, self.skip_zeros = num_bins, skip_zeros
        self.width: float | None = None
        self.hist = np.zeros(0, dtype=np.int64)
        self.zeros = 0  # elements seen before any non-zero value fixed the grid
        self.top = 0.0  # the largest magnitude seen: minmax's amax, from the same pass

    def add(self, values: np.ndarray, relu: bool = False) -> None:
        """Add |values|, or max(values, 0) with relu: a ReLU's tensor from its input's."""
        flat = _flat(values)
        if flat.size and self.observe(largest_magnitude(flat, relu), flat.size):
            self.merge(*self.binned(flat, relu))

    def observe(self, top: float, size: int) -> bool:
        """Take in a batch of `size` values whose largest magnitude is `top`: fix the grid, or widen it
        to reach top. False when the batch is all zeros, which leaves nothing to bin."""
        self.top = max(self.top, top)
        if top == 0.0:
            if not self.skip_zeros:
                if self.width is None:
                    self.zeros += size
                else:
                    self.hist[0] += size
            return False
        if self.width is None:
            self.width = top / self.num_bins
            self.hist = np.zeros(self.num_bins, dtype=np.int64)
            self.hist[0] += self.zeros
        needed = int(np.float32(top) * np.float32(1.0 / self.width)) + 1
        if needed > len(self.hist):
            self.hist = np.concatenate([self.hist, np.zeros(needed - len(self.hist), np.int64)])
            while len(self.hist) >= 2 * self.num_bins:
                if len(self.hist) % 2:
                    self.hist = np.append(self.hist, 0)
                self.hist = self.hist.reshape(-1, 2).sum(axis=1)
                self.width *= 2
        return True

    @property
    def on_grid(self) -> bool:
        """Whether a non-zero value has fixed the grid: a batch can then be binned before its largest
        magnitude is known (ranges.py bins it in one pass, and again only where it reaches past the grid)."""
        return self.width is not None

    def inverse_width(self) -> np.float32:
        # float32 products of it, like `needed` above, so no index of an observed batch passes the last bin
        return np.float32(1.0 / self.width)

    def binned(self, piece: np.ndarray, relu: bool) -> tuple[np.ndarray, int]:
        """A piece of the observed batch binned on the current grid (zeros left out), and how many of its
        values were zero."""
        hist = np.zeros(len(self.hist), np.int64)
        return hist, _bin(piece, self.inverse_width(), hist, relu)

    def merge(self, hist: np.ndarray, zeros: int) -> None:
        self.hist += hist
        if not self.skip_zeros:
            self.hist[0] += zeros

    def edges(self) -> np.ndarray:
        return np.arange(len(self.hist) + 1) * (self.width or 0.0)


def clipped_share(collector: HistogramCollector, amax: float) -> float:
    """The share of the collected values above amax (counting only whole bins above it: a lower bound)."""
    total = int(collector.hist.sum())
    if not total or not collector.width:
        return 0.0
    return float(collector.hist[int(amax / collector.width) + 1:].sum() / total)


def largest(current: float, new: float) -> float:
    """The larger of two largest magnitudes; a NaN, once either is one, stays (no comparison keeps it)."""
    return current if current != current or new <= current else float(new)


@dataclass
class BatchCounts:
    """A histogram's side of a GridPass, summed over the pieces: zero values, the largest value, values past
    the grid's last bin."""
    zeros: int = 0
    top: float = 0.0
    past: int = 0

    def add(self, zeros: int, top: float, past: int) -> None:
        self.zeros, self.top, self.past = self.zeros + int(zeros), largest(self.top, top), self.past + int(past)


class GridPass:
    """One pass over a tensor whose histogram has its grid, binning it, and a ReLU of it whose histogram
    has one too, together: each piece binned on any thread (bin), its counts taken in as they come (take),
    and the batch taken into the histograms once every piece is done (settle)."""

    def __init__(self, name: str, values: np.ndarray, collector: HistogramCollector,
                 relu: HistogramCollector | None):
        self.name, self.values, self.collector, self.relu = name, values, collector, relu
        self.hists: list[tuple[np.ndarray, np.ndarray]] = []
        self.counts, self.relu_counts = BatchCounts(), BatchCounts()

    @property
    def top(self) -> float:
        """The tensor's largest magnitude in the batch (NaN or infinite where a value is)."""
        return self.counts.top

    def bin(self, piece: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        hist = np.zeros(len(self.collector.hist), np.int64)
        relu_hist = np.zeros(len(self.relu.hist) if self.relu else 0, np.int64)
        counts = _bin_on_grids(piece, self.collector.inverse_width(), hist,
                               self.relu.inverse_width() if self.relu else np.float32(0), relu_hist,
                               self.relu is not None)
        return hist, relu_hist, counts

    def take(self, binned: tuple[np.ndarray, np.ndarray, tuple]) -> None:
        """A piece's bin(), in any order."""
        hist, relu_hist, counts = binned
        self.hists.append((hist, relu_hist))
        self.counts.add(*counts[:3])
        self.relu_counts.add(*counts[3:])

    def settle(self) -> list[tuple[HistogramCollector, np.ndarray, bool]]:
        """Each histogram takes in the batch from its pieces' counts; where the batch reached past the grid,
        the grid widens and (collector, tensor, relu) is returned, to be binned again on it."""
        again = []
        for collector, counts, side, relu in ((self.collector, self.counts, 0, False),
                                              (self.relu, self.relu_counts, 1, True)):
            if collector is None or not self.values.size:
                continue
            if not collector.observe(counts.top, self.values.size):
                continue  # all zeros: observe() counted them
            if counts.past:
                again.append((collector, self.values, relu))
            else:
                collector.merge(sum(hists[side] for hists in self.hists), counts.zeros)
        return again
