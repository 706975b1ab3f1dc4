"""Fit the sample model's heads to the sample's training images, so that it really detects.

No deep-learning framework: the backbone keeps its deterministic random weights, and the two 3x3 heads
are fitted in closed form (ridge regression) on its standardized features. The coverage head regresses
logits of DetectNet_v2's coverage targets (1 on the central part of each box, bbox_rasterizer_config's
radii, 0 elsewhere), then one logistic fit per class calibrates its scale, so coverages mean what TAO's
clustering assumes; the bbox head regresses DetectNet_v2's box encoding on each class's covered cells.
The sums are accumulated a few images at a time, so memory does not grow with the training set.
Deterministic: the same images and seed give the same bytes on the same kind of machine."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..detectnet_v2.grid import STRIDE, cell_centres, encode_box, grid_shape
from ..detectnet_v2.preprocessing import image_size, iter_batches, list_images
from ..formats.kitti_labels import read_labels
from .model import HEAD_KERNEL, Widths, backbone, build_model, feature_depth
from .spec import COV_RADII, MIN_RADIUS_CELLS

LOGIT = 4.0  # the coverage head's regression targets: +LOGIT on covered cells, -LOGIT elsewhere
RIDGE = 1.0  # ridge penalty per sqrt(training cell)
CHUNK = 16  # images whose features are unfolded and summed at a time


@dataclass(frozen=True)
class FitReport:
    images: int
    cells: int
    covered: dict[str, int]  # covered cells per class


def coverage_targets(boxes: list[tuple[int, tuple[float, float, float, float]]], num_classes: int,
                     rows: int, columns: int, radii: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(coverage (C, rows, columns), bbox (4C, rows, columns)) for boxes [(class index, x1 y1 x2 y2 in
    input pixels)]: a cell is covered when its centre lies in the box's central region, radius times the
    box each way but at least MIN_RADIUS_CELLS cells; a later box overwrites an earlier one (it is drawn
    in front of it)."""
    cov = np.zeros((num_classes, rows, columns), np.float32)
    bbox = np.zeros((4 * num_classes, rows, columns), np.float32)
    cx, cy = cell_centres(rows, columns)
    least = MIN_RADIUS_CELLS * STRIDE
    for k, (x1, y1, x2, y2) in boxes:
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        inside_x = np.abs(cx - mx) <= max(radii[k] * (x2 - x1) / 2, least)
        inside_y = np.abs(cy - my) <= max(radii[k] * (y2 - y1) / 2, least)
        covered = inside_y[:, None] & inside_x[None, :]
        cov[k][covered] = 1.0
        bbox[4 * k:4 * k + 4][:, covered] = encode_box((x1, y1, x2, y2), rows, columns)[:, covered]
    return cov, bbox


def _unfold(features: np.ndarray) -> np.ndarray:
    """(n, D, rows, columns) -> (n * rows * columns, K*K*D + 1): each cell's KxK neighbourhood, zero
    padded as the head's convolution pads, and a constant 1 for the bias. Column (dy * K + dx) * D + d."""
    n, depth, rows, columns = features.shape
    pad = HEAD_KERNEL // 2
    padded = np.pad(features, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    taps = [padded[:, :, dy:dy + rows, dx:dx + columns] for dy in range(HEAD_KERNEL) for dx in range(HEAD_KERNEL)]
    cells = np.concatenate(taps + [np.ones((n, 1, rows, columns), np.float32)], axis=1)
    return cells.transpose(0, 2, 3, 1).reshape(n * rows * columns, -1)


def _as_conv(weights: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Regression weights (K*K*D + 1, out) -> a conv kernel (out, D, K, K) and bias (out,)."""
    kernel = weights[:-1].reshape(HEAD_KERNEL, HEAD_KERNEL, depth, -1).transpose(3, 2, 0, 1)
    return np.ascontiguousarray(kernel), weights[-1]


def _solve(gram: np.ndarray, moments: np.ndarray, rows: int) -> np.ndarray:
    penalty = RIDGE * np.sqrt(max(rows, 1))
    return np.linalg.solve(gram + penalty * np.eye(len(gram)), moments)


def _logistic_calibration(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) maximising the likelihood of labels under sigmoid(a * logits + b): Newton's method."""
    a, b = 1.0, 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(a * logits + b)))
        w = p * (1 - p) + 1e-12
        gradient = np.array([np.dot(p - labels, logits), np.sum(p - labels)])
        hessian = np.array([[np.dot(w, logits * logits), np.dot(w, logits)], [np.dot(w, logits), np.sum(w)]])
        step = np.linalg.solve(hessian + 1e-9 * np.eye(2), gradient)
        a, b = a - step[0], b - step[1]
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(a), float(b)


