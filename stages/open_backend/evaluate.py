"""Open backend, evaluate: the engine and the fp32 model over the validation images in one pass (each
image decoded once), decoded, clustered and scored by the project's own evaluator."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..detectnet_v2.evaluation import EvaluationSetup, ModelResult, Sample, evaluate
from ..detectnet_v2.inference import OnnxRunner
from ..pipeline.errors import StageError
from ..pipeline.progress import progress


def engine_runner(engine: Path, engine_kind: str) -> OnnxRunner:
    if engine_kind != "onnxruntime":
        raise StageError(f"convert.engine is {engine_kind}: {engine} is a TensorRT engine, and the open backend "
                         "evaluates onnxruntime engines only (no TensorRT runtime was available to build this "
                         "evaluator against)")
    if not engine.is_file():
        raise StageError(f"{engine} does not exist: run the convert stage first")
    return OnnxRunner(engine)


def run(cfg: DictConfig, setup: EvaluationSetup, samples: list[Sample], image_dir: Path,  # noqa: ARG001
        label_dir: Path, spec_path: Path, reference_model: Path, engine: Path,
        out: Path, calibration: list[Sample]) -> dict[str, ModelResult]:
    """Both models on the validation images, then on the calibration images (unlabelled: their detections
    are compared with each other, not scored)."""
    models = {"engine": engine_runner(engine, cfg.convert.engine), "reference": OnnxRunner(reference_model)}
    with progress(len(samples) + len(calibration), "evaluate", unit="image") as bar:
        results = evaluate(models, samples, setup, cfg.evaluate.batch_size, cfg.backend.workers, bar)
        found = evaluate(models, calibration, setup, cfg.evaluate.batch_size, cfg.backend.workers, bar) \
            if calibration else {name: None for name in models}
    return {name: ModelResult(result.average_precisions(), result,
                              found[name].detections if found[name] is not None else None)
            for name, result in results.items()}
