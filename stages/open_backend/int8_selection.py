"""INT8 that passes (backend.calibration_method=auto): the calibration method, and the convolutions left in
higher precision, chosen by the mAP they measure on a selection set, not guessed.

No calibration method is right for every model: on a real TAO 5 DetectNet_v2, entropy (TensorRT's default,
TAO's only choice) kept mAP 0.0 of fp32's 0.36 where minmax lost nothing, and on the bundled sample it is the
other way round. The pipeline has what TensorRT's tools lack here: labels and TAO's metric. So:
1. one pass over the calibration batches gives every method's ranges (quantization.calibrate.collect_candidates);
2. each candidate's deployable INT8 model (the graph TensorRT builds from) is run on the selection set:
   labelled training images, which the validation set that the gate judges never sees. It is scored by
   how far its boxes agree with fp32's on those images (F1 at IoU 0.5 over every box, labelled or not:
   detectnet_v2/agreement.py), less the mAP it loses on their labels. On a few dozen labelled objects mAP
   moves in steps of several hundredths, so mAP alone let a method that tied fp32 on the labels but
   disagreed with it elsewhere win (on 24 images of NVIDIA's LPDNet, percentile tied fp32's selection
   mAP and then lost half of it on validation);
3. the best is kept (a tie goes to the method listed first in METHODS);
4. where it still loses more than evaluate.max_map_drop on the selection set, the convolutions are ranked
   by sensitivity: each is screened by how much of the output error it removes when it alone stays in
   higher precision (on one batch: cheap), and the 2 x export.max_float_layers that remove most are
   measured by the selection mAP they give alone (output error and mAP disagree: a detector's coverage map
   is mostly background). The most sensitive become float layers (left out of INT8), one more at a time,
   until the drop is within the gate or export.max_float_layers is reached.
Everything runs on onnxruntime on the CPU: the mAP of the deployable ONNX is the mAP TensorRT's engine of it
has, to within kernels' rounding."""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from ..detectnet_v2.agreement import agreement
from ..detectnet_v2.evaluation import EvaluationSetup, Sample, decoded_batches, evaluate, label_census
from ..detectnet_v2.inference import OnnxRunner
from ..detectnet_v2.spec_facts import SpecFacts
from ..formats.calibration_cache import scales_of
from ..pipeline.errors import StageError
from ..pipeline.resolved_spec import evenly_spaced, shown, training_images
from ..quantization.int8_rewrite import explicit_int8
from ..quantization.thresholds import METHODS

log = logging.getLogger("stages.open")


@dataclass
class Selection:
    """What auto measured and chose: the export report's `calibration` section."""
    images: int
    selection_mAP: dict[str, float]  # fp32's and each candidate's, on the selection set
    chosen: str
    selection_agreement: dict[str, float]  # each candidate's F1 against fp32's boxes on the selection images
    images_available: int = 0  # the training images outside the validation set: the most a selection may take
    float_layers: list[str] = field(default_factory=list)  # convolutions left in higher precision
    final_mAP: float = 0.0  # the chosen method with those layers left out
    drop: float = 0.0  # fp32's selection mAP - final_mAP
    within_gate: bool | None = None  # None: the gate is off

    def report(self) -> dict:
        return {"method": "auto", **asdict(self)}


def selection_samples(facts: SpecFacts, count: int, setup: EvaluationSetup | None = None) -> list[Sample]:
    """`count` labelled training images, evenly spaced over the sorted list (the same ones every run), none
    of them a validation image; all of them, with a warning, where there are fewer. With `setup`, every
    class the spec trains must have objects in their labels (else a StageError names the class)."""
    images = training_images(facts)
    if count > len(images):
        log.warning("calibration: calibration.selection_images is %d, but the spec's training images hold %d (outside "
                    "the validation set): auto selects on all %d", count, len(images), len(images))
    samples = []
    for image in evenly_spaced(images, count):
        label = image.parent.parent / "label_2" / f"{image.stem}.txt"
        if not label.is_file():
            raise StageError(
                f"backend.calibration_method is auto, which measures each calibration's mAP on labelled training "
                f"images, but {image} has no KITTI label {label} (label_2/ beside image_2/). Give the training "
                "images their labels, or choose a method: -S backend.calibration_method=entropy (or minmax, "
                "percentile)")
        samples.append(Sample(image, label))
    if setup is not None and samples:
        folders = sorted({str(shown(sample.label.parent)) for sample in samples})
        problem = label_census([sample.label for sample in samples], setup, ", ".join(folders)).problem(
            setup.classes, f"{len(samples)} selection images'")
        if problem:
            raise StageError(f"{problem} (backend.calibration_method auto measures mAP on them)")
    return samples


