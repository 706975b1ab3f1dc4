"""KITTI average precision per class, as the spec's `evaluation_config` asks for it:
`minimum_detection_ground_truth_overlap` per class, `evaluation_box_config` filters, and
`average_precision_mode` SAMPLE (11 recall points, VOC 2007) or INTEGRATE (the area under the
precision envelope, VOC 2010).

With IoU 0.5 for every class, SAMPLE, and box filters that exclude nothing, this is TAO Deploy's
`KITTIMetric`: detections are matched to ground truth most confident first, each ground truth box at
most once; detections under 0.01 confidence are dropped; difficult ground truth is neither found nor
missed. Boxes outside a class's evaluation box (too small or too large) are left out of its count, as
ground truth and as detections, and a detection matched to such a ground truth box is neither right
nor wrong."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..spec import Spec

CONFIDENCE_FLOOR = 0.01  # TAO Deploy's KITTIMetric conf_thres


class EvaluationConfigError(ValueError):
    """An evaluation_config the metric cannot use. Names the spec and field."""


@dataclass(frozen=True)
class BoxFilter:
    minimum_height: float = 0.0
    maximum_height: float = float("inf")
    minimum_width: float = 0.0
    maximum_width: float = float("inf")

    def accepts(self, boxes: np.ndarray) -> np.ndarray:
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return ((height >= self.minimum_height) & (height <= self.maximum_height)
                & (width >= self.minimum_width) & (width <= self.maximum_width))


@dataclass(frozen=True)
class EvaluationConfig:
    overlap: dict[str, float] = field(default_factory=dict)  # class -> minimum IoU of a match
    boxes: dict[str, BoxFilter] = field(default_factory=dict)
    mode: str = "sample"  # "sample" | "integrate"

    def overlap_of(self, name: str) -> float:
        return self.overlap.get(name, 0.5)

    def filter_of(self, name: str) -> BoxFilter:
        return self.boxes.get(name, BoxFilter())


def evaluation_config(spec: Spec) -> EvaluationConfig:
    root = "evaluation_config"
    overlap = {}
    for index, key in enumerate(spec.find(f"{root}.minimum_detection_ground_truth_overlap[*].key", strict=False)):
        overlap[key.value.value] = _number(spec, f"{root}.minimum_detection_ground_truth_overlap[{index}].value")
    boxes = {}
    for index, key in enumerate(spec.find(f"{root}.evaluation_box_config[*].key", strict=False)):
        path = f"{root}.evaluation_box_config[{index}].value"
        limits = {name: _number(spec, f"{path}.{name}") for name in ("minimum_height", "maximum_height",
                                                                     "minimum_width", "maximum_width")
                  if spec.find(f"{path}.{name}", strict=False)}
        boxes[key.value.value] = BoxFilter(**limits)
    mode = spec.find(f"{root}.average_precision_mode", strict=False)
    text = mode[0].value.value if mode else "SAMPLE"
    if text not in ("SAMPLE", "INTEGRATE", "0", "1"):
        raise EvaluationConfigError(f"{spec.source}:{mode[0].line}: {root}.average_precision_mode is {text!r}, "
                                    "not SAMPLE or INTEGRATE")
    return EvaluationConfig(overlap, boxes, "integrate" if text in ("INTEGRATE", "1") else "sample")


def _number(spec: Spec, path: str) -> float:
    match = spec.find(path)[0]
    try:
        return float(match.value.value)
    except (ValueError, AttributeError):
        raise EvaluationConfigError(f"{spec.source}:{match.line}: {path} is not a number") from None


@dataclass
class ClassTally:
    """One class over a dataset: each detection's confidence and whether it was right, and how many
    ground truth boxes there were to find, image by image (for the bootstrap, which resamples images)."""
    confidences: list[np.ndarray] = field(default_factory=list)  # per image
    correct: list[np.ndarray] = field(default_factory=list)  # per image
    image_positives: list[int] = field(default_factory=list)  # per image

    @property
    def positives(self) -> int:
        return sum(self.image_positives)

    def add_image(self, truth: np.ndarray, difficult: np.ndarray, boxes: np.ndarray, confidences: np.ndarray,
                  overlap: float, box_filter: BoxFilter) -> None:
        """truth (m, 4), difficult (m,) bool, detections boxes (n, 4) with confidences (n,)."""
        ignored = difficult | ~box_filter.accepts(truth) if len(truth) else np.zeros(0, bool)
        self.image_positives.append(int(np.sum(~ignored)))
        wanted = box_filter.accepts(boxes) if len(boxes) else np.zeros(0, bool)
        boxes, confidences = boxes[wanted], confidences[wanted]
        counted, correct = [], []
        for i, match in zip(*greedy_matches(boxes, confidences, truth, overlap)):
            if match >= 0 and ignored[match]:
                continue  # matched to a ground truth box that does not count: neither right nor wrong
            counted.append(confidences[i])
            correct.append(bool(match >= 0))
        self.confidences.append(np.array(counted, float))
        self.correct.append(np.array(correct, bool))

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(recall, precision, confidence) after each detection, most confident first, those under
        CONFIDENCE_FLOOR dropped."""
        confidences = np.concatenate(self.confidences) if self.confidences else np.zeros(0)
        correct = np.concatenate(self.correct) if self.correct else np.zeros(0, bool)
        order = np.argsort(-confidences, kind="stable")
        confidences, correct = confidences[order], correct[order]
        kept = confidences >= CONFIDENCE_FLOOR
        confidences, correct = confidences[kept], correct[kept]
        true_positives = np.cumsum(correct)
        precision = true_positives / np.arange(1, len(correct) + 1)
        recall = true_positives / self.positives if self.positives else np.zeros(len(correct))
        return recall, precision, confidences


def average_precision(recall: np.ndarray, precision: np.ndarray, mode: str) -> float:
    if mode == "sample":
        points = np.linspace(0.0, 1.0, 11)
        return float(sum(np.max(precision[recall >= t]) if np.any(recall >= t) else 0.0 for t in points) / 11)
    recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def greedy_matches(boxes: np.ndarray, confidences: np.ndarray, truth: np.ndarray,
                   overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """How the metric matches one image's detections to its ground truth (and agreement.py an engine's boxes to
    fp32's): most confident first, each to the ground truth box of the largest IoU still free, if that IoU is at
    least `overlap`, each ground truth box at most once. Returns the detections' indices in that order and, for
    each, the index of the ground truth box it matched (-1: none)."""
    order = np.argsort(-confidences, kind="stable")
    matches = np.full(len(order), -1)
    if len(truth) and len(order):
        available = np.ones(len(truth), bool)
        for rank, row in enumerate(iou(boxes[order], truth)):
            overlaps = row * available
            best = int(np.argmax(overlaps))
            if overlaps[best] >= overlap:
                available[best] = False
                matches[rank] = best
    return order, matches


def iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(n, m): the IoU of each of `boxes` (n, 4) with each of `others` (m, 4), every pair at once."""
    box, other = boxes[:, None, :], others[None, :, :]
    width = np.maximum(0.0, np.minimum(box[..., 2], other[..., 2]) - np.maximum(box[..., 0], other[..., 0]))
    height = np.maximum(0.0, np.minimum(box[..., 3], other[..., 3]) - np.maximum(box[..., 1], other[..., 1]))
    intersection = width * height
    union = (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1]) \
        + (other[..., 2] - other[..., 0]) * (other[..., 3] - other[..., 1]) - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
