"""Stage `convert`: the inference engine convert.engine asks for (onnxruntime or TensorRT), verified
against the fp32 model on validation images. Its report (artifacts/reports/convert.json: the
comparison, timings and the platform the engine was built for and is valid on) becomes DVC metrics
through the `metrics` stage."""
from __future__ import annotations

import json
import sys

from omegaconf import DictConfig, OmegaConf

from .detectnet_v2.spec_facts import facts
from .pipeline import backends, platform
from .pipeline.cli import log_to_file, run_stage
from .pipeline.config import CALIBRATION_DIR, ENGINE_DIR, EXPORT_DIR, CONVERT_REPORT, RESOLVED_SPEC, project_path
from .pipeline.outputs import staged_dir, write_text_atomically
from .spec import Spec


def run(cfg: DictConfig) -> None:
    spec_path = project_path(CALIBRATION_DIR) / RESOLVED_SPEC
    built_for = platform.checked(OmegaConf.to_container(cfg))
    step = backends.step(cfg, "convert")  # imported before any output is staged
    with staged_dir(project_path(ENGINE_DIR)) as out, log_to_file(out / "convert.log"):
        metrics = step.run(cfg, facts(Spec.load(spec_path)), spec_path, project_path(EXPORT_DIR), out)
    metrics["platform"] = platform.describe(built_for)  # the machines this engine is valid on, in one column
    # after the engine is in place: a report never describes an engine that was not kept
    write_text_atomically(project_path(CONVERT_REPORT), json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(run_stage("convert", __doc__, run))
