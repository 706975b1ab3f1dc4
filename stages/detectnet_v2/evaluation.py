"""Evaluating a DetectNet_v2 model as TAO Deploy's `detectnet_v2 evaluate` does: the validation images
preprocessed as its dataloader does them (Pillow, RGB, LANCZOS resize to the model input, /255, NCHW),
the raw outputs decoded and clustered per class by the spec's postprocessing_config, the detections
scaled to original-image pixels, and KITTI AP per class by the spec's evaluation_config, against KITTI
labels mapped through dataset_config.target_class_mapping. Unlike TAO Deploy's KITTI loader, ground
truth is not clipped to the model's input size (it is in original-image pixels, like the detections)."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..compute.workers import worker_count
from ..formats.kitti_labels import read_labels
from ..spec import Spec
from .kitti_metric import ClassTally, EvaluationConfig, average_precision, evaluation_config
from .postprocessing import Clustering, Detections, clustering_config
from .postprocessing import detect as detect_one
from .preprocessing import EVALUATION_RESAMPLE, image_size, iter_batches, list_images
from .spec_facts import target_classes


class ValidationSetError(ValueError):
    """A validation set the evaluation cannot use. Names the directory or file."""


@dataclass(frozen=True)
class EvaluationSetup:
    """What the spec says about evaluating: classes in the model's output order, which label names
    count as which class, each class's clustering, the metric, and the model's input size."""
    classes: list[str]
    mapping: dict[str, str]  # label name (lower case) -> target class
    clustering: dict[str, Clustering]
    metric: EvaluationConfig
    width: int
    height: int


def evaluation_setup(spec: Spec, width: int, height: int) -> EvaluationSetup:
    classes = target_classes(spec)
    if not classes:
        raise ValidationSetError(f"{spec.source}: the spec has no cost_function_config.target_classes, which name "
                                 "the model's classes in the order of its outputs")
    keys = spec.find("dataset_config.target_class_mapping[*].key", strict=False)
    values = spec.find("dataset_config.target_class_mapping[*].value", strict=False)
    mapping = {k.value.value.lower(): v.value.value.lower() for k, v in zip(keys, values)}
    lowered = {name.lower(): name for name in classes}
    mapping = {label: lowered[target] for label, target in mapping.items() if target in lowered}
    if not mapping:  # no mapping: each class stands for itself, as in TAO's KITTI conversion
        mapping = {name.lower(): name for name in classes}
    return EvaluationSetup(classes, mapping, clustering_config(spec, classes), evaluation_config(spec), width, height)


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path | None  # None: an image without labels (the calibration images), for agreement only


def validation_set(image_dir: Path, label_dir: Path, extension: str | None = None) -> list[Sample]:
    """Every image of image_dir with its KITTI label file from label_dir (same stem, .txt)."""
    if not label_dir.is_dir():
        raise ValidationSetError(f"the validation labels {label_dir} are not a directory (KITTI keeps them in "
                                 "label_2/ beside image_2/; set evaluate.label_dir to where they are)")
    images = list_images(image_dir, extension)
    missing = [image.name for image in images if not (label_dir / f"{image.stem}.txt").is_file()]
    if missing:
        listed = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValidationSetError(f"{len(missing)} validation image(s) of {image_dir} have no label file in "
                                 f"{label_dir}: {listed}")
    return [Sample(image, label_dir / f"{image.stem}.txt") for image in images]


@dataclass(frozen=True)
class LabelCensus:
    """What a set of KITTI label files holds: objects by label name as written, and the objects each target
    class counts (its label names through the mapping, difficult ones left out, as the metric counts them)."""
    where: str  # the label folder(s), for messages
    files: int
    by_name: dict[str, int]
    per_class: dict[str, int]

    def missing(self, classes: list[str]) -> list[str]:
        return [name for name in classes if not self.per_class.get(name)]

    def problem(self, classes: list[str], role: str) -> str | None:
        """One sentence naming each class with no object, and what the labels do hold; None if none."""
        missing = self.missing(classes)
        if not missing:
            return None
        held = ", ".join(f"{name} {count}" for name, count in sorted(self.by_name.items())) or "no object at all"
        if not self.by_name:
            return (f"the {role} labels in {self.where} hold no object at all ({self.files} label file(s)): there is "
                    "nothing to measure mAP on")
        return (f"the spec trains {', '.join(missing)}, but the {role} labels in {self.where} hold no "
                f"{'object of it' if len(missing) == 1 else 'object of these'} (they hold: {held}; difficult, that "
                "is occluded, objects do not count): map the label names to the classes in "
                "dataset_config.target_class_mapping, or label the images")

    def ignored(self, setup: "EvaluationSetup") -> dict[str, int]:
        """Label names the spec does not train (TAO ignores them)."""
        return {name: count for name, count in sorted(self.by_name.items()) if name.lower() not in setup.mapping}


def label_census(label_files: list[Path], setup: "EvaluationSetup", where: str) -> LabelCensus:
    by_name: dict[str, int] = {}
    per_class = {name: 0 for name in setup.classes}
    for path in label_files:
        for obj in read_labels(path):
            by_name[obj.kind] = by_name.get(obj.kind, 0) + 1
            target = setup.mapping.get(obj.kind.lower())
            if target is not None and obj.occluded == 0:
                per_class[target] += 1
    return LabelCensus(where, len(label_files), by_name, per_class)


def truth_of(sample: Sample, setup: EvaluationSetup) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{class: (boxes (m, 4), difficult (m,))}; labels of classes the mapping does not name are ignored.
    An occluded object (KITTI's occluded field not 0) is difficult, as TAO Deploy's KITTI loader marks
    it: neither found nor missed."""
    found: dict[str, list] = {name: [] for name in setup.classes}
    for obj in read_labels(sample.label) if sample.label is not None else ():
        target = setup.mapping.get(obj.kind.lower())
        if target is not None:
            found[target].append((obj.box, obj.occluded != 0))
    return {name: (np.array([box for box, _ in objects], float).reshape(-1, 4),
                   np.array([difficult for _, difficult in objects], bool))
            for name, objects in found.items()}


