"""Range statistics of one tensor, streamed over batches: the running maximum (minmax), and the histogram of
|x| that entropy and percentile calibration read (thresholds.py). Pure numpy and numba: no onnxruntime.

A batch is reduced and dropped, so memory does not grow with the number of batches. A large tensor is
reduced in pieces (chunks()), each on any free thread (ranges.py): the histogram's counts are integers,
so the pieces' sum is the same histogram to the last count, whatever the number of pieces or threads."""
from __future__ import annotations

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


def load_kernel() -> None:
    """Load the binning kernel (numba compiles it, or reads it from its cache, on the first call)."""
    _bin(np.zeros(1, np.float32), np.float32(1), np.zeros(1, np.int64), False)


class HistogramCollector:
    """Histogram of |x| with a fixed bin width set by the first non-zero batch (max / 2048). Later
    batches that reach further add bins of the same width; past 2 x 2048 bins, neighbouring bins are
    merged in pairs, which keeps the histogram exact on a coarser grid. Exact zeros (ReLU's) are
    left out with skip_zeros, as pytorch-quantization's option of that name does: otherwise the
    zero spike dominates the KL search and clips most of the range.

    A batch is added in three steps, so that its pieces can be binned on several threads: observe()
    the batch's largest magnitude (which fixes or widens the grid), binned() each piece into a
    histogram of its own, merge() those. add() does the three for one array."""

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

    def binned(self, piece: np.ndarray, relu: bool) -> tuple[np.ndarray, int]:
        """A piece of the observed batch binned on the current grid (zeros left out), and how many of its
        values were zero."""
        hist = np.zeros(len(self.hist), np.int64)
        # float32 products, like `needed` above, so no index passes the last bin
        return hist, _bin(piece, np.float32(1.0 / self.width), hist, relu)

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
