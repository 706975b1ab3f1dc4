"""TAO backends, export: `detectnet_v2 export` (with the calibration source TAO takes), and the
DeepStream config it writes scrubbed of the key."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig

from ..config import KEY_PLACEHOLDER, project_path
from ..resolved import SpecFacts, images_of
from . import argv
from .runners import RunnerError, load_key, runner_for


def run(cfg: DictConfig, facts: SpecFacts, spec_path: Path, model: Path, tensorfile: Path, out: Path) -> None:
    runner, key, e = runner_for(cfg.backend), load_key(cfg.backend), cfg.export
    exported = out / f"model.{cfg.backend.export_format}"
    calibration = {}
    if e.data_type == "int8":
        calibration["cal_cache_file"] = runner.path(out / "calibration.bin")
        if e.cal_source == "tensorfile":
            if not tensorfile.is_file():
                raise RunnerError(f"export.cal_source is tensorfile but {tensorfile} does not exist")
            calibration["cal_data_file"] = runner.path(tensorfile)
        else:
            directory = (project_path(e.cal_image_dir) if e.cal_source == "image_dir"
                         else images_of(facts.training_dirs, facts.image_extension)[0].parent)
            if not directory.is_dir():  # TAO would calibrate on random data instead
                raise RunnerError(f"calibration image directory {directory} does not exist")
            calibration["cal_image_dir"] = runner.path(directory)
    command = argv.export(runner.path(model), key, runner.path(exported), e, spec=runner.spec(spec_path, out),
                          **calibration)
    runner.run(command, out / "tao.log")
    if not exported.is_file():
        raise RunnerError(f"detectnet_v2 export succeeded but wrote no {exported.name}")
    scrub_key(out, key.value)


def scrub_key(out: Path, key: str) -> None:
    """TAO writes the real key into nvinfer_config.txt; artifacts must carry a placeholder."""
    config = out / "nvinfer_config.txt"
    if config.is_file():
        text = re.sub(r"(?m)^tlt-model-key=.*$", f"tlt-model-key={KEY_PLACEHOLDER}", config.read_text())
        config.write_text(text)
    for path in out.rglob("*"):
        if path.is_file() and key.encode() in path.read_bytes():
            path.unlink()
            raise RunnerError(f"TAO wrote the key into {path.name}; the file was removed")
