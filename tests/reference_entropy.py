"""A direct, loop-by-loop transcription of the KL threshold search (NVIDIA pytorch-quantization's
description of TensorRT's entropy calibration), kept independent of stages.quantization (thresholds.py) to check it."""
from __future__ import annotations

import numpy as np


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    if q.sum() == 0:
        return float("inf")
    p = p / p.sum()
    q = q / q.sum()
    mask = p > 0
    if np.any(q[mask] == 0):
        return float("inf")
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def reference_entropy_amax(hist: np.ndarray, edges: np.ndarray, start_bin: int = 128, levels: int = 128) -> float:
    hist = hist.astype(np.float64)
    divergences = []
    for i in range(start_bin, len(hist) + 1):
        reference = hist[:i].copy()
        reference[i - 1] += hist[i:].sum()
        nonzero = hist[:i] != 0
        merged = i // levels
        quantized = np.zeros(levels)
        for j in range(levels):
            quantized[j] = hist[j * merged:(j + 1) * merged].sum()
        quantized[-1] += hist[levels * merged:i].sum()
        expanded = np.zeros(i)
        for j in range(levels):
            start = j * merged
            stop = i if j == levels - 1 else start + merged
            norm = nonzero[start:stop].sum()
            if norm:
                expanded[start:stop] = quantized[j] / norm
        expanded[hist[:i] == 0] = 0
        divergences.append(kl_divergence(reference, expanded))
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - int(np.argmin(divergences[::-1]))
    return float(edges[last_argmin + start_bin])