@dataclass(frozen=True)
class Score:
    mAP: float  # on the selection set's labels
    agreement: float  # F1 of the boxes against fp32's on the same images, labels or not

    def merit(self, fp32_map: float) -> float:
        """What auto ranks candidates by: the agreement, less the mAP lost on the labels (never credit for
        beating fp32 on a few labelled boxes)."""
        return self.agreement - max(0.0, fp32_map - self.mAP)


class _Scorer:
    """Deployable INT8 models of one exported model, scored on the selection set decoded once."""

    def __init__(self, exported: Path, samples: list[Sample], setup: EvaluationSetup, batch_size: int,
                 high_precision: str, maxima: Mapping[str, float], workers: int | None):
        self.model, self.samples, self.setup = onnx.load(str(exported)), samples, setup
        self.batch_size, self.high_precision, self.maxima = batch_size, high_precision, maxima
        self.batches = list(decoded_batches(samples, setup, batch_size, workers))
        self.folder = tempfile.TemporaryDirectory()
        self.reference = OnnxRunner(exported)
        self._reference_outputs: list[np.ndarray] | None = None  # fp32's on the first batch: fallback only
        self._fp32_detections: list | None = None

    def build(self, scales: Mapping[str, float], float_layers=()) -> tuple[OnnxRunner, list[str]]:
        """The deployable INT8 model of these scales on onnxruntime, and the convolutions it quantizes (all but
        `float_layers`)."""
        deployable = explicit_int8(self.model, scales, self.high_precision, self.maxima, float_layers)
        path = Path(self.folder.name) / "candidate.onnx"
        onnx.save(deployable.model, str(path))
        return OnnxRunner(path), deployable.quantized

    def runner(self, scales: Mapping[str, float], float_layers=()) -> OnnxRunner:
        return self.build(scales, float_layers)[0]

    def mean_aps(self, runners: dict) -> dict[str, float]:
        return {name: score.mAP for name, score in self.measure(runners).items()}

    def measure(self, runners: dict) -> dict[str, Score]:
        """Each model's selection mAP and the agreement of its boxes with fp32's on the selection images (fp32's
        own detections from the first call, which must include it as "fp32")."""
        results = evaluate(runners, self.samples, self.setup, self.batch_size, decoded=self.batches)
        if self._fp32_detections is None:
            self._fp32_detections = results["fp32"].detections
        return {name: Score(float(np.mean(list(result.average_precisions().values()))),
                            agreement(result.detections, self._fp32_detections, self.setup.classes).f1)
                for name, result in results.items()}

    def output_error(self, runner: OnnxRunner) -> float:
        """Relative squared error of the outputs against fp32's, on the first selection batch."""
        if self._reference_outputs is None:
            self._reference_outputs = self.reference(self.batches[0])
        return float(sum(np.sum((got - want) ** 2) / max(np.sum(want ** 2), 1e-12)
                         for got, want in zip(runner(self.batches[0]), self._reference_outputs)))


