"""TAO backends, calibration_tensorfile: `detectnet_v2 calibration_tensorfile` on the resolved spec."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..detectnet_v2.spec_facts import SpecFacts
from ..formats.tensorfile import describe
from . import argv
from .runners import check_written, runner_for


def run(cfg: DictConfig, facts: SpecFacts, spec_path: Path, output: Path) -> None:  # noqa: ARG001
    runner = runner_for(cfg.backend, "detectnet_v2")
    command = argv.calibration_tensorfile(runner.spec(spec_path, output.parent), runner.path(output),
                                          cfg.calibration.max_batches, cfg.calibration.use_validation_set)
    runner.run(command, output.parent / "tao.log")
    check_written(runner, output, "detectnet_v2 calibration_tensorfile", read_tensorfile)


def read_tensorfile(path: Path) -> None:
    if describe(path)[0] < 1:
        raise ValueError("it holds no batch")
