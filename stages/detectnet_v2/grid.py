"""DetectNet_v2's output grid and box encoding, as TAO Deploy decodes it (`abs_bbox_converter`, 'ltrb'):
one cell per 16x16 input pixels; the centre of the cell in column j, row i is (16 j + 0.5, 16 i + 0.5)
in input pixels; a class's four bbox channels are (cx - x1, cy - y1, x2 - cx, y2 - cy) / 35."""
from __future__ import annotations

import numpy as np

STRIDE = 16
OFFSET = 0.5
BBOX_NORM = 35.0


def grid_shape(width: int, height: int) -> tuple[int, int]:
    """(rows, columns) of the output grid for a model input of width x height."""
    if width % STRIDE or height % STRIDE:
        raise ValueError(f"DetectNet_v2 needs input sizes that are multiples of {STRIDE}, got {width}x{height}")
    return height // STRIDE, width // STRIDE


def cell_centres(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(x of each column's centre, y of each row's centre) in input pixels."""
    return np.arange(columns) * STRIDE + OFFSET, np.arange(rows) * STRIDE + OFFSET


def encode_box(box: tuple[float, float, float, float], rows: int, columns: int) -> np.ndarray:
    """The four bbox channels (4, rows, columns) that every cell would hold for this box (x1, y1, x2, y2
    in input pixels)."""
    x1, y1, x2, y2 = box
    cx, cy = cell_centres(rows, columns)
    shape = (rows, columns)
    return np.stack([np.broadcast_to(cx[None, :] - x1, shape), np.broadcast_to(cy[:, None] - y1, shape),
                     np.broadcast_to(x2 - cx[None, :], shape), np.broadcast_to(y2 - cy[:, None], shape)]) / BBOX_NORM
