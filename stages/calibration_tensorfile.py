"""Stage `calibration_tensorfile`: resolve the TAO spec (map its container paths, apply the value
overrides, check every input exists) into artifacts/spec/, and write the calibration TensorFile from its images; none when
export.calibration_cache gives the int8 scales (no image is read for calibration then)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from .detectnet_v2.spec_facts import facts
from .pipeline import backends
from .pipeline.backends import TensorfileRequest
from .pipeline.cli import log_to_file, run_stage
from .pipeline.layout import CALIBRATION_DIR, RESOLVED_SPEC, SPEC_DIR, TENSORFILE, project_path
from .pipeline.outputs import staged_dir
from .pipeline.resolved_spec import resolve_spec

log = logging.getLogger("stages.calibration_tensorfile")


def run(cfg: DictConfig) -> None:
    spec = resolve_spec(cfg)
    step = backends.step(cfg, "calibration_tensorfile")  # imported before any output is staged
    with staged_dir(project_path(SPEC_DIR)) as spec_dir, staged_dir(project_path(CALIBRATION_DIR)) as out, \
            log_to_file(out / "calibration_tensorfile.log"):
        spec_path = spec_dir / Path(RESOLVED_SPEC).name
        spec.write(spec_path)
        if cfg.export.calibration_cache:
            log.info("export.calibration_cache %s gives the int8 scales: no calibration tensorfile made, no image "
                     "read", cfg.export.calibration_cache)
        else:
            step.run(TensorfileRequest(cfg, facts(spec), spec_path, out / Path(TENSORFILE).name))


if __name__ == "__main__":
    sys.exit(run_stage("calibration_tensorfile", __doc__, run))
