"""Stage `evaluate`: does the deployed engine still detect? KITTI AP per class of the engine and of the
fp32 exported model (the reference) on the spec's validation set, decoded and clustered as TAO does,
in artifacts/reports/evaluate.json (the `metrics` stage publishes it as DVC metrics); precision-recall
curves per class and detections drawn on a few images, as DVC plots; and a gate: when the engine's mAP
drops more than evaluate.max_map_drop below the reference's, the stage fails (on_gate_failure=stop) or
records the verdict `"gate": "fail"` (record), so that a comparison of experiments shows each one's
own figures and verdict."""
from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from omegaconf import DictConfig

from .detectnet_v2 import plots, verdict
from .detectnet_v2.agreement import Agreement, combined
from .detectnet_v2.evaluation import (LabelCensus, ModelResult, Sample, evaluation_setup, label_census, truth_of,
                                      validation_set)
from .pipeline import backends
from .pipeline.backends import EvaluateRequest
from .pipeline.cli import StageInputs, log_to_file, run_stage
from .pipeline.layout import (EVALUATE_REPORT, EVALUATION_DIR, EXPORT_REPORT, EXPORTED_MODEL, engine_file,
                              project_path)
from .pipeline.errors import StageError
from .pipeline.outputs import staged_dir, write_text_atomically
from .pipeline.resolved_spec import evenly_spaced, shown, training_images, validation_dirs

log = logging.getLogger("stages.evaluate")


def summary(aps: dict[str, float]) -> dict:
    return {"mAP": round(sum(aps.values()) / len(aps), 6), "AP": {name: round(ap, 6) for name, ap in aps.items()}}


def run(cfg: DictConfig, inputs: StageInputs) -> None:
    spec_facts = inputs.facts
    setup = evaluation_setup(inputs.spec, spec_facts.width, spec_facts.height)
    image_dir, label_dir = validation_dirs(cfg, spec_facts)
    samples = validation_set(image_dir, label_dir, spec_facts.image_extension)
    census = checked_labels([sample.label for sample in samples], setup, label_dir, "validation")
    calibration = calibration_samples(cfg, spec_facts)
    step = backends.step(cfg, "evaluate")  # imported before any output is staged
    with staged_dir(project_path(EVALUATION_DIR)) as out, log_to_file(out / "evaluate.log"):
        results = step.run(EvaluateRequest(cfg, setup, samples, image_dir, label_dir, inputs.spec_path,
                                           project_path(EXPORTED_MODEL),
                                           project_path(engine_file(cfg.backend.name, cfg.convert.engine)), out,
                                           calibration)).results()
        metrics, judged, agreements = judged_report(cfg, setup, results, samples, census)
        write_plots(out, results, samples[:cfg.evaluate.draw_images])
        write_disagreements(out, results, samples, calibration, agreements, cfg.evaluate.draw_images)
    write_text_atomically(project_path(EVALUATE_REPORT), json.dumps(metrics, indent=2) + "\n")
    if judged.gate == "fail" or (judged.gate == "inconclusive" and cfg.evaluate.on_inconclusive == "fail"):
        failed = gate_failure(cfg, metrics, judged)
        if cfg.evaluate.on_gate_failure == "stop":
            raise failed
        log.warning("evaluate: gate %s, recorded (evaluate.on_gate_failure=record): %s", judged.gate, failed)
    elif judged.gate == "inconclusive":
        log.warning("evaluate: the gate is inconclusive and evaluate.on_inconclusive is pass, so the engine passes: %s",
                    judged.reason)


def calibration_samples(cfg: DictConfig, spec_facts) -> list[Sample]:
    """The calibration images the agreement is also measured on (unlabelled): evaluate.agreement_images of the
    spec's training images, evenly spaced; none where a given cache was made on images the user does not have."""
    if cfg.export.calibration_cache:
        log.info("evaluate: export.calibration_cache was made on other images than yours: the agreement with fp32 "
                 "is measured on the validation images only")
        return []
    return [Sample(image, None) for image in evenly_spaced(training_images(spec_facts), cfg.evaluate.agreement_images)]


