"""Images as TAO's DetectNet_v2 dataloader sees them: RGB, resized, scaled by 1/255, NCHW float32."""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


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


def load_image(path: str | Path, width: int, height: int) -> np.ndarray:
    """One image as TAO preprocesses it: (3, height, width) float32 in [0, 1].

    Grayscale and palette images are converted to RGB, as TAO's loader does for 3-channel models.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((width, height), Image.BILINEAR)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from None
    array = np.asarray(image, dtype=np.float32)
    array *= np.float32(1.0 / 255.0)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def iter_batches(paths: Sequence[Path], batch_size: int, width: int, height: int,
                 workers: int | None = None) -> Iterator[np.ndarray]:
    """Batches of preprocessed images, decoded in parallel on all cores; the next batch is
    decoded while the caller consumes the current one, so memory holds two batches at most."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    groups = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    # Pillow releases the GIL while decoding and resizing, so threads keep every core busy.
    pool = ThreadPoolExecutor(workers or os.cpu_count() or 1)

    def submit(group: Sequence[Path]) -> list[Future]:
        return [pool.submit(load_image, p, width, height) for p in group]

    try:
        ahead = submit(groups[0]) if groups else []
        for index in range(len(groups)):
            current = ahead
            ahead = submit(groups[index + 1]) if index + 1 < len(groups) else []
            yield np.stack([f.result() for f in current])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
