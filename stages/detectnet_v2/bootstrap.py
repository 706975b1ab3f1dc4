"""How sure the mAP drop is: a paired bootstrap over the validation images. Each resample draws as many
images as the set holds, with replacement, and scores the engine and the fp32 model on the same draw, so
that what the two share (the hard images, the easy ones) cancels and only where they differ spreads the
drop. The interval is the 2.5th and 97.5th percentile of the resampled drops.

A resample is a weight per image (how often it was drawn): each detection weighs what its image weighs, and
so does each ground-truth box, so that the KITTI AP of a resample is computed from the one tally of the
whole set, without matching again (matching is per image). Written with numpy over all resamples at once;
with every weight 1 it is kitti_metric.average_precision exactly (a test holds it)."""
from __future__ import annotations

import numpy as np

from .kitti_metric import CONFIDENCE_FLOOR, ClassTally

RESAMPLES = 1000  # the 2.5% and 97.5% percentiles barely move from seed to seed (bench/README.md, "Measurements
# behind the code")
SEED = 20261206  # fixed: the same inputs give the same interval on every run
LEVEL = 0.95
_CHUNK_CELLS = 4_000_000  # resamples x detections per numpy pass: bounds the memory at about 100 MiB


def resample_weights(images: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, images): how many times each image was drawn in each resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, images, size=(resamples, images))
    weights = np.zeros((resamples, images), np.float64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    return weights


def resampled_ap(tally: ClassTally, weights: np.ndarray, mode: str) -> np.ndarray:
    """The class's AP under each resample's image weights: (resamples,)."""
    counts = [len(c) for c in tally.confidences]
    if len(counts) != weights.shape[1]:
        raise ValueError(f"the tally holds {len(counts)} images, the weights {weights.shape[1]}")
    confidences = np.concatenate(tally.confidences) if counts else np.zeros(0)
    correct = np.concatenate(tally.correct).astype(np.float64) if counts else np.zeros(0)
    image = np.repeat(np.arange(len(counts)), counts)
    order = np.argsort(-confidences, kind="stable")  # as ClassTally.curve orders them
    kept = order[confidences[order] >= CONFIDENCE_FLOOR]
    correct, image = correct[kept], image[kept]
    positives = weights @ np.asarray(tally.image_positives, np.float64)
    result = np.zeros(len(weights))
    if not len(kept):
        return result
    step = max(1, _CHUNK_CELLS // len(kept))
    for start in range(0, len(weights), step):
        chunk = slice(start, start + step)
        result[chunk] = _ap(weights[chunk][:, image], correct, positives[chunk], mode)
    return result


def _ap(detection_weights: np.ndarray, correct: np.ndarray, positives: np.ndarray, mode: str) -> np.ndarray:
    """AP per row: detections in confidence order, each weighing what its image weighs in that row."""
    true_positives = np.cumsum(detection_weights * correct, axis=1)
    counted = np.cumsum(detection_weights, axis=1)
    precision = np.divide(true_positives, counted, out=np.zeros_like(counted), where=counted > 0)
    recall = np.divide(true_positives, positives[:, None], out=np.zeros_like(counted), where=positives[:, None] > 0)
    if mode == "sample":  # 11 points: the best precision at a recall of at least each
        best = np.zeros(len(recall))
        for threshold in np.linspace(0.0, 1.0, 11):
            best += np.max(np.where(recall >= threshold, precision, 0.0), axis=1)
        return best / 11
    envelope = np.maximum.accumulate(np.concatenate([precision, np.zeros((len(precision), 1))], axis=1)[:, ::-1],
                                     axis=1)[:, ::-1]
    steps = np.diff(np.concatenate([np.zeros((len(recall), 1)), recall], axis=1), axis=1)
    return np.sum(steps * envelope[:, :-1], axis=1)


def resampled_map(tallies: dict[str, ClassTally], classes: list[str], weights: np.ndarray, mode: str) -> np.ndarray:
    return np.mean([resampled_ap(tallies[name], weights, mode) for name in classes], axis=0)


def resampled_drops(reference: dict[str, ClassTally], engine: dict[str, ClassTally], classes: list[str],
                    mode: str, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """fp32's mAP minus the engine's under each paired resample of the validation images: (resamples,)."""
    images = len(next(iter(reference.values())).confidences)
    weights = resample_weights(images, resamples, seed)
    return resampled_map(reference, classes, weights, mode) - resampled_map(engine, classes, weights, mode)


def interval(drops: np.ndarray) -> tuple[float, float]:
    """The 95% interval of the resampled drops."""
    low, high = np.percentile(drops, [50 * (1 - LEVEL), 100 - 50 * (1 - LEVEL)])
    return round(float(low), 6), round(float(high), 6)


def map_drop_interval(reference: dict[str, ClassTally], engine: dict[str, ClassTally], classes: list[str],
                      mode: str, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The 95% paired bootstrap interval of fp32's mAP minus the engine's, over the validation images."""
    return interval(resampled_drops(reference, engine, classes, mode, resamples, seed))
