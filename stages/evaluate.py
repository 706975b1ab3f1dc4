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

from .detectnet_v2 import plots
from .detectnet_v2.evaluation import ModelResult, Sample, evaluation_setup, truth_of, validation_set
from .detectnet_v2.spec_facts import SpecFacts
from .pipeline import backends
from .pipeline.cli import StageInputs, log_to_file, run_stage
from .pipeline.layout import (EVALUATE_REPORT, EVALUATION_DIR, EXPORT_REPORT, EXPORTED_MODEL, engine_file,
                              project_path)
from .pipeline.errors import StageError
from .pipeline.outputs import staged_dir, write_text_atomically
from .pipeline.resolved_spec import kitti_image_dir

log = logging.getLogger("stages.evaluate")


def validation_dirs(cfg: DictConfig, spec_facts: SpecFacts) -> tuple[Path, Path]:
    """(image directory, label directory): evaluate.image_dir/label_dir, or the spec's validation data
    source (its image_2/ when it has one) with the KITTI labels in label_2/ beside the images."""
    if cfg.evaluate.image_dir:
        image_dir = project_path(cfg.evaluate.image_dir)
    elif spec_facts.validation_dirs:
        image_dir = kitti_image_dir(spec_facts.validation_dirs[0], spec_facts.image_extension)
    else:
        raise StageError(f"{spec_facts.source}: the spec has no dataset_config.validation_data_source."
                         "image_directory_path (it validates on a fold of the training data): set evaluate.image_dir "
                         "and evaluate.label_dir to a validation set")
    label_dir = project_path(cfg.evaluate.label_dir) if cfg.evaluate.label_dir else image_dir.parent / "label_2"
    return image_dir, label_dir


def summary(aps: dict[str, float]) -> dict:
    return {"mAP": round(sum(aps.values()) / len(aps), 6), "AP": {name: round(ap, 6) for name, ap in aps.items()}}


def run(cfg: DictConfig, inputs: StageInputs) -> None:
    spec_facts = inputs.facts
    setup = evaluation_setup(inputs.spec, spec_facts.width, spec_facts.height)
    image_dir, label_dir = validation_dirs(cfg, spec_facts)
    samples = validation_set(image_dir, label_dir, spec_facts.image_extension)
    step = backends.step(cfg, "evaluate")  # imported before any output is staged
    with staged_dir(project_path(EVALUATION_DIR)) as out, log_to_file(out / "evaluate.log"):
        results = step.run(cfg, setup, samples, image_dir, label_dir, inputs.spec_path, project_path(EXPORTED_MODEL),
                           project_path(engine_file(cfg.backend.name, cfg.convert.engine)), out)
        write_plots(out, results, samples[:cfg.evaluate.draw_images])
    engine, reference = summary(results["engine"].aps), summary(results["reference"].aps)
    drop = round(reference["mAP"] - engine["mAP"], 6)
    limit = cfg.evaluate.max_map_drop
    verdict = "off" if limit is None else "pass" if drop <= limit else "fail"
    metrics = {"engine": {"precision": cfg.export.data_type, **engine}, "reference": reference,
               "mAP_drop": drop, "gate": verdict, "images": len(samples)}
    write_text_atomically(project_path(EVALUATE_REPORT), json.dumps(metrics, indent=2) + "\n")
    log.info("evaluate: mAP %.4f (%s engine) vs %.4f (fp32 model) on %d images: %s",
             engine["mAP"], cfg.export.data_type, reference["mAP"], len(samples),
             ", ".join(f"{name} {ap:.3f}" for name, ap in engine["AP"].items()))
    if verdict == "fail":
        failed = gate_failure(cfg, engine, reference, drop)
        if cfg.evaluate.on_gate_failure == "stop":
            raise failed
        log.warning("evaluate: gate failed, recorded (evaluate.on_gate_failure=record): %s", failed)


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


def file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def gate_failure(cfg: DictConfig, engine: dict, reference: dict, drop: float) -> StageError:
    limit = cfg.evaluate.max_map_drop
    worst = max(reference["AP"], key=lambda name: reference["AP"][name] - engine["AP"][name])
    return StageError(
        f"the {cfg.export.data_type} engine's mAP is {engine['mAP']:.4f}, {drop:.4f} below the fp32 model's "
        f"{reference['mAP']:.4f}, more than evaluate.max_map_drop {limit}; {worst} lost most "
        f"(AP {reference['AP'][worst]:.4f} -> {engine['AP'][worst]:.4f}). The figures are in "
        f"{EVALUATE_REPORT}. {calibration_advice()}, or raise evaluate.max_map_drop (null turns the gate off)")


def calibration_advice() -> str:
    """What the export measured, where it did (backend.calibration_method=auto), rather than a guess."""
    try:
        calibration = json.loads(project_path(EXPORT_REPORT).read_text()).get("calibration") or {}
    except (OSError, ValueError):
        calibration = {}
    if calibration.get("method") != "auto":
        return ("Try backend.calibration_method=auto, which scores each calibration method by mAP on labelled "
                "training images and leaves the layers INT8 costs most in higher precision; or another precision")
    scores = calibration["selection_mAP"]
    measured = ", ".join(f"{method} {scores[method]:.4f}" for method in scores if method != "fp32")
    layers = ", ".join(calibration["float_layers"]) or "none"
    return (f"On {calibration['images']} selection images auto measured fp32 {scores['fp32']:.4f}, {measured}; it kept "
            f"{calibration['chosen']} with {layers} in higher precision (selection mAP {calibration['final_mAP']:.4f}): "
            "the validation set disagrees with the selection set. Give the selection more images "
            "(calibration.selection_images) or more layers (export.max_float_layers), or use another precision")


if __name__ == "__main__":
    sys.exit(run_stage("evaluate", __doc__, run, reads_spec=True, checks_platform=True))
