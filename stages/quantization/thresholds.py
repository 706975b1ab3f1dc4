"""Each calibration method's amax (the range a tensor's INT8 scale covers, scale = amax / 127) from a tensor's
range statistics (histograms.py). Entropy calibration follows TensorRT's EntropyCalibration2 as NVIDIA's
pytorch-quantization documents it: a 2048-bin histogram of |x|, and for every candidate threshold
i >= 128 the KL divergence between the clipped reference distribution and its 128-level quantization; the
last minimising i gives amax = i * bin_width. Pure numpy and numba."""
from __future__ import annotations

import numba
import numpy as np

from ..formats.calibration_cache import CALIBRATOR_NAMES
from .histograms import HistogramCollector, MaxCollector

START_BIN, QUANT_LEVELS = 128, 128

# The methods, as TensorRT's calibration cache names their calibrators; in the order auto prefers them on a
# tie: TensorRT's default first
METHODS = tuple(CALIBRATOR_NAMES)


def entropy_amax(hist: np.ndarray, width: float, start_bin: int = START_BIN,
                 levels: int = QUANT_LEVELS) -> float:
    """EntropyCalibration2's threshold for a histogram of |x|: the last candidate i minimising
    KL(P || Q), amax = i * width (see _kl_divergences)."""
    hist = np.asarray(hist, dtype=np.float64)
    n = len(hist)
    if n == 0 or width == 0:
        return 0.0
    if n < start_bin:
        return n * width
    kl = _kl_divergences(hist, start_bin, levels)
    best = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return float((start_bin + best) * width)


@numba.njit(cache=True, nogil=True)
def _kl_divergences(hist: np.ndarray, start_bin: int, levels: int) -> np.ndarray:
    """KL(P || Q) for every candidate i in [start_bin, len(hist)].

    P is hist[:i] with the outliers hist[i:] folded into its last bin; Q is hist[:i] merged into
    `levels` chunks (i // levels bins each, the last chunk taking the remainder) and spread evenly
    over each chunk's non-zero bins. With prefix sums, sum P log P and sum P log Q need only the
    mass C_j and the non-zero count n_j of each chunk, so a candidate costs O(levels), not O(i); and only
    the last chunk moves from one candidate to the next until i // levels does, so the rest of the sum is
    carried over, which makes a candidate O(1) (the same additions in the same order: the same bits):
      KL = (sum P log P - sum_j C_j log(C_j / n_j) - O log q_last) / T - log T + log S_i
    where T is the total, S_i = sum hist[:i] (Q's total) and O the outlier mass.
    """
    n = len(hist)
    cum = np.zeros(n + 1)
    cum_nz = np.zeros(n + 1)
    cum_hlogh = np.zeros(n + 1)
    for k in range(n):
        h = hist[k]
        cum[k + 1] = cum[k] + h
        cum_nz[k + 1] = cum_nz[k] + (1.0 if h > 0 else 0.0)
        cum_hlogh[k + 1] = cum_hlogh[k] + (h * np.log(h) if h > 0 else 0.0)
    total = cum[n]
    out = np.empty(n - start_bin + 1)
    merged_for, head = -1, 0.0  # head: sum C_j log(C_j / n_j) over every chunk but the last
    for c in range(start_bin, n + 1):
        merged = c // levels
        if merged != merged_for:  # the chunks before the last move only when `merged` does: every levels-th c
            merged_for, head = merged, 0.0
            for j in range(levels - 1):
                mass = cum[(j + 1) * merged] - cum[j * merged]
                count = cum_nz[(j + 1) * merged] - cum_nz[j * merged]
                if mass > 0 and count > 0:
                    head += mass * np.log(mass / count)
        sum_p_log_q = head  # the same additions in the same order as summing every chunk for each c
        q_last = 0.0
        lo = (levels - 1) * merged
        mass = cum[c] - cum[lo]
        count = cum_nz[c] - cum_nz[lo]
        if mass > 0 and count > 0:
            q_last = mass / count
            sum_p_log_q += mass * np.log(q_last)
        last = hist[c - 1]
        outliers = total - cum[c]
        if outliers > 0 and last == 0:  # P has mass where Q has none
            out[c - start_bin] = np.inf
            continue
        p_last = last + outliers
        p_log_p = cum_hlogh[c - 1] + (p_last * np.log(p_last) if p_last > 0 else 0.0)
        if outliers > 0:
            sum_p_log_q += outliers * np.log(q_last)
        out[c - start_bin] = (p_log_p - sum_p_log_q) / total - np.log(total) + np.log(cum[c])
    return out


def load_kernel() -> None:
    """Load the KL kernel (numba compiles it, or reads it from its cache, on the first call), for the float64
    histograms entropy_amax hands it: numba compiles a kernel once per argument type."""
    _kl_divergences(np.ones(2, np.float64), 1, 1)


def percentile_amax(hist: np.ndarray, width: float, percentile: float) -> float:
    if hist.sum() == 0:
        return 0.0
    cdf = np.cumsum(hist) / hist.sum()
    index = int(np.searchsorted(cdf, percentile / 100.0))
    return float((index + 1) * width)


def amax_of(collector: MaxCollector | HistogramCollector, method: str, percentile: float | None) -> float:
    """One tensor's amax by `method` (one of METHODS); `percentile`: backend.percentile, where it is computed."""
    if isinstance(collector, MaxCollector):
        return collector.compute()
    if method == "minmax":
        return collector.top
    if method == "entropy":
        return entropy_amax(collector.hist, collector.width or 0.0)
    return percentile_amax(collector.hist, collector.width or 0.0, percentile)
