"""What an evaluation looks like: precision-recall curves per class, and detections drawn on images.

The curves are the interpolated precision (the precision envelope: at recall r, the best precision at
any recall >= r) that KITTI AP is computed from, on one recall grid for every model: 0, 0.1, ..., 1 and
each model's own recall values. On that grid the envelope is exact, so the curve's area (steps to the
right) is the INTEGRATE AP and its mean at 0, 0.1, ..., 1 the SAMPLE AP."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .postprocessing import Detections
from .preprocessing import as_rgb

SAMPLE_POINTS = np.linspace(0.0, 1.0, 11)
COLOURS = {"truth": (40, 220, 40), "reference": (40, 120, 255), "engine": (255, 60, 60)}


def envelope(recall: np.ndarray, precision: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Interpolated precision at each recall in `at`: the best precision at any recall >= it (0 if none).
    `recall` is non-decreasing, as along a curve of detections taken most confident first."""
    found = np.zeros(len(at))
    if len(recall):
        best_from = np.maximum.accumulate(precision[::-1])[::-1]
        first = np.searchsorted(recall, at, side="left")  # the first point with recall >= at
        inside = first < len(recall)
        found[inside] = best_from[first[inside]]
    return found


def curve_table(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[dict[str, float]]:
    """Rows {recall, <model>: interpolated precision, ...} on a recall grid shared by the models."""
    grid = np.unique(np.concatenate([SAMPLE_POINTS, *(np.clip(r, 0, 1) for r, _ in curves.values())]))
    columns = {name: envelope(recall, precision, grid) for name, (recall, precision) in curves.items()}
    return [{"recall": round(float(r), 6), **{name: round(float(values[i]), 6) for name, values in columns.items()}}
            for i, r in enumerate(grid)]


def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(f"{row[key]:g}" for key in header) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def draw_curves(path: Path, title: str, rows: list[dict[str, float]]) -> None:
    """The curves of curve_table as a PNG: what `dvc plots show` draws from the CSV with Vega, which its HTML
    loads from a CDN, here drawn without one. Each model in its colour of the drawn images."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever MPLBACKEND says
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.8, 3.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    recall = [row["recall"] for row in rows]
    models = sorted((key for key in rows[0] if key != "recall"), key=lambda m: m == "engine")  # the engine on top
    for model in models:
        colour = tuple(c / 255 for c in COLOURS.get(model, (0, 0, 0)))
        axes.step(recall, [row[model] for row in rows], where="post", label=model, color=colour,
                  linestyle="--" if model == "engine" else "-")  # dashed: where the two agree, both show
    axes.set(title=title, xlabel="recall", ylabel="interpolated precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.savefig(path, format="png", metadata={"Software": None})  # no version stamp: same inputs, same bytes


def draw(image_path: Path, boxes: dict[str, dict[str, Detections]], truth: dict[str, np.ndarray],
         out: Path) -> None:
    """The image at its original size with the ground truth (green, class at the box's foot) and each
    model's detections with class and confidence: the fp32 reference in blue (label inside the top),
    the engine in red on top (label above the box)."""
    with Image.open(image_path) as opened:
        image = as_rgb(opened)
    canvas = ImageDraw.Draw(image)
    for name, found in truth.items():
        for box in found:
            _box(canvas, box, COLOURS["truth"], name, "foot")
    for model in ("reference", "engine"):
        for name, found in boxes.get(model, {}).items():
            for box, confidence in zip(found.boxes, found.confidences):
                where = "inside" if model == "reference" else "above"
                _box(canvas, box, COLOURS[model], f"{name} {confidence:.2f}", where)
    image.save(out, compress_level=6)


def _box(canvas: ImageDraw.ImageDraw, box: np.ndarray, colour: tuple[int, int, int], label: str, where: str) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    canvas.rectangle([x1, y1, x2, y2], outline=colour, width=2)
    left, top, right, bottom = canvas.textbbox((0, 0), label)
    height = bottom - top + 2
    if where == "above" and y1 >= height:
        y = y1 - height
    elif where == "foot":
        y = max(y2 - height, y1)
    else:  # inside the top, also where there is no room above
        y = y1
    canvas.rectangle([x1, y, x1 + right - left + 2, y + height], fill=colour)
    canvas.text((x1 + 1, y - top + 1), label, fill=(0, 0, 0))