def detect(cov: np.ndarray, bbox: np.ndarray, setup: EvaluationSetup,
           image_size: tuple[int, int]) -> dict[str, Detections]:
    """One image's raw outputs -> {class: detections in original-image pixels}."""
    return detect_one(cov, bbox, setup.classes, setup.clustering, (setup.width, setup.height), image_size)


@dataclass
class Evaluation:
    """A model's detections on a validation set, tallied per class."""
    setup: EvaluationSetup
    tallies: dict[str, ClassTally] = field(default_factory=dict)
    detections: list[dict[str, Detections]] = field(default_factory=list)  # per image, in sample order

    def add(self, detections: dict[str, Detections], truth: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        for name in self.setup.classes:
            boxes, difficult = truth[name]
            self.tallies.setdefault(name, ClassTally()).add_image(
                boxes, difficult, detections[name].boxes, detections[name].confidences,
                self.setup.metric.overlap_of(name), self.setup.metric.filter_of(name))
        self.detections.append(detections)

    def average_precisions(self) -> dict[str, float]:
        return {name: average_precision(*self.tallies[name].curve()[:2], self.setup.metric.mode)
                for name in self.setup.classes}


@dataclass
class ModelResult:
    """A model's AP per class, and its Evaluation (detections, curves) when this project's evaluator
    produced it (TAO's evaluate reports APs only); its detections on the calibration images, unlabelled,
    where it ran on them (for the agreement with the fp32 model)."""
    aps: dict[str, float]
    evaluation: Evaluation | None = None
    calibration: list[dict[str, Detections]] | None = None

    @classmethod
    def of(cls, evaluation: Evaluation) -> "ModelResult":
        return cls(evaluation.average_precisions(), evaluation)


Infer = Callable[[np.ndarray], Sequence[np.ndarray]]  # batch -> (cov, bbox)


def decoded_batches(samples: list[Sample], setup: EvaluationSetup, batch_size: int,
                    workers: int | None = None) -> Iterator[np.ndarray]:
    """The samples' images as evaluation preprocesses them, in batches."""
    images = [sample.image for sample in samples]
    return iter_batches(images, batch_size, setup.width, setup.height, workers, resample=EVALUATION_RESAMPLE)


def evaluate(models: dict[str, Infer], samples: list[Sample], setup: EvaluationSetup, batch_size: int,
             workers: int | None = None, progress=None, decoded: Iterable[np.ndarray] | None = None
             ) -> dict[str, Evaluation]:
    """Each model over the same validation images, each image decoded once: {model name: Evaluation}.
    `decoded`: the batches decoded_batches gives, for a caller that evaluates the same images again.

    A batch's post-processing (decoding the grid, clustering, scaling) runs on `workers` threads while
    the engine runs the next batch: onnxruntime and the clustering's numba kernels release the GIL, and
    an image's post-processing is too short to repay a process's pickling (bench/README.md, "Measurements
    behind the code"). The tallies take each image in sample order, so the results are the serial ones exactly."""
    results = {name: Evaluation(setup) for name in models}
    batches = decoded if decoded is not None else decoded_batches(samples, setup, batch_size, workers)
    threads = worker_count(workers)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    in_flight: deque = deque()  # (model name, the images' detections (futures or values), truths)

    def post_process(cov: np.ndarray, bbox: np.ndarray, size: tuple[int, int]):
        return pool.submit(detect, cov, bbox, setup, size) if pool else _Done(detect(cov, bbox, setup, size))

    def tally_oldest() -> None:
        name, found, truths = in_flight.popleft()
        for detections, truth in zip(found, truths):
            results[name].add(detections.result(), truth)

    try:
        for start, batch in zip(range(0, len(samples), batch_size), batches):
            chunk = samples[start:start + len(batch)]
            sizes = [image_size(sample.image) for sample in chunk]
            truths = [truth_of(sample, setup) for sample in chunk]
            for name, infer in models.items():
                cov, bbox = infer(batch)
                in_flight.append((name, [post_process(cov[i], bbox[i], size) for i, size in enumerate(sizes)],
                                  truths))
                while len(in_flight) > len(models):  # what the previous batch found, while this one clusters
                    tally_oldest()
            if progress is not None:
                progress.update(len(batch))
        while in_flight:
            tally_oldest()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


class _Done:
    """A value with a Future's result(): post-processing done in the caller's thread (one worker)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value
