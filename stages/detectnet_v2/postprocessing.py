"""DetectNet_v2's post-processing, as TAO does it: the raw grid outputs decoded into one box per cell,
then clustered per class by the spec's `postprocessing_config` (DBSCAN, NMS or HYBRID), and scaled to
original-image pixels.

Where TAO Deploy's code (nvidia_tao_deploy/cv/detectnet_v2/utils.py) is right, this matches it: the
cells' order, DBSCAN (TAO runs scikit-learn's; dbscan_labels gives its labels) with distance 1 - IoU
(IoU regularised by 0.01) and the coverages as sample weights, coverage-weighted box means, the summed coverage as a cluster's confidence, TAO's NMS
overlap (pixel areas with +1). Where it is wrong, this does the right thing: TAO's NMS decays and sorts
the coverage array in place and then reports coverages of other boxes as the kept boxes' confidences,
and it skips `minimum_bounding_box_height`; here a kept box keeps its own coverage and the minimum
height applies to every algorithm."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..spec import Spec
from .grid import BBOX_NORM, cell_centres

ALGORITHMS = {"DBSCAN": "dbscan", "NMS": "nms", "HYBRID": "hybrid", "0": "dbscan", "1": "nms", "2": "hybrid"}
CLUSTERING_PATH = "postprocessing_config.target_class_config"


class PostprocessingError(ValueError):
    """A postprocessing_config the evaluation cannot use. Names the spec, line and field."""


@dataclass(frozen=True)
class Clustering:
    """One class's clustering_config, with TAO Deploy's defaults for what the spec leaves unset."""
    algorithm: str = "dbscan"
    coverage_threshold: float = 0.0
    dbscan_eps: float = 0.0
    dbscan_min_samples: float = 0.0
    minimum_bounding_box_height: float = 0.0
    dbscan_confidence_threshold: float = 0.1
    nms_iou_threshold: float = 0.3
    nms_confidence_threshold: float = 0.1


@dataclass
class Detections:
    """One image's detections of one class: boxes (n, 4) x1 y1 x2 y2, confidences (n,)."""
    boxes: np.ndarray
    confidences: np.ndarray

    @classmethod
    def none(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0))


def clustering_config(spec: Spec, classes: list[str]) -> dict[str, Clustering]:
    """Each target class's clustering, from its target_class_config entry or the `default` one."""
    entries: dict[str, Clustering] = {}
    keys = spec.find(f"{CLUSTERING_PATH}[*].key", strict=False)
    for index, key in enumerate(keys):
        name = key.value.value
        if name not in classes and name != "default":
            raise PostprocessingError(
                f"{spec.source}:{key.line}: {CLUSTERING_PATH}[{index}] is for {name!r}, which is not a target "
                f"class (cost_function_config.target_classes: {', '.join(classes)})")
        entries[name] = _clustering(spec, f"{CLUSTERING_PATH}[{index}].value.clustering_config")
    missing = [name for name in classes if name not in entries]
    if missing and "default" not in entries:
        raise PostprocessingError(
            f"{spec.source}: {CLUSTERING_PATH} has no entry for {', '.join(map(repr, missing))} and no 'default' "
            "entry to fall back on (TAO falls back to 'default'): add a target_class_config for each")
    return {name: entries.get(name, entries.get("default")) for name in classes}


def _clustering(spec: Spec, path: str) -> Clustering:
    values = {}
    for name in ("clustering_algorithm", "coverage_threshold", "dbscan_eps", "dbscan_min_samples",
                 "minimum_bounding_box_height", "dbscan_confidence_threshold", "nms_iou_threshold",
                 "nms_confidence_threshold"):
        found = spec.find(f"{path}.{name}", strict=False)
        if not found:
            continue
        text = found[0].value.value
        if name == "clustering_algorithm":
            if text not in ALGORITHMS:
                raise PostprocessingError(f"{spec.source}:{found[0].line}: {path}.{name} is {text!r}, not one of "
                                          "DBSCAN, NMS, HYBRID")
            values["algorithm"] = ALGORITHMS[text]
            continue
        try:
            number = float(text)
        except ValueError:
            raise PostprocessingError(f"{spec.source}:{found[0].line}: {path}.{name} is {text!r}, "
                                      "not a number") from None
        # TAO Deploy reads an unset (zero) NMS threshold as its default
        if number or not name.startswith("nms_"):
            values[name] = number
    return Clustering(**values)


