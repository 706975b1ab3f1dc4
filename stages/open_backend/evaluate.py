"""Open backend, evaluate: the engine and the fp32 model over the validation images in one pass (each
image decoded once), decoded, clustered and scored by the project's own evaluator."""
from __future__ import annotations

from pathlib import Path

from ..detectnet_v2.evaluation import ModelResult, evaluate
from ..detectnet_v2.inference import OnnxRunner
from ..pipeline.backends import EvaluateReport, EvaluateRequest
from ..pipeline.errors import StageError
from ..pipeline.progress import progress


def engine_runner(engine: Path, engine_kind: str) -> OnnxRunner:
    if engine_kind == "tensorrt_rtx":
        raise _no_rtx_runtime(engine)
    if engine_kind != "onnxruntime":
        raise StageError(f"convert.engine is {engine_kind}: {engine} is a TensorRT engine, and the open backend "
                         "evaluates onnxruntime engines only (no TensorRT runtime was available to build this "
                         "evaluator against)")
    if not engine.is_file():
        raise StageError(f"{engine} does not exist: run the convert stage first")
    return OnnxRunner(engine)


def _no_rtx_runtime(engine: Path) -> StageError:
    """Why a TensorRT-RTX engine is not evaluated here: the GPUs its runtime needs, and those this machine has."""
    from ..pipeline.platform import gpus
    from ..tensorrt.libraries import RTX_GPUS, rtx_runs_on

    found = gpus()
    listed = ", ".join(f"{g['name']} ({g['compute_capability']})" for g in found) or "no NVIDIA GPU"
    kept = f"the engine is kept in {engine.parent.name}/{engine.name}"
    if any(rtx_runs_on(g["compute_capability"]) for g in found):
        return StageError(f"convert.engine is tensorrt_rtx: this machine has a GPU TensorRT-RTX runs on ({listed}), "
                          "but the open backend's evaluator runs onnxruntime engines only: it has no CUDA memory "
                          f"binding in its lock to feed TensorRT-RTX's runtime; {kept}")
    return StageError(f"convert.engine is tensorrt_rtx: the engine runs on {RTX_GPUS} only, and this machine has "
                      f"{listed}; evaluate it on such a GPU, or evaluate -S convert.engine=onnxruntime here; {kept}")


def run(request: EvaluateRequest) -> EvaluateReport:
    """Both models on the validation images, then on the calibration images (unlabelled: their detections
    are compared with each other, not scored). The images are read by the project's own evaluator, from the
    samples: the folders and the spec are what TAO's tool reads."""
    cfg, setup, samples, calibration = request.cfg, request.setup, request.samples, request.calibration
    models = {"engine": engine_runner(request.engine, cfg.convert.engine),
              "reference": OnnxRunner(request.reference_model)}
    with progress(len(samples) + len(calibration), "evaluate", unit="image") as bar:
        results = evaluate(models, samples, setup, cfg.evaluate.batch_size, cfg.backend.workers, bar)
        found = evaluate(models, calibration, setup, cfg.evaluate.batch_size, cfg.backend.workers, bar) \
            if calibration else {name: None for name in models}
    return EvaluateReport(**{name: ModelResult(result.average_precisions(), result,
                                               found[name].detections if found[name] is not None else None)
                             for name, result in results.items()})
