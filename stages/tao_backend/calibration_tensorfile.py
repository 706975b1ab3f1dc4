"""TAO backends, calibration_tensorfile: `detectnet_v2 calibration_tensorfile` on the resolved spec."""
from __future__ import annotations

from pathlib import Path

from ..formats.tensorfile import describe
from ..pipeline.backends import TensorfileReport, TensorfileRequest
from . import argv
from .runners import check_written, runner_for


def run(request: TensorfileRequest) -> TensorfileReport:
    """TAO's own tool on the resolved spec (it reads the data itself: the spec's facts are not needed)."""
    cfg, output = request.cfg, request.output
    runner = runner_for(cfg.backend, "detectnet_v2")
    command = argv.calibration_tensorfile(runner.spec(request.spec_path, output.parent), runner.path(output),
                                          cfg.calibration.max_batches, cfg.calibration.use_validation_set)
    runner.run(command, output.parent / "tao.log")
    return TensorfileReport(check_written(runner, output, "detectnet_v2 calibration_tensorfile", read_tensorfile))


def read_tensorfile(path: Path) -> int:
    """The batches the TensorFile holds; a ValueError where it holds none."""
    batches = describe(path)[0]
    if batches < 1:
        raise ValueError("it holds no batch")
    return batches
