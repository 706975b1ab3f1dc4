"""Arrays whose data starts on a 4 KiB boundary, which a file opened with O_DIRECT takes without a copy
(the tensorfile writer's batches). numpy alone: image preprocessing allocates them, and it also runs in
the Triton repository's Python environment, which has no h5py."""
from __future__ import annotations

import numpy as np

ALIGNMENT = 4096  # O_DIRECT's unit for the memory, file offset and length of a write (a page, or a 4Kn sector)


def aligned_empty(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """An uninitialized array whose data starts on an ALIGNMENT boundary."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)
