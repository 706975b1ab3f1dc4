"""How far an engine's detections are from the fp32 model's, with no labels: on each image, each class's
engine boxes are matched to the reference's at IoU 0.5 (most confident first, each reference box at most
once, as the KITTI metric matches detections to ground truth), after the spec's clustering and
thresholds and the metric's confidence floor. Precision is the share of the engine's boxes that fp32
also found, recall the share of fp32's boxes the engine also found, F1 their harmonic mean
(2 matched / (engine boxes + fp32 boxes)). A class neither model found anything of agrees fully.

The labelled validation set counts only the boxes of labelled objects; this counts every box of every
image, the calibration images' too, so it resolves far finer differences than mAP on a few dozen images."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .kitti_metric import CONFIDENCE_FLOOR, greedy_matches
from .postprocessing import Detections

MATCH_IOU = 0.5


@dataclass
class Counts:
    """Boxes matched, the engine's boxes, fp32's boxes."""
    matched: int = 0
    engine: int = 0
    reference: int = 0

    def __iadd__(self, other: "Counts") -> "Counts":
        self.matched += other.matched
        self.engine += other.engine
        self.reference += other.reference
        return self

    @property
    def unmatched(self) -> int:
        return self.engine + self.reference - 2 * self.matched

    def report(self) -> dict:
        precision = self.matched / self.engine if self.engine else 1.0 if not self.reference else 0.0
        recall = self.matched / self.reference if self.reference else 1.0 if not self.engine else 0.0
        boxes = self.engine + self.reference
        return {"precision": round(precision, 6), "recall": round(recall, 6),
                "F1": round(2 * self.matched / boxes if boxes else 1.0, 6),
                "boxes": {"engine": self.engine, "fp32": self.reference, "matched": self.matched}}


def matched_boxes(engine: Detections, reference: Detections, overlap: float = MATCH_IOU) -> Counts:
    """One image's boxes of one class: how many of the engine's match one of fp32's, as the metric matches
    detections to ground truth (kitti_metric.greedy_matches)."""
    kept = engine.confidences >= CONFIDENCE_FLOOR
    reference_boxes = reference.boxes[reference.confidences >= CONFIDENCE_FLOOR]
    _, matches = greedy_matches(engine.boxes[kept], engine.confidences[kept], reference_boxes, overlap)
    return Counts(int(np.sum(matches >= 0)), int(np.sum(kept)), len(reference_boxes))


@dataclass
class Agreement:
    """Per class and overall, and each image's unmatched boxes (the images the two disagree most on)."""
    classes: list[str]
    per_class: dict[str, Counts] = field(default_factory=dict)
    per_image: list[int] = field(default_factory=list)  # unmatched boxes, in image order

    @property
    def overall(self) -> Counts:
        total = Counts()
        for counts in self.per_class.values():
            total += counts
        return total

    @property
    def f1(self) -> float:
        return self.overall.report()["F1"]

    def report(self) -> dict:
        return {"images": len(self.per_image), **self.overall.report(),
                "per_class": {name: self.per_class[name].report() for name in self.classes}}

    def most_disagreeing(self, count: int) -> list[int]:
        """Indices of the `count` images with the most unmatched boxes (at least one), most first."""
        order = sorted(range(len(self.per_image)), key=lambda i: (-self.per_image[i], i))
        return [i for i in order[:count] if self.per_image[i] > 0]

    def __iadd__(self, other: "Agreement") -> "Agreement":
        for name in self.classes:
            self.per_class[name] += other.per_class[name]
        self.per_image += other.per_image
        return self


def combined(parts: Iterable[Agreement], classes: list[str]) -> Agreement:
    """Several sets of images' agreement as one: counts summed, images in the parts' order."""
    total = Agreement(list(classes), {name: Counts() for name in classes})
    for part in parts:
        total += part
    return total


def agreement(engine: Sequence[dict[str, Detections]], reference: Sequence[dict[str, Detections]],
              classes: list[str]) -> Agreement:
    """The engine's detections against fp32's, image by image (the same images, in the same order)."""
    if len(engine) != len(reference):
        raise ValueError(f"the engine has detections of {len(engine)} images, fp32 of {len(reference)}")
    result = Agreement(list(classes), {name: Counts() for name in classes})
    for found, wanted in zip(engine, reference):
        unmatched = 0
        for name in classes:
            counts = matched_boxes(found[name], wanted[name])
            result.per_class[name] += counts
            unmatched += counts.unmatched
        result.per_image.append(unmatched)
    return result
