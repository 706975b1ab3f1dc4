"""TAO's calibration TensorFile (HDF5), written batch by batch and read back the same way.

Layout (as TAO's own `TensorFile` writes it): root attributes `count` (batches written) and `shape`
(the common batch shape); batch i is group `_tensorfile_array_key__<i>` holding the float32 NCHW
dataset `_tensorfile_array_key_`. TAO gzips each batch; any h5py filter reads back the same.

Uncompressed (the pipeline's default), a batch goes from its buffer to the disk with O_DIRECT where the
file system takes it: at TAO's input sizes a batch is tens of MiB, and copying it into the page cache cost
the writer half as much CPU as decoding the images (bench/README.md). HDF5 only places the batch: the
dataset is contiguous, allocated when created, on a 4 KiB boundary, and its bytes are written at that
offset. Where that cannot be (a file system that refuses O_DIRECT, a buffer not aligned in memory),
h5py writes the same bytes to the same place: the file is the same to the byte either way.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .aligned import ALIGNMENT

ARRAY_KEY = "_tensorfile_array_key_"
_O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux's; elsewhere every batch goes through h5py


def group_name(index: int) -> str:
    return f"{ARRAY_KEY}_{index}"


class TensorFileWriter:
    """Appends batches to a new TensorFile; every batch must have the shape of the first."""

    def __init__(self, path: str | Path, compression: str | None = "gzip"):
        self.path, self.compression = Path(path), compression
        aligned = {"alignment_threshold": ALIGNMENT, "alignment_interval": ALIGNMENT} if compression is None else {}
        self._file = h5py.File(self.path, "w", libver="latest", **aligned)
        self._file.attrs["count"] = 0
        self.count = 0
        self.shape: tuple[int, ...] | None = None
        self._direct: int | None = None  # a descriptor with O_DIRECT, while the file system takes it
        if compression is None and _O_DIRECT:
            try:
                self._direct = os.open(self.path, os.O_WRONLY | _O_DIRECT)
            except OSError:  # tmpfs before Linux 6.6, for one, refuses O_DIRECT: h5py writes every batch
                pass
        self.direct_batches = 0  # how many batches went to the disk directly

    def write(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.shape is None:
            self.shape = batch.shape
            self._file.attrs["shape"] = np.asarray(batch.shape, dtype=np.int64)
        elif batch.shape != self.shape:
            raise ValueError(f"{self.path}: batch {self.count} has shape {batch.shape}, "
                             f"the tensorfile holds {self.shape}")
        try:
            group = self._file.create_group(group_name(self.count))
            if self.compression:
                group.create_dataset(ARRAY_KEY, data=batch, compression=self.compression)
            else:
                self._write_placed(group, batch)
            self._file.attrs["count"] = self.count + 1
        except (OSError, RuntimeError) as exc:  # h5py reports a full disk or ulimit -f as either
            raise OSError(f"cannot write tensorfile {self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        self.count += 1

    def _write_placed(self, group: h5py.Group, batch: np.ndarray) -> None:
        """The batch as a dataset HDF5 places when it creates it; its bytes written there with O_DIRECT
        where they can be, else by h5py. Either way the file is the same to the byte."""
        creation = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        creation.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # placed now, so its offset is known
        creation.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # every byte is written below
        dataset = group.create_dataset(ARRAY_KEY, shape=batch.shape, dtype=np.float32, dcpl=creation)
        offset = dataset.id.get_offset()
        if self._direct is None or batch.ctypes.data % ALIGNMENT or offset is None or offset % ALIGNMENT:
            dataset[...] = batch
        else:
            self._write_direct(batch, offset)

    def _write_direct(self, batch: np.ndarray, offset: int) -> None:
        """The batch's bytes written at `offset` with O_DIRECT; a last partial block, or the rest after a
        short write, through an ordinary descriptor (O_DIRECT takes whole blocks only)."""
        data = memoryview(batch).cast("B")
        whole, done = len(data) - len(data) % ALIGNMENT, 0
        try:
            while done < whole:
                written = os.pwrite(self._direct, data[done:whole], offset + done)
                done += written
                if written == 0 or written % ALIGNMENT:  # short: the rest goes the ordinary way
                    break
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            os.close(self._direct)  # O_DIRECT taken at open, not at write: ordinary writes from here on
            self._direct = None
        else:
            self.direct_batches += 1
        if done < len(data):
            plain = os.open(self.path, os.O_WRONLY)
            try:
                while done < len(data):
                    written = os.pwrite(plain, data[done:], offset + done)
                    if written == 0:
                        raise OSError(errno.EIO, "the file took none of the batch's remaining bytes")
                    done += written
            finally:
                os.close(plain)

    def close(self) -> None:
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None
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


class TensorFileError(ValueError):
    """A TensorFile that cannot be read (truncated, not HDF5). Names the file and what makes it again."""


def _opened(path: str | Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:  # HDF5's "Unable to synchronously open file (truncated file: eof = ...)" names neither
        raise TensorFileError(f"calibration tensorfile {path} cannot be read ({exc}): it is damaged or was cut "
                              "short; the calibration_tensorfile stage writes it again: dvc repro -f -s "
                              "calibration_tensorfile") from None


def read_batches(path: str | Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """Batches of a TensorFile in order, one in memory at a time."""
    with _opened(path) as handle:
        count = int(handle.attrs.get("count", 0))
        for index in range(count if limit is None else min(count, limit)):
            yield handle[group_name(index)][ARRAY_KEY][()]


def describe(path: str | Path) -> tuple[int, tuple[int, ...] | None]:
    """(batch count, batch shape) of a TensorFile."""
    with _opened(path) as handle:
        shape = handle.attrs.get("shape")
        return int(handle.attrs.get("count", 0)), (tuple(int(d) for d in shape) if shape is not None else None)
