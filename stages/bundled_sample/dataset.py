"""The sample's KITTI-style dataset: synthetic street scenes with cars, cyclists and pedestrians (and,
for the test models shaped like NGC's 4-class ones, road signs), and their KITTI labels. Seeded and
deterministic."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..compute.workers import worker_count

CLASSES = ("car", "cyclist", "pedestrian")  # the bundled sample's
SIZES = {"car": (120, 60), "cyclist": (45, 80), "pedestrian": (25, 70), "road_sign": (34, 90)}  # at scale 1
# NGC's traffic models (TrafficCamNet, DashCamNet) name two of the same objects otherwise
ALIASES = {"bicycle": "cyclist", "person": "pedestrian"}
DRAWN_CLASSES = (*SIZES, *ALIASES)  # what a scene can hold, by the names its labels give: a dataset picks some
KITTI_SIZE = (1242, 375)  # width, height of a KITTI image


def _scene(rng: np.random.Generator, size: tuple[int, int],
           classes: tuple[str, ...]) -> tuple[Image.Image, list[str]]:
    width, height = size
    sky = np.linspace(200, 120, height // 2)[:, None] * np.ones((1, width))
    road = np.linspace(90, 60, height - height // 2)[:, None] * np.ones((1, width))
    base = np.concatenate([sky, road])[..., None] * np.array([0.8, 0.9, 1.0])
    base += rng.normal(0, 12, base.shape)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    labels = []
    horizon = height // 2
    for _ in range(int(rng.integers(2, 7))):
        label = classes[int(rng.integers(len(classes)))]
        cls = ALIASES.get(label, label)
        scale = rng.uniform(0.5, 1.6)
        w, h = SIZES[cls]
        w, h = int(w * scale), int(h * scale)
        x1 = int(rng.integers(0, width - w))
        y2 = int(rng.integers(horizon + 10, height))
        y1 = max(0, y2 - h)
        colour = tuple(int(c) for c in rng.integers(20, 235, 3))
        if cls == "car":
            draw.rectangle([x1, y1 + h // 3, x1 + w, y2 - h // 6], fill=colour)
            draw.rectangle([x1 + w // 5, y1, x1 + 4 * w // 5, y1 + h // 3], fill=tuple(c // 2 for c in colour))
            for cx in (x1 + w // 5, x1 + 4 * w // 5):
                draw.ellipse([cx - h // 6, y2 - h // 3, cx + h // 6, y2], fill=(15, 15, 15))
        elif cls == "cyclist":
            for cx in (x1 + w // 5, x1 + 4 * w // 5):
                draw.ellipse([cx - w // 5, y2 - 2 * w // 5, cx + w // 5, y2], outline=(10, 10, 10), width=3)
            draw.rectangle([x1 + w // 3, y1 + h // 5, x1 + 2 * w // 3, y2 - w // 4], fill=colour)
            draw.ellipse([x1 + w // 3, y1, x1 + 2 * w // 3, y1 + h // 5], fill=(230, 190, 160))
        elif cls == "road_sign":  # a plate on a grey pole
            draw.rectangle([x1 + 2 * w // 5, y1 + w, x1 + 3 * w // 5, y2], fill=(110, 110, 110))
            draw.ellipse([x1, y1, x1 + w, y1 + w], fill=colour, outline=(240, 240, 240), width=3)
        else:
            draw.rectangle([x1, y1 + h // 6, x1 + w, y2], fill=colour)
            draw.ellipse([x1, y1, x1 + w, y1 + h // 6], fill=(230, 190, 160))
        labels.append(f"{label} 0.00 0 0.00 {x1:.2f} {y1:.2f} {x1 + w:.2f} {y2:.2f} "
                      "0.00 0.00 0.00 0.00 0.00 0.00 0.00")
    return image, labels


def write_dataset(root: Path, counts: dict[str, int], seed: int, size: tuple[int, int] = KITTI_SIZE,
                  progress=None, classes: tuple[str, ...] = CLASSES) -> None:
    """KITTI layout: <root>/<split>/image_2/NNNNNN.png and <root>/<split>/label_2/NNNNNN.txt; the scenes
    hold objects of `classes` (some of DRAWN_CLASSES)."""
    unknown = sorted(set(classes) - set(DRAWN_CLASSES))
    if unknown or not classes:
        raise ValueError(f"the sample can draw {', '.join(DRAWN_CLASSES)}; asked for {list(classes)}")
    rng = np.random.default_rng(seed)
    # scenes are drawn in order (one random stream); PNG encoding, most of the time, runs on every core
    with ThreadPoolExecutor(worker_count()) as pool:
        saved: list[Future] = []
        for split, count in counts.items():
            images, labels = root / split / "image_2", root / split / "label_2"
            images.mkdir(parents=True, exist_ok=True)
            labels.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                image, lines = _scene(rng, size, tuple(classes))
                saved.append(pool.submit(image.save, images / f"{index:06d}.png", compress_level=1))
                (labels / f"{index:06d}.txt").write_text("\n".join(lines) + "\n")
                if progress is not None:
                    progress.update(1)
        for future in saved:
            future.result()
