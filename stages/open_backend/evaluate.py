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
        out: Path) -> dict[str, ModelResult]:
    models = {"engine": engine_runner(engine, cfg.convert.engine), "reference": OnnxRunner(reference_model)}
    with progress(len(samples), "evaluate", unit="image") as bar:
        results = evaluate(models, samples, setup, cfg.evaluate.batch_size, cfg.backend.workers, bar)
    return {name: ModelResult.of(result) for name, result in results.items()}