def fit_model(path: Path, split: Path, classes: tuple[str, ...], width: int, height: int,
              base_width: Widths = 16, seed: int = 0, progress=None) -> FitReport:
    """Write to `path` the sample model fitted to the KITTI split `split` (image_2/, label_2/)."""
    import onnxruntime as ort

    rows, columns = grid_shape(width, height)
    images = list_images(split / "image_2")
    session = ort.InferenceSession(backbone(width, height, base_width, seed).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    features = np.empty((len(images), feature_depth(base_width), rows, columns), np.float32)
    for start, batch in zip(range(0, len(images), CHUNK), iter_batches(images, CHUNK, width, height)):
        features[start:start + len(batch)] = session.run(None, {"input_1": batch})[0]
        if progress is not None:
            progress.update(len(batch))
    cov, bbox = _targets(images, split / "label_2", classes, width, height, rows, columns)

    # centre each channel and scale all by one factor (the graph does the same before the heads): one
    # factor, not one per channel, so that the ridge penalty keeps the heads off channels too faint to
    # survive INT8's one scale per tensor
    mean = features.mean(axis=(0, 2, 3), dtype=np.float64)
    std = np.full_like(mean, np.sqrt(np.mean(features.var(axis=(0, 2, 3), dtype=np.float64))) + 1e-6)
    features -= mean.astype(np.float32)[None, :, None, None]
    features /= std.astype(np.float32)[None, :, None, None]

    depth, num_classes = features.shape[1], len(classes)
    size = HEAD_KERNEL * HEAD_KERNEL * depth + 1
    gram, cov_moments = np.zeros((size, size)), np.zeros((size, num_classes))
    box_grams = np.zeros((num_classes, size, size))
    box_moments = np.zeros((num_classes, size, 4))
    cov_cells, box_cells = _cells(cov), _cells(bbox)
    for start in range(0, len(images), CHUNK):
        cells = _unfold(features[start:start + CHUNK])
        part = slice(start * rows * columns, (start + CHUNK) * rows * columns)
        gram += cells.T @ cells
        cov_moments += cells.T @ np.where(cov_cells[part] > 0, LOGIT, -LOGIT).astype(np.float32)
        for k in range(num_classes):
            covered = cells[cov_cells[part][:, k] > 0]
            box_grams[k] += covered.T @ covered
            box_moments[k] += covered.T @ box_cells[part][cov_cells[part][:, k] > 0, 4 * k:4 * k + 4]
    cov_weights = _solve(gram, cov_moments, len(cov_cells))
    box_weights = np.concatenate([_solve(box_grams[k], box_moments[k], int(np.sum(cov_cells[:, k] > 0)))
                                  for k in range(num_classes)], axis=1)

    logits = np.concatenate([_unfold(features[s:s + CHUNK]) @ cov_weights.astype(np.float32)
                             for s in range(0, len(images), CHUNK)])
    for k in range(num_classes):
        a, b = _logistic_calibration(logits[:, k].astype(np.float64), (cov_cells[:, k] > 0).astype(np.float64))
        cov_weights[:, k] *= a
        cov_weights[-1, k] += b

    build_model(path, width, height, num_classes, base_width, seed, heads={
        "scale": 1.0 / std, "shift": -mean / std,
        "output_cov": _as_conv(cov_weights, depth), "output_bbox": _as_conv(box_weights, depth)})
    return FitReport(len(images), len(cov_cells),
                     {name: int(np.sum(cov_cells[:, k] > 0)) for k, name in enumerate(classes)})


def _cells(maps: np.ndarray) -> np.ndarray:
    """(n, channels, rows, columns) -> (n * rows * columns, channels), in _unfold's cell order."""
    return maps.transpose(0, 2, 3, 1).reshape(-1, maps.shape[1])


def _targets(images: list[Path], label_dir: Path, classes: tuple[str, ...], width: int, height: int,
             rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    radii = [COV_RADII[name] for name in classes]
    cov = np.empty((len(images), len(classes), rows, columns), np.float32)
    bbox = np.empty((len(images), 4 * len(classes), rows, columns), np.float32)
    for index, image in enumerate(images):
        original_width, original_height = image_size(image)
        sx, sy = width / original_width, height / original_height
        boxes = [(classes.index(o.kind), (o.box[0] * sx, o.box[1] * sy, o.box[2] * sx, o.box[3] * sy))
                 for o in read_labels(label_dir / f"{image.stem}.txt") if o.kind in classes]
        cov[index], bbox[index] = coverage_targets(boxes, len(classes), rows, columns, radii)
    return cov, bbox