def checked_labels(labels: list[Path], setup, label_dir: Path, role: str) -> LabelCensus:
    """The labels' census; a StageError where a class the spec trains has no object in them."""
    census = label_census(labels, setup, shown(label_dir))
    problem = census.problem(setup.classes, role)
    if problem:
        raise StageError(problem)
    ignored = census.ignored(setup)
    if ignored:
        log.info("evaluate: the %s labels in %s also name classes the spec does not train, which TAO ignores: %s",
                 role, shown(label_dir), ", ".join(f"{name} {count}" for name, count in ignored.items()))
    return census


def judged_report(cfg: DictConfig, setup, results: dict[str, ModelResult], samples: list[Sample],
                  census: LabelCensus) -> tuple[dict, verdict.Verdict, dict[str, Agreement]]:
    """The report (metrics/evaluate.json), the gate's verdict on the evidence (detectnet_v2/verdict.py), and the
    agreement on each set of images ({"validation", "calibration"}, where measured)."""
    engine, reference = summary(results["engine"].aps), summary(results["reference"].aps)
    evidence, agreements = verdict.weigh(setup, results["engine"], results["reference"], census.per_class,
                                         cfg.evaluate.max_map_drop)
    judged = verdict.judge(evidence, cfg.evaluate.max_map_drop, cfg.evaluate.min_agreement)
    metrics = {"engine": {"precision": cfg.export.data_type, **engine}, "reference": reference,
               "mAP_drop": evidence.drop,
               "mAP_drop_interval": list(evidence.interval) if evidence.interval else None, "gate": judged.gate,
               "gate_reason": judged.reason, "resolution": judged.resolution,
               "agreement": {"F1": evidence.agreement,
                             **{part: value.report() for part, value in agreements.items()}},
               "images": len(samples), "objects": census.per_class}
    log.info("evaluate: mAP %.4f (%s engine) vs %.4f (fp32 model) on %d images: %s", engine["mAP"],
             cfg.export.data_type, reference["mAP"], len(samples),
             ", ".join(f"{name} {ap:.3f}" for name, ap in engine["AP"].items()))
    for part, value in agreements.items():
        report = value.report()
        log.info("evaluate: agreement with fp32 on %d %s images: precision %.3f, recall %.3f, F1 %.3f (%d engine "
                 "boxes, %d fp32 boxes)", report["images"], part, report["precision"], report["recall"], report["F1"],
                 report["boxes"]["engine"], report["boxes"]["fp32"])
    log.info("evaluate: gate %s: %s", judged.gate, judged.reason)
    if judged.resolution:
        log.warning("evaluate: %s", judged.resolution)
    return metrics, judged, agreements


def write_plots(out: Path, results: dict[str, ModelResult], drawn: list[Sample]) -> None:
    """precision_recall/<class>.csv (recall and each model's interpolated precision), the same drawn in
    curves/<class>.png (for a machine without internet), and detections/<image>.png, for `dvc plots`. A
    model evaluated by TAO's own command has APs only: it has no curve and no boxes to draw."""
    evaluated = {name: result.evaluation for name, result in results.items() if result.evaluation is not None}
    setup = next(iter(evaluated.values())).setup
    (out / "precision_recall").mkdir()
    (out / "curves").mkdir()
    for name in setup.classes:
        curves = {model: evaluation.tallies[name].curve()[:2] for model, evaluation in evaluated.items()}
        table = plots.curve_table(curves)
        plots.write_csv(out / "precision_recall" / f"{file_name(name)}.csv", table)
        plots.draw_curves(out / "curves" / f"{file_name(name)}.png", f"{name}: precision vs recall", table)
    (out / "detections").mkdir()
    for index, sample in enumerate(drawn):
        truth = {name: boxes for name, (boxes, _) in truth_of(sample, setup).items()}
        found = {model: evaluation.detections[index] for model, evaluation in evaluated.items()}
        plots.draw(sample.image, found, truth, out / "detections" / f"{sample.image.stem}.png")


