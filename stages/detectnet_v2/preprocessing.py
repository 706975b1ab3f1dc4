"""Images as TAO's DetectNet_v2 dataloaders see them: RGB, resized, scaled by 1/255, NCHW float32.
Training-side data (tensorfile, calibration) is resized bilinearly; TAO Deploy's evaluate resizes
with LANCZOS (EVALUATION_RESAMPLE)."""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..compute.workers import worker_count
from ..formats.aligned import aligned_empty
from ..formats.encoded_images import READ_FORMATS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
EVALUATION_RESAMPLE = Image.LANCZOS  # nvidia_tao_deploy/cv/detectnet_v2/dataloader.py


class ImageError(ValueError):
    """An image that cannot be used, or a directory without images. Names the file."""


def list_images(directory: str | Path, extension: str | None = None) -> list[Path]:
    """Images of a directory, sorted by name. `extension` ("png" or ".png") narrows the choice,
    as the spec's `image_extension` does for TAO."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageError(f"image directory {directory} does not exist")
    wanted = (("." + extension.lstrip(".")).lower(),) if extension else IMAGE_EXTENSIONS
    images = sorted(p for p in directory.iterdir() if p.suffix.lower() in wanted and p.is_file())
    if not images:
        raise ImageError(f"image directory {directory} holds no {'/'.join(wanted)} images")
    return images


def as_rgb(image: Image.Image) -> Image.Image:
    """An image as 8-bit RGB, by its values: a 16-bit grayscale image (Pillow's I;16 modes, or I for 16-bit PNGs
    some Pillows give) keeps the high byte of each value, as Pillow already does for 16-bit RGB PNGs. Pillow's
    own conversion of those modes clips every value above 255, which reads a 16-bit image as a white one."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        image = Image.fromarray((values >> 8).astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(path: str | Path | BinaryIO, width: int, height: int, resample=Image.BILINEAR,
               out: np.ndarray | None = None) -> np.ndarray:
    """One image as TAO preprocesses it: (3, height, width) float32 in [0, 1], written into `out`
    when given (in one pass from the decoded bytes: at KITTI's 1248x384 the float copies cost as
    much as the PNG decoding).

    Grayscale and palette images are converted to RGB, as TAO's loader does for 3-channel models; 16-bit
    images are read by their values, scaled to 8 bits (as_rgb).
    `path` may also be an open binary file (an encoded image received by a server).
    """
    try:
        with Image.open(path, formats=READ_FORMATS) as image:  # no other decoder (EPS's runs Ghostscript)
            image = as_rgb(image).resize((width, height), resample)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {_named(path)}: {exc}") from None
    if out is None:
        out = np.empty((3, height, width), np.float32)
    # float32(x) * float32(1/255): the same bits as converting first and scaling after
    np.multiply(np.asarray(image).transpose(2, 0, 1), np.float32(1.0 / 255.0), out=out, dtype=np.float32)
    return out


def iter_batches(paths: Sequence[Path], batch_size: int, width: int, height: int,
                 workers: int | None = None, reuse: bool = False, resample=Image.BILINEAR) -> Iterator[np.ndarray]:
    """Batches of preprocessed images, decoded in parallel on all cores; the next batches are decoded
    while the caller consumes the current one: as many as keep every worker busy (one batch where a batch
    has at least as many images as there are workers), so memory holds that many batches and one more.

    With `reuse`, the batches are buffers filled in turn: no allocation per batch, so memory stays flat
    however many batches pass, but a batch is only valid until the next one is asked for (for a consumer
    that is done with each batch before it takes the next, like a writer)."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    groups = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    # Pillow releases the GIL while decoding and resizing, so threads keep every core busy.
    threads = worker_count(workers)
    pool = ThreadPoolExecutor(threads)
    # While the caller holds one batch (a writer writing it), the batches ahead hold an image for every
    # worker: with one batch ahead, 16 workers decoded 8 images at a time (bench/README.md, "Measurements
    # behind the code")
    ahead = max(1, -(-threads // batch_size))
    # aligned: the tensorfile writer sends such a batch to the disk without a copy
    buffers = [aligned_empty((batch_size, 3, height, width)) for _ in range(ahead + 1)] if reuse else []

    def fill(out: np.ndarray, path: Path) -> None:
        load_image(path, width, height, resample, out)

    def submit(index: int) -> tuple[np.ndarray, list[Future]]:
        group = groups[index]
        batch = (buffers[index % len(buffers)][: len(group)] if reuse
                 else np.empty((len(group), 3, height, width), np.float32))
        return batch, [pool.submit(fill, batch[j], p) for j, p in enumerate(group)]

    try:
        pending = deque(submit(index) for index in range(min(ahead, len(groups))))
        for index in range(len(groups)):
            # the buffer filled next is the one yielded last time: the caller is done with it
            if index + ahead < len(groups):
                pending.append(submit(index + ahead))
            batch, futures = pending.popleft()
            for future in futures:
                future.result()
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def image_size(path: str | Path | BinaryIO) -> tuple[int, int]:
    """(width, height) of an image, from its header."""
    try:
        with Image.open(path, formats=READ_FORMATS) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {_named(path)}: {exc}") from None


def _named(path: str | Path | BinaryIO) -> str | Path:
    """A file's name for an error; an open file (an encoded image a server received) is "data"."""
    return path if isinstance(path, (str, Path)) else "data"
