"""Stage `calibration_tensorfile`: resolve the TAO spec (map its container paths, apply the value
overrides, check every input exists) and write the calibration TensorFile from its images; none when
export.calibration_cache gives the int8 scales (no image is read for calibration then)."""
from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from .detectnet_v2.spec_facts import facts
from .pipeline import backends
from .pipeline.cli import log_to_file, run_stage
from .pipeline.config import CALIBRATION_DIR, RESOLVED_SPEC, TENSORFILE, project_path
from .pipeline.outputs import staged_dir
from .pipeline.resolved_spec import resolve_spec

log = logging.getLogger("stages.calibration_tensorfile")


def run(cfg: DictConfig) -> None:
    spec = resolve_spec(cfg)
    step = backends.step(cfg, "calibration_tensorfile")  # imported before any output is staged
    with staged_dir(project_path(CALIBRATION_DIR)) as out, log_to_file(out / "calibration_tensorfile.log"):
        spec.write(out / RESOLVED_SPEC)
        if cfg.export.calibration_cache:
            log.info("export.calibration_cache %s gives the int8 scales: no calibration tensorfile made, no image "
                     "read", cfg.export.calibration_cache)
        else:
            step.run(cfg, facts(spec), out / RESOLVED_SPEC, out / TENSORFILE)


if __name__ == "__main__":
    sys.exit(run_stage("calibration_tensorfile", __doc__, run))
