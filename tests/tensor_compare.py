"""How close two outputs are, for the tests and benchmarks (convert's own verification accumulates the same
figure over batches, in stages/open_backend/engines.verify)."""
from __future__ import annotations

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of the flattened arrays, in float64; 1.0 for two equal zero arrays."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator else float(np.array_equal(a, b))
