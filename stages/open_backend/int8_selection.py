"""INT8 that passes (backend.calibration_method=auto): the calibration method, and the convolutions left in
higher precision, chosen by the mAP they measure on a selection set, not guessed.

No calibration method is right for every model: on a real TAO 5 DetectNet_v2, entropy (TensorRT's default,
TAO's only choice) kept mAP 0.0 of fp32's 0.36 where minmax lost nothing, and on the bundled sample it is the
other way round. The pipeline has what TensorRT's tools lack here: labels and TAO's metric. So:
1. one pass over the calibration batches gives every method's ranges (int8_calibration.collect_candidates);
2. each candidate's deployable INT8 model (the graph TensorRT builds from) is scored by mAP on the
   selection set: labelled training images, which the validation set that the gate judges never sees;
3. the best is kept (a tie goes to the method listed first in METHODS);
4. where it still loses more than evaluate.max_map_drop on the selection set, the convolutions are ranked
   by sensitivity: each is screened by how much of the output error it removes when it alone stays
   unquantized (on one batch: cheap), and the 2 x export.max_float_layers that remove most are measured by the
   selection mAP they give alone (output error and mAP disagree: a detector's coverage map is mostly
   background). The most sensitive are then left out of INT8, one more at a time, until the drop is within
   the gate or export.max_float_layers is reached.
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

from ..detectnet_v2.evaluation import EvaluationSetup, Sample, decoded_batches, evaluate
from ..detectnet_v2.inference import OnnxRunner
from ..detectnet_v2.spec_facts import SpecFacts
from ..formats.calibration_cache import scales_of
from ..formats.deployable_onnx import explicit_int8
from ..pipeline.errors import StageError
from ..pipeline.resolved_spec import images_of
from .int8_calibration import METHODS

log = logging.getLogger("stages.open")


@dataclass
class Selection:
    """What auto measured and chose: the export report's `calibration` section."""
    images: int
    selection_mAP: dict[str, float]  # fp32's and each candidate's, on the selection set
    chosen: str
    float_layers: list[str] = field(default_factory=list)  # convolutions left in higher precision
    final_mAP: float = 0.0  # the chosen method with those layers left out
    drop: float = 0.0  # fp32's selection mAP - final_mAP
    within_gate: bool | None = None  # None: the gate is off

    def report(self) -> dict:
        return {"method": "auto", **asdict(self)}


def selection_samples(facts: SpecFacts, count: int) -> list[Sample]:
    """`count` labelled training images, evenly spaced over the sorted list (the same ones every run), none
    of them a validation image."""
    validation = {p.resolve() for p in images_of(facts.validation_dirs, facts.image_extension)} \
        if facts.validation_dirs else set()
    images = [p for p in images_of(facts.training_dirs, facts.image_extension) if p.resolve() not in validation]
    if count > len(images):
        raise StageError(f"calibration.selection_images is {count}, but the spec's training images hold {len(images)} "
                         f"(outside the validation set): ask for at most {len(images)}")
    chosen = [images[i * len(images) // count] for i in range(count)]
    samples = []
    for image in chosen:
        label = image.parent.parent / "label_2" / f"{image.stem}.txt"
        if not label.is_file():
            raise StageError(
                f"backend.calibration_method is auto, which measures each calibration's mAP on labelled training "
                f"images, but {image} has no KITTI label {label} (label_2/ beside image_2/). Give the training "
                "images their labels, or choose a method: -S backend.calibration_method=entropy (or minmax, "
                "percentile)")
        samples.append(Sample(image, label))
    return samples


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

    def build(self, scales: Mapping[str, float], exclude=()) -> tuple[OnnxRunner, list[str]]:
        """The deployable INT8 model of these scales on onnxruntime, and the convolutions it quantizes."""
        deployable = explicit_int8(self.model, scales, self.high_precision, self.maxima, exclude)
        path = Path(self.folder.name) / "candidate.onnx"
        onnx.save(deployable.model, str(path))
        return OnnxRunner(path), deployable.quantized

    def runner(self, scales: Mapping[str, float], exclude=()) -> OnnxRunner:
        return self.build(scales, exclude)[0]

    def mean_aps(self, runners: dict) -> dict[str, float]:
        results = evaluate(runners, self.samples, self.setup, self.batch_size, decoded=self.batches)
        return {name: float(np.mean(list(result.average_precisions().values()))) for name, result in results.items()}

    def output_error(self, runner: OnnxRunner) -> float:
        """Relative squared error of the outputs against fp32's, on the first selection batch."""
        if self._reference_outputs is None:
            self._reference_outputs = self.reference(self.batches[0])
        return float(sum(np.sum((got - want) ** 2) / max(np.sum(want ** 2), 1e-12)
                         for got, want in zip(runner(self.batches[0]), self._reference_outputs)))


def choose(exported: Path, candidates: Mapping[str, Mapping[str, float]], samples: list[Sample],
           setup: EvaluationSetup, batch_size: int, high_precision: str, maxima: Mapping[str, float],
           max_drop: float | None, max_float_layers: int, workers: int | None = None, progress=None) -> Selection:
    """The candidate ({method: {tensor: amax}}) with the best selection mAP, and the convolutions to leave in
    higher precision so that its selection drop is within max_drop (see the module's docstring)."""
    scorer = _Scorer(exported, samples, setup, batch_size, high_precision, maxima, workers)
    scales = {method: scales_of(amax) for method, amax in candidates.items()}
    runners = {"fp32": scorer.reference, **{method: scorer.runner(scales[method]) for method in METHODS}}
    scores = scorer.mean_aps(runners)
    chosen = max(METHODS, key=lambda method: (scores[method], -METHODS.index(method)))
    if progress is not None:
        progress.update(1)
    selection = Selection(len(samples), {k: round(v, 6) for k, v in scores.items()}, chosen,
                          final_mAP=round(scores[chosen], 6))
    selection.drop = round(scores["fp32"] - scores[chosen], 6)
    log.info("calibration: auto measured mAP on %d selection images: fp32 %.4f, %s; %s kept", len(samples),
             scores["fp32"], ", ".join(f"{m} {scores[m]:.4f}" for m in METHODS), chosen)
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
    when alone unquantized, ordered by the selection mAP they then give."""
    everything, convolutions = scorer.build(scales)
    base = scorer.output_error(everything)
    gains = {conv: base - scorer.output_error(scorer.runner(scales, [conv])) for conv in convolutions}
    screened = sorted(convolutions, key=lambda conv: -gains[conv])[:measured]
    scores = {conv: scorer.mean_aps({"candidate": scorer.runner(scales, [conv])})["candidate"] for conv in screened}
    ranked = sorted(screened, key=lambda conv: (-scores[conv], -gains[conv]))
    log.info("calibration: selection mAP with one convolution left out of INT8: %s",
             ", ".join(f"{conv} {scores[conv]:.4f}" for conv in ranked))
    return ranked
