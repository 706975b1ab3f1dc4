"""Stage `convert`: the inference engine convert.engine asks for (onnxruntime or TensorRT), verified
against the fp32 model on validation images. Its report (artifacts/reports/convert.json: the
comparison, timings and the platform the engine was built for and is valid on) becomes DVC metrics
through the `metrics` stage."""
from __future__ import annotations

import json
import sys

from omegaconf import DictConfig

from .pipeline import backends, platform
from .pipeline.backends import ConvertRequest
from .pipeline.cli import StageInputs, log_to_file, run_stage
from .pipeline.layout import CONVERT_REPORT, ENGINE_DIR, EXPORT_DIR, project_path
from .pipeline.outputs import staged_dir, write_text_atomically


def run(cfg: DictConfig, inputs: StageInputs) -> None:
    step = backends.step(cfg, "convert")  # imported before any output is staged
    with staged_dir(project_path(ENGINE_DIR)) as out, log_to_file(out / "convert.log"):
        metrics = step.run(ConvertRequest(cfg, inputs.facts, inputs.spec_path, project_path(EXPORT_DIR), out)).as_dict()
    metrics["platform"] = platform.describe(inputs.platform)  # the machines this engine is valid on, in one column
    # after the engine is in place: a report never describes an engine that was not kept
    write_text_atomically(project_path(CONVERT_REPORT), json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(run_stage("convert", __doc__, run, reads_spec=True, checks_platform=True))
