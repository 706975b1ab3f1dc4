"""Stage `export`: the deployable model with TAO's tensor names and a dynamic batch, plus, for
int8, the TensorRT calibration cache, and the DeepStream config with `gen_ds_config`."""
from __future__ import annotations

import sys

from omegaconf import DictConfig

from .detectnet_v2.spec_facts import facts
from .pipeline import backends
from .pipeline.cli import log_to_file, run_stage
from .pipeline.config import CALIBRATION_DIR, EXPORT_DIR, RESOLVED_SPEC, TENSORFILE, project_path
from .pipeline.outputs import staged_dir
from .spec import Spec


def run(cfg: DictConfig) -> None:
    calibration = project_path(CALIBRATION_DIR)
    spec_path = calibration / RESOLVED_SPEC
    step = backends.step(cfg, "export")  # imported before any output is staged
    with staged_dir(project_path(EXPORT_DIR)) as out, log_to_file(out / "export.log"):
        step.run(cfg, facts(Spec.load(spec_path)), spec_path, project_path(cfg.model.file),
                 calibration / TENSORFILE, out)


if __name__ == "__main__":
    sys.exit(run_stage("export", __doc__, run))