def choose(exported: Path, candidates: Mapping[str, Mapping[str, float]], samples: list[Sample],
           setup: EvaluationSetup, batch_size: int, high_precision: str, maxima: Mapping[str, float],
           max_drop: float | None, max_float_layers: int, workers: int | None = None, progress=None,
           images_available: int = 0) -> Selection:
    """The candidate ({method: {tensor: amax}}) whose boxes agree best with fp32's on the selection images, less
    the selection mAP it loses (Score.merit), and the convolutions to leave in higher precision so that its
    selection drop is within max_drop (see the module's docstring). images_available: the training images
    the selection could have taken, for the report (the gate's advice offers more only where there are)."""
    scorer = _Scorer(exported, samples, setup, batch_size, high_precision, maxima, workers)
    scales = {method: scales_of(amax) for method, amax in candidates.items()}
    runners = {"fp32": scorer.reference, **{method: scorer.runner(scales[method]) for method in METHODS}}
    measured = scorer.measure(runners)
    scores = {name: score.mAP for name, score in measured.items()}
    merits = {method: round(measured[method].merit(scores["fp32"]), 6) for method in METHODS}
    chosen = max(METHODS, key=lambda method: (merits[method], -METHODS.index(method)))
    if progress is not None:
        progress.update(1)
    selection = Selection(len(samples), {k: round(v, 6) for k, v in scores.items()}, chosen,
                          {method: round(measured[method].agreement, 6) for method in METHODS},
                          max(images_available, len(samples)), final_mAP=round(scores[chosen], 6))
    selection.drop = round(scores["fp32"] - scores[chosen], 6)
    log.info("calibration: auto measured on %d selection images: fp32 mAP %.4f; %s; %s kept (the best agreement "
             "less mAP lost)", len(samples), scores["fp32"],
             "; ".join(f"{m} mAP {scores[m]:.4f}, agreement F1 {measured[m].agreement:.3f}" for m in METHODS), chosen)
    if max_drop is None:
        return selection
    if selection.drop <= max_drop or max_float_layers == 0:
        selection.within_gate = selection.drop <= max_drop
        return selection
    ranked = _ranked_by_sensitivity(scorer, scales[chosen], 2 * max_float_layers)
    best = (selection.drop, [])
    for count in range(1, min(max_float_layers, len(ranked)) + 1):
        layers = ranked[:count]
        score = scorer.mean_aps({"candidate": scorer.runner(scales[chosen], layers)})["candidate"]
        drop = round(scores["fp32"] - score, 6)
        log.info("calibration: %s with %s in higher precision: selection mAP %.4f (drop %.4f)", chosen,
                 ", ".join(layers), score, drop)
        if drop < best[0]:
            best = (drop, layers)
        if drop <= max_drop:
            break
    selection.drop, selection.float_layers = best[0], list(best[1])
    selection.final_mAP = round(scores["fp32"] - best[0], 6)
    selection.within_gate = best[0] <= max_drop
    if not selection.within_gate:
        log.warning("calibration: no %d or fewer convolutions in higher precision bring %s within "
                    "evaluate.max_map_drop %s on the selection set: the best drop found is %.4f, with %s; the gate "
                    "decides on the validation set", max_float_layers, chosen, max_drop, best[0],
                    ", ".join(best[1]) or "every convolution in INT8")
    return selection


def _ranked_by_sensitivity(scorer: _Scorer, scales: Mapping[str, float], measured: int) -> list[str]:
    """The quantized convolutions, most sensitive first: the `measured` ones that remove most output error
    when alone left in higher precision (a float layer), ordered by the selection mAP they then give."""
    everything, convolutions = scorer.build(scales)
    base = scorer.output_error(everything)
    gains = {conv: base - scorer.output_error(scorer.runner(scales, [conv])) for conv in convolutions}
    screened = sorted(convolutions, key=lambda conv: -gains[conv])[:measured]
    scores = {conv: scorer.mean_aps({"candidate": scorer.runner(scales, [conv])})["candidate"] for conv in screened}
    ranked = sorted(screened, key=lambda conv: (-scores[conv], -gains[conv]))
    log.info("calibration: selection mAP with one convolution left out of INT8: %s",
             ", ".join(f"{conv} {scores[conv]:.4f}" for conv in ranked))
    return ranked
