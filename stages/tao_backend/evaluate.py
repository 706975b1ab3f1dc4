"""TAO backends, evaluate: the TensorRT engine through TAO Deploy's own `detectnet_v2 evaluate`, whose
results.json ({"AP_<class>": ...}) gives the engine's AP per class; the fp32 model, the reference, by
the project's evaluator on the CPU, so that the drop is known for every backend."""
from __future__ import annotations

import json
from pathlib import Path

from ..detectnet_v2.evaluation import ModelResult, evaluate
from ..detectnet_v2.inference import OnnxRunner
from ..pipeline.backends import EvaluateReport, EvaluateRequest
from ..pipeline.progress import progress
from . import argv
from .runners import RunnerError, check_written, runner_for


def read_results(path: Path, classes: list[str]) -> dict[str, float]:
    """{class: AP} from TAO Deploy's results.json; a ValueError, like the other readers check_written
    takes, when it cannot be used."""
    results = json.loads(path.read_text())
    missing = [name for name in classes if not isinstance(results.get(f"AP_{name}"), (int, float))]
    if missing:
        raise ValueError(f"it has no AP for {', '.join(missing)} (it holds {', '.join(results) or 'nothing'}): "
                         "the engine's classes are not the spec's target classes")
    return {name: float(results[f"AP_{name}"]) for name in classes}


def run(request: EvaluateRequest) -> EvaluateReport:
    """TAO's evaluate reports the engine's APs only: no detections, so no interval and no agreement (the
    gate judges the point drop, and the report says so); the calibration images go unused for the same
    reason."""
    cfg, setup, samples, engine, out = request.cfg, request.setup, request.samples, request.engine, request.out
    spec_path, image_dir, label_dir = request.spec_path, request.image_dir, request.label_dir
    if not engine.is_file():
        raise RunnerError(f"{engine} does not exist: run the convert stage with this backend first")
    runner = runner_for(cfg.backend, "detectnet_v2")
    command = argv.evaluate(runner.spec(spec_path, out), runner.path(engine), runner.path(image_dir),
                            runner.path(label_dir), runner.path(out), cfg.evaluate.batch_size)
    runner.run(command, out / "tao.log")
    aps = check_written(runner, out / "results.json", "detectnet_v2 evaluate",
                        lambda path: read_results(path, setup.classes))
    with progress(len(samples), "evaluate fp32 model", unit="image") as bar:
        reference = evaluate({"reference": OnnxRunner(request.reference_model)}, samples, setup,
                             cfg.evaluate.batch_size, cfg.backend.get("workers"), bar)["reference"]
    return EvaluateReport(ModelResult(aps), ModelResult.of(reference))