# --------------------------------------------------------------------------- decoding

def decode(cov: np.ndarray, bbox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's raw outputs, cov (C, rows, columns) and bbox (4C, rows, columns), as one box per
    cell in input pixels: (boxes (C, cells, 4), coverages (C, cells)). Cells are in TAO's order,
    column by column."""
    classes, rows, columns = cov.shape
    cx, cy = cell_centres(rows, columns)
    raw = bbox.reshape(classes, 4, rows, columns).astype(np.float64) * BBOX_NORM
    boxes = np.stack([cx[None, None, :] - raw[:, 0], cy[None, :, None] - raw[:, 1],
                      cx[None, None, :] + raw[:, 2], cy[None, :, None] + raw[:, 3]], axis=-1)
    # (C, rows, columns, 4) -> column-major cells, as TAO flattens its (W, H) maps
    return (boxes.transpose(0, 2, 1, 3).reshape(classes, rows * columns, 4),
            cov.astype(np.float64).transpose(0, 2, 1).reshape(classes, rows * columns))


# --------------------------------------------------------------------------- clustering

def cluster(boxes: np.ndarray, coverages: np.ndarray, config: Clustering) -> Detections:
    """One class's cell boxes and coverages of one image, clustered as `config` says, most confident
    first."""
    keep = coverages > config.coverage_threshold
    boxes, coverages = boxes[keep], coverages[keep]
    if not len(coverages):
        return Detections.none()
    if config.algorithm == "nms":
        found = _nms(boxes, coverages, config)
    else:
        found, members = _dbscan(boxes, coverages, config)
        if config.algorithm == "hybrid":
            candidates = np.concatenate(members) if members else np.zeros(0, int)
            found = _nms(boxes[candidates], coverages[candidates], config) if len(candidates) else Detections.none()
    order = np.argsort(-found.confidences, kind="stable")
    return Detections(found.boxes[order], found.confidences[order])


def _iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU, regularised by 0.01 as TAO's iou_vectorized (no NaN for empty boxes)."""
    left, top, right, bottom = boxes.T
    width = np.maximum(0, np.minimum(right[:, None], right[None, :]) - np.maximum(left[:, None], left[None, :]))
    height = np.maximum(0, np.minimum(bottom[:, None], bottom[None, :]) - np.maximum(top[:, None], top[None, :]))
    intersection = width * height
    areas = (right - left) * (bottom - top)
    return intersection / (areas[:, None] + areas[None, :] - intersection + 0.01)


@numba.njit(cache=True, nogil=True)
def _near_pairs(boxes: np.ndarray, by_left: np.ndarray, eps: float, count_only: bool, rows: np.ndarray,
                columns: np.ndarray, distances: np.ndarray) -> int:
    """The pairs (i, j) whose distance 1 - IoU is at most eps (< 1, so they intersect), both ways, and
    every (i, i), with the same float64 operations as _iou_matrix (so the same bits). A sweep over the
    boxes in order of their left edge (`by_left`) stops at the first that starts right of box i: no
    later one can intersect it. Fills the arrays unless count_only; returns the count."""
    found = 0
    n = by_left.shape[0]
    for a in range(n):
        i = by_left[a]
        area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        for b in range(a, n):
            j = by_left[b]
            if boxes[j, 0] > boxes[i, 2] and j != i:
                break
            width = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            height = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            intersection = width * height
            area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            distance = 1.0 - intersection / (area_i + area_j - intersection + 0.01)
            if i == j:  # the diagonal with its true distance, as the dense matrix has it
                if not count_only:
                    rows[found], columns[found], distances[found] = i, i, distance
                found += 1
            elif distance <= eps:  # symmetric to the last bit: float addition commutes
                if not count_only:
                    rows[found], columns[found], distances[found] = i, j, distance
                    rows[found + 1], columns[found + 1], distances[found + 1] = j, i, distance
                found += 2
    return found


def _neighbourhoods(boxes: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each box's neighbours, the boxes within distance 1 - IoU <= eps of it (itself included where its own
    distance is within eps, as in TAO's dense matrix), as CSR arrays: box i's are
    columns[starts[i]:starts[i + 1]], in ascending order. Where eps < 1 only intersecting boxes can be
    neighbours (the others are 1 apart), so a sweep finds them without the dense matrix (at KITTI's size,
    1872 cells, that matrix cost more than inference: bench/README.md, "Measurements behind the code"); else
    the dense matrix."""
    n = len(boxes)
    if eps >= 1.0:
        rows, columns = np.nonzero(1.0 - _iou_matrix(boxes) <= eps)
    else:
        boxes = np.ascontiguousarray(boxes, dtype=np.float64)
        by_left = np.argsort(boxes[:, 0], kind="stable")
        empty = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
        count = _near_pairs(boxes, by_left, eps, True, *empty)
        rows, columns, distances = np.zeros(count, np.int64), np.zeros(count, np.int64), np.zeros(count, np.float64)
        _near_pairs(boxes, by_left, eps, False, rows, columns, distances)
        within = distances <= eps  # the diagonal is written whatever its distance
        order = np.lexsort((columns[within], rows[within]))
        rows, columns = rows[within][order], columns[within][order]
    return np.searchsorted(rows, np.arange(n + 1)), np.ascontiguousarray(columns, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _expand_clusters(core: np.ndarray, starts: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """DBSCAN's labelling, as scikit-learn's dbscan_inner does it: clusters numbered in the order of their
    first core point; a depth-first search from it labels every point it reaches and expands the core ones;
    a border point reached by two clusters stays in the first. -1: noise."""
    n = core.shape[0]
    labels = np.full(n, -1, np.int64)
    stack = np.empty(columns.shape[0] + 1, np.int64)  # a point is pushed once per core neighbour at most
    label = 0
    for first in range(n):
        if labels[first] != -1 or not core[first]:
            continue
        i, top = first, 0
        while True:
            if labels[i] == -1:
                labels[i] = label
                if core[i]:
                    for k in range(starts[i], starts[i + 1]):
                        if labels[columns[k]] == -1:
                            stack[top] = columns[k]
                            top += 1
            if top == 0:
                break
            top -= 1
            i = stack[top]
        label += 1
    return labels


def dbscan_labels(boxes: np.ndarray, weights: np.ndarray, eps: float, min_samples: float) -> np.ndarray:
    """scikit-learn's DBSCAN(eps, min_samples, metric="precomputed").fit_predict(1 - IoU, sample_weight=weights),
    as TAO runs it, without the library's per-point Python: a core point's neighbours' weights sum to at
    least min_samples. (scikit-learn's DBSCAN made 90,000 small numpy calls per 16 images at KITTI's size,
    95% of the post-processing.) tests/test_postprocessing_and_metric.py holds the labels equal."""
    starts, columns = _neighbourhoods(boxes, eps)
    rows = np.repeat(np.arange(len(boxes)), np.diff(starts))
    core = np.bincount(rows, weights=np.asarray(weights, np.float64)[columns], minlength=len(boxes)) >= min_samples
    return _expand_clusters(core, starts, columns)


def _dbscan(boxes: np.ndarray, coverages: np.ndarray, config: Clustering) -> tuple[Detections, list[np.ndarray]]:
    labels = dbscan_labels(boxes, coverages, config.dbscan_eps + 1e-12, max(int(config.dbscan_min_samples), 1))
    # every cluster at once (a loop over clusters is quadratic where every cell is a candidate):
    # its coverage-weighted mean box and its total coverage, in label order
    clustered = labels >= 0
    if not clustered.any():
        return Detections.none(), []
    labels, boxes, coverages = labels[clustered], boxes[clustered], coverages[clustered]
    totals = np.bincount(labels, weights=coverages)
    sums = np.stack([np.bincount(labels, weights=boxes[:, k] * coverages, minlength=len(totals))
                     for k in range(4)], axis=1)
    present = totals > 0  # labels DBSCAN did not use (all of a cluster's coverage cannot be 0: it passed the threshold)
    means = sums[present] / totals[present, None]
    kept = ~((means[:, 3] - means[:, 1] <= config.minimum_bounding_box_height)
             | (totals[present] < config.dbscan_confidence_threshold))
    if not kept.any():
        return Detections.none(), []
    kept_labels = np.flatnonzero(present)[kept]
    original = np.flatnonzero(clustered)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], kept_labels)
    ends = np.searchsorted(labels[order], kept_labels, side="right")
    members = [original[order[a:b]] for a, b in zip(starts, ends)]
    return Detections(means[kept], totals[present][kept]), members


def _nms(boxes: np.ndarray, coverages: np.ndarray, config: Clustering) -> Detections:
    """Greedy NMS, most covered first: a box is dropped when it overlaps a kept one by more than
    nms_iou_threshold (TAO's overlap: pixel areas, +1); kept boxes above nms_confidence_threshold and
    taller than minimum_bounding_box_height are returned with their own coverage."""
    order = np.argsort(-coverages, kind="stable")
    left, top, right, bottom = boxes.T
    areas = (right - left + 1) * (bottom - top + 1)
    suppressed = np.zeros(len(boxes), bool)
    kept = []
    for position, i in enumerate(order):
        if suppressed[i]:
            continue
        kept.append(i)
        rest = order[position + 1:]
        width = np.maximum(0.0, np.minimum(right[i], right[rest]) - np.maximum(left[i], left[rest]) + 1)
        height = np.maximum(0.0, np.minimum(bottom[i], bottom[rest]) - np.maximum(top[i], top[rest]) + 1)
        intersection = width * height
        suppressed[rest[intersection / (areas[i] + areas[rest] - intersection) > config.nms_iou_threshold]] = True
    kept = np.array(kept, int)
    kept = kept[(coverages[kept] > config.nms_confidence_threshold)
                & (bottom[kept] - top[kept] > config.minimum_bounding_box_height)]
    return Detections(boxes[kept], coverages[kept])


# --------------------------------------------------------------------------- one image, end to end

def detect(cov: np.ndarray, bbox: np.ndarray, classes: list[str], clustering: dict[str, Clustering],
           input_size: tuple[int, int], image_size: tuple[int, int]) -> dict[str, Detections]:
    """One image's raw outputs -> {class: detections in original-image pixels}: what the evaluate stage
    scores and what the Triton post-processing model answers."""
    boxes, coverages = decode(cov, bbox)
    return {name: to_image_pixels(cluster(boxes[k], coverages[k], clustering[name]), input_size, image_size)
            for k, name in enumerate(classes)}


# --------------------------------------------------------------------------- to the original image

def to_image_pixels(found: Detections, input_size: tuple[int, int], image_size: tuple[int, int]) -> Detections:
    """Boxes clipped to the model input (width, height), then scaled to the original image's pixels."""
    width, height = input_size
    x1 = np.clip(found.boxes[:, 0], 0, width)
    y1 = np.clip(found.boxes[:, 1], 0, height)
    x2 = np.maximum(np.minimum(found.boxes[:, 2], width), x1)
    y2 = np.maximum(np.minimum(found.boxes[:, 3], height), y1)
    sx, sy = image_size[0] / width, image_size[1] / height
    return Detections(np.stack([x1 * sx, y1 * sy, x2 * sx, y2 * sy], axis=1), found.confidences)