def write_disagreements(out: Path, results: dict[str, ModelResult], samples: list[Sample], calibration: list[Sample],
                        agreements: dict[str, Agreement], count: int) -> None:
    """disagreement/<rank>_<image>.png: the images, validation and calibration alike, where the engine's boxes
    and the fp32 model's differ most (the agreement's unmatched boxes), drawn as detections/ draws them (truth
    where labelled)."""
    (out / "disagreement").mkdir()
    if not agreements:  # TAO's evaluate: no detections of the engine's
        return
    engine, reference = results["engine"], results["reference"]
    setup = engine.evaluation.setup
    images = list(samples)
    found = {"engine": list(engine.evaluation.detections), "reference": list(reference.evaluation.detections)}
    if "calibration" in agreements:
        images += calibration
        found["engine"] += engine.calibration
        found["reference"] += reference.calibration
    for rank, index in enumerate(combined(agreements.values(), setup.classes).most_disagreeing(count)):
        sample = images[index]
        truth = {name: boxes for name, (boxes, _) in truth_of(sample, setup).items()}
        plots.draw(sample.image, {model: found[model][index] for model in found}, truth,
                   out / "disagreement" / f"{rank + 1}_{sample.image.stem}.png")


def file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def gate_failure(cfg: DictConfig, metrics: dict, judged: verdict.Verdict) -> StageError:
    engine, reference = metrics["engine"], metrics["reference"]
    worst = max(reference["AP"], key=lambda name: reference["AP"][name] - engine["AP"][name])
    what = ("failed" if judged.gate == "fail" else
            "is inconclusive, which fails while evaluate.on_inconclusive is fail (pass lets it through with a warning)")
    resolution = f" Note: {judged.resolution}." if judged.resolution else ""
    return StageError(
        f"the gate {what}: the {cfg.export.data_type} engine's mAP is {engine['mAP']:.4f} against the fp32 model's "
        f"{reference['mAP']:.4f}; {judged.reason}. {worst} changed most (AP {reference['AP'][worst]:.4f} -> "
        f"{engine['AP'][worst]:.4f}).{resolution} The figures are in {EVALUATE_REPORT}. {calibration_advice(cfg)}; "
        "or raise evaluate.max_map_drop (null turns the gate off)")


def calibration_advice(cfg: DictConfig) -> str:
    """What to try, from what the export measured where it did (backend.calibration_method=auto): steps the
    measurements support, never one that cannot be taken."""
    try:
        calibration = json.loads(project_path(EXPORT_REPORT).read_text()).get("calibration") or {}
    except (OSError, ValueError):
        calibration = {}
    if cfg.export.data_type != "int8":
        return "Try a higher precision (-S export=fp32 is the reference itself)"
    if calibration.get("method") != "auto":
        return ("Try -S backend.calibration_method=auto, which keeps the calibration method whose boxes agree best "
                "with fp32's on labelled training images and leaves the layers INT8 costs most in higher precision; "
                "or -S export=fp16")
    scores, agreements, chosen = calibration["selection_mAP"], calibration["selection_agreement"], calibration["chosen"]
    measured = ", ".join(f"{method} agrees {agreements[method]:.2f} with fp32 (mAP {scores[method]:.4f})"
                         for method in sorted(agreements, key=lambda m: -agreements[m]))
    steps = []
    others = [method for method in sorted(agreements, key=lambda m: -agreements[m]) if method != chosen]
    if others and agreements[others[0]] >= agreements[chosen]:
        steps.append(f"-S backend.calibration_method={others[0]}")
    if calibration.get("within_gate") is False:
        steps.append("more layers in higher precision (export.max_float_layers, which bounded the search)")
    if calibration["images"] < calibration.get("images_available", 0):
        steps.append(f"more selection images (calibration.selection_images, up to {calibration['images_available']})")
    steps.append("-S export=fp16")
    layers = ", ".join(calibration["float_layers"]) or "none"
    return (f"On {calibration['images']} selection images (fp32 mAP {scores['fp32']:.4f}) {measured}; auto kept {chosen}"
            f" with {layers} in higher precision. Try " + ", or ".join(steps))


if __name__ == "__main__":
    sys.exit(run_stage("evaluate", __doc__, run, reads_spec=True, checks_platform=True))
