"""TAO backends, export: `detectnet_v2 export` (with the calibration source TAO takes), and the
DeepStream config it writes scrubbed of the key, with the spec's clustering added."""
from __future__ import annotations

import re
import shutil
from pathlib import Path


from ..formats.calibration_cache import read_cache
from ..formats.file_names import CACHE_FILE
from ..formats.deepstream import KEY_PLACEHOLDER, add_clustering, write_deepstream_config
from ..formats.onnx_model import load_model
from ..pipeline.backends import ExportReport, ExportRequest
from ..pipeline.layout import project_path
from ..pipeline.resolved_spec import deepstream_classes, deepstream_clustering, images_of
from . import argv
from .runners import RunnerError, check_written, load_key, runner_for


def run(request: ExportRequest) -> ExportReport:
    cfg, facts, spec_path, model, tensorfile, out = (request.cfg, request.facts, request.spec_path, request.model,
                                                     request.tensorfile, request.out)
    runner, key, e = runner_for(cfg.backend, "detectnet_v2"), load_key(cfg.backend), cfg.export
    exported = out / f"model.{cfg.backend.export_format}"
    calibration = {}
    if e.data_type == "int8" and e.calibration_cache:
        # TensorRT reads an existing cache instead of calibrating: TAO gets a copy of the given one, as it is
        given = project_path(e.calibration_cache)
        read_cache(given)  # a cache that does not parse stops here, with its file and line
        shutil.copyfile(given, out / CACHE_FILE)
        calibration.update(cal_cache_file=runner.path(out / CACHE_FILE), cache_given=True)
    elif e.data_type == "int8":
        calibration["cal_cache_file"] = runner.path(out / CACHE_FILE)
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
    scrub_key(out, key.value)
    classes = deepstream_classes(cfg, spec_path)
    clustering = deepstream_clustering(spec_path, classes)
    add_clustering(out / "nvinfer_config.txt", clustering)  # TAO's own, for its route
    if e.gen_ds_config and exported.suffix == ".onnx":  # the deployable ONNX's, which TAO does not write
        write_deepstream_config(out, classes, (facts.channels, facts.height, facts.width),
                                e.data_type, clustering, routes=("explicit",))
    check_written(runner, exported, "detectnet_v2 export", load_model if exported.suffix == ".onnx" else read_etlt)
    if e.data_type == "int8":
        check_written(runner, out / CACHE_FILE, "detectnet_v2 export", read_cache)
    method = None if e.data_type != "int8" else "given" if e.calibration_cache else "tao"  # TensorRT's entropy
    return ExportReport(calibration={"method": method})


def read_etlt(path: Path) -> None:
    """An .etlt is a 4-byte little-endian length, that many bytes of input name, then the encrypted
    model: only its framing can be checked without NVIDIA's codec."""
    data = path.read_bytes()
    name_length = int.from_bytes(data[:4], "little")
    if len(data) <= 4 + name_length:
        raise ValueError(f"{len(data)} bytes cannot hold the {name_length}-byte input name its header announces "
                         "and a model after it")


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
