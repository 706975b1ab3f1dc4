"""TAO's calibration TensorFile (HDF5), written batch by batch and read back the same way.

Layout (as TAO's own `TensorFile` writes it): root attributes `count` (batches written) and `shape`
(the common batch shape); batch i is group `_tensorfile_array_key__<i>` holding the float32 NCHW
dataset `_tensorfile_array_key_`. TAO gzips each batch; any h5py filter reads back the same.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

ARRAY_KEY = "_tensorfile_array_key_"


def group_name(index: int) -> str:
    return f"{ARRAY_KEY}_{index}"


class TensorFileWriter:
    """Appends batches to a new TensorFile; every batch must have the shape of the first."""

    def __init__(self, path: str | Path, compression: str | None = "gzip"):
        self.path, self.compression = Path(path), compression
        self._file = h5py.File(self.path, "w", libver="latest")
        self._file.attrs["count"] = 0
        self.count = 0
        self.shape: tuple[int, ...] | None = None

    def write(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.shape is None:
            self.shape = batch.shape
            self._file.attrs["shape"] = np.asarray(batch.shape, dtype=np.int64)
        elif batch.shape != self.shape:
            raise ValueError(f"{self.path}: batch {self.count} has shape {batch.shape}, "
                             f"the tensorfile holds {self.shape}")
        options = {"compression": self.compression} if self.compression else {}
        try:
            self._file.create_group(group_name(self.count)).create_dataset(ARRAY_KEY, data=batch, **options)
            self._file.attrs["count"] = self.count + 1
        except (OSError, RuntimeError) as exc:  # h5py reports a full disk or ulimit -f as either
            raise OSError(f"cannot write tensorfile {self.path}: {exc}") from None
        self.count += 1

    def close(self) -> None:
        try:
            self._file.close()
        except (OSError, RuntimeError) as exc:
            raise OSError(f"cannot write tensorfile {self.path}: {exc}") from None

    def __enter__(self) -> "TensorFileWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self.close()
        except OSError:
            if exc_type is None:  # a failure inside the block is the one worth reporting
                raise


def read_batches(path: str | Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """Batches of a TensorFile in order, one in memory at a time."""
    with h5py.File(path, "r") as handle:
        count = int(handle.attrs.get("count", 0))
        for index in range(count if limit is None else min(count, limit)):
            yield handle[group_name(index)][ARRAY_KEY][()]


def describe(path: str | Path) -> tuple[int, tuple[int, ...] | None]:
    """(batch count, batch shape) of a TensorFile."""
    with h5py.File(path, "r") as handle:
        shape = handle.attrs.get("shape")
        return int(handle.attrs.get("count", 0)), (tuple(int(d) for d in shape) if shape is not None else None)
