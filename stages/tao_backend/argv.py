"""Every TAO command line, built in one place from config values checked first.

An unset optional flag is left out (never a sentinel string such as "ND"), booleans are bare
flags, and every value is one list element, so no value can become a shell word or an extra flag.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from ..pipeline.commands import Secret
from ..pipeline.choices import DATA_TYPES

INPUT_ORDERS = ("nchw", "nhwc", "nc")
_PROFILE = re.compile(r"[^,\s]+(,\d+x\d+x\d+x\d+){3}")


class ArgvError(ValueError):
    """A config value that cannot go on a TAO command line. Names the config key."""


# --------------------------------------------------------------------------- checks

def _text(key: str, value) -> str:
    if value is None or isinstance(value, bool) or str(value) == "":
        raise ArgvError(f"config key {key} must be set to a non-empty value, got {value!r}")
    text = str(value)
    if "\0" in text or "\n" in text:
        raise ArgvError(f"config key {key} holds a NUL or newline character")
    return text


def _positive(key: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArgvError(f"config key {key} must be a positive integer, got {value!r}")
    return str(value)


def _choice(key: str, value, choices: Iterable[str]) -> str:
    if value not in tuple(choices):
        raise ArgvError(f"config key {key} is {value!r}; expected one of {', '.join(choices)}")
    return value


def _path(key: str, value) -> str:
    text = _text(key, value)
    if text.startswith("-"):  # would be read as a flag
        raise ArgvError(f"config key {key}: path {text!r} starts with '-'; write ./{text}")
    return text


def dims(key: str, value) -> str:
    """C,H,W as tao-converter's -d wants it."""
    parts = [value] if isinstance(value, str) else list(value) if value is not None else []
    text = ",".join(str(p) for p in parts)
    if not re.fullmatch(r"\d+,\d+,\d+", text) or any(int(p) <= 0 for p in text.split(",")):
        raise ArgvError(f"config key {key} must be C,H,W with positive integers, got {value!r}")
    return text


def profile(key: str, value) -> str:
    """name,NxCxHxW,NxCxHxW,NxCxHxW (min, opt, max)."""
    text = _text(key, value)
    if not _PROFILE.fullmatch(text):
        raise ArgvError(f"config key {key} must look like input_1,1x3x384x1248,8x3x384x1248,16x3x384x1248; "
                        f"got {text!r}")
    return text


def _opt(argv: list, flag: str, key: str, value, check=_text) -> None:
    if value is not None:
        argv += [flag, check(key, value)]


def _flag(argv: list, flag: str, key: str, value) -> None:
    if not isinstance(value, bool):
        raise ArgvError(f"config key {key} must be true or false, got {value!r}")
    if value:
        argv.append(flag)


# --------------------------------------------------------------------------- commands

def calibration_tensorfile(spec: str, output: str, max_batches: int, use_validation_set: bool) -> list:
    """detectnet_v2 calibration_tensorfile -e SPEC -o OUT -m MAX_BATCHES [--use_validation_set]"""
    argv = ["detectnet_v2", "calibration_tensorfile", "-e", _path("dataset.spec", spec),
            "-o", _path("calibration.output", output),
            "-m", _positive("calibration.max_batches", max_batches)]
    _flag(argv, "--use_validation_set", "calibration.use_validation_set", use_validation_set)
    return argv


def export(model: str, key: Secret, output: str, export_cfg, spec: str | None = None,
           cal_data_file: str | None = None, cal_image_dir: str | None = None,
           cal_cache_file: str | None = None, engine_file: str | None = None, cache_given: bool = False) -> list:
    """detectnet_v2 export -m MODEL -k KEY -o OUT [--data_type ...] [...]. cache_given: cal_cache_file
    already holds the scales (export.calibration_cache): TensorRT's calibrator reads it and draws no batch,
    so no calibration data is passed."""
    e = export_cfg
    argv = ["detectnet_v2", "export", "-m", _path("model.file", model), "-k", key,
            "-o", _path("export.output", output),
            "--data_type", _choice("export.data_type", e.data_type, DATA_TYPES)]
    if e.data_type == "int8" and cache_given:
        if not cal_cache_file:
            raise ArgvError("config key export.calibration_cache: the given cache must be passed as --cal_cache_file")
        if cal_data_file or cal_image_dir:
            raise ArgvError("config key export.calibration_cache: with a given cache, no calibration data is read")
        _opt(argv, "--cal_cache_file", "export.calibration_cache", cal_cache_file, _path)
    elif e.data_type == "int8":
        if not (cal_data_file or cal_image_dir):
            raise ArgvError("config key export.cal_source: int8 export needs a tensorfile or an image "
                            "directory (TAO would silently calibrate on random data)")
        _opt(argv, "--cal_data_file", "export.cal_source", cal_data_file, _path)
        _opt(argv, "--cal_image_dir", "export.cal_image_dir", cal_image_dir, _path)
        _opt(argv, "--cal_cache_file", "export.cal_cache_file", cal_cache_file, _path)
        argv += ["--batches", _positive("export.batches", e.batches),
                 "--batch_size", _positive("export.batch_size", e.batch_size)]
    _opt(argv, "--max_batch_size", "export.max_batch_size", e.max_batch_size, _positive)
    _opt(argv, "--max_workspace_size", "export.max_workspace_size", e.max_workspace_size, _positive)
    _opt(argv, "-e", "dataset.spec", spec, _path)
    _opt(argv, "--engine_file", "export.engine_file", engine_file, _path)
    _flag(argv, "--strict_type_constraints", "export.strict_type_constraints", e.strict_type_constraints)
    _flag(argv, "--force_ptq", "export.force_ptq", e.force_ptq)
    _flag(argv, "--gen_ds_config", "export.gen_ds_config", e.gen_ds_config)
    _flag(argv, "--verbose", "export.verbose", e.verbose)
    return argv


def tao_converter(model: str, key: Secret, input_dims, outputs: Sequence[str], convert_cfg, data_type: str,
                  engine: str, cache: str | None = None, cal_batch_size: int | None = None,
                  profiles: Sequence[str] = ()) -> list:
    """tao-converter -k KEY -d C,H,W -o out1,out2 [-c CACHE] [-e ENGINE] [-b] [-m] [-t] [-w] [-i]
    [-p name,min,opt,max]... [-s] [-u DLA] MODEL"""
    c = convert_cfg
    argv = ["tao-converter", "-k", key, "-d", dims("model input (C,H,W)", input_dims),
            "-o", ",".join(_text("convert.outputs", o) for o in outputs)]
    if data_type == "int8":
        _opt(argv, "-c", "export.cal_cache_file", cache or None, _path)
        if cache is None:
            raise ArgvError("config key export.data_type is int8 but there is no calibration cache to pass to -c")
    _opt(argv, "-e", "convert.engine_file", engine, _path)
    _opt(argv, "-b", "export.batch_size", cal_batch_size, _positive)
    argv += ["-m", _positive("convert.max_batch_size", c.max_batch_size),
             "-t", _choice("export.data_type", data_type, DATA_TYPES)]
    _opt(argv, "-w", "convert.workspace_mib", c.workspace_mib * (1 << 20) if c.workspace_mib else None, _positive)
    argv += ["-i", _choice("convert.input_order", c.input_order, INPUT_ORDERS)]
    for index, item in enumerate(profiles):
        argv += ["-p", profile(f"convert.profiles[{index}]", item)]
    _flag(argv, "-s", "convert.strict_type_constraints", c.strict_type_constraints)
    if c.dla_core is not None:
        if isinstance(c.dla_core, bool) or not isinstance(c.dla_core, int) or c.dla_core < 0:
            raise ArgvError(f"config key convert.dla_core must be a DLA core number, got {c.dla_core!r}")
        argv += ["-u", str(c.dla_core)]
    argv.append(_path("export.output", model))
    return argv


def gen_trt_engine(model: str, key: Secret | None, spec: str, convert_cfg, data_type: str, engine: str,
                   results_dir: str, cache: str | None = None, cal_data_file: str | None = None,
                   cal_image_dir: str | None = None, batches: int | None = None,
                   batch_size: int | None = None) -> list:
    """detectnet_v2 gen_trt_engine (TAO Deploy) -m MODEL -e SPEC --data_type ... --engine_file ... -r DIR"""
    c = convert_cfg
    argv = ["detectnet_v2", "gen_trt_engine", "-m", _path("export.output", model)]
    if key is not None:
        argv += ["-k", key]
    argv += ["-e", _path("dataset.spec", spec), "--data_type", _choice("export.data_type", data_type, DATA_TYPES),
             "--engine_file", _path("convert.engine_file", engine)]
    if data_type == "int8":
        _opt(argv, "--cal_cache_file", "export.cal_cache_file", cache, _path)
        _opt(argv, "--cal_data_file", "export.cal_source", cal_data_file, _path)
        _opt(argv, "--cal_image_dir", "export.cal_image_dir", cal_image_dir, _path)
        _opt(argv, "--batches", "export.batches", batches, _positive)
        _opt(argv, "--batch_size", "export.batch_size", batch_size, _positive)
    argv += ["--min_batch_size", _positive("convert.min_batch_size", c.min_batch_size),
             "--opt_batch_size", _positive("convert.opt_batch_size", c.opt_batch_size),
             "--max_batch_size", _positive("convert.max_batch_size", c.max_batch_size)]
    _opt(argv, "--workspace_size", "convert.workspace_mib", c.workspace_mib, _positive)
    _flag(argv, "--strict_type_constraints", "convert.strict_type_constraints", c.strict_type_constraints)
    argv += ["-r", _path("convert.results_dir", results_dir)]
    return argv


def evaluate(spec: str, engine: str, image_dir: str, label_dir: str, results_dir: str, batch_size: int) -> list:
    """detectnet_v2 evaluate (TAO Deploy) -e SPEC -m ENGINE -i IMAGE_DIR -l LABEL_DIR -r RESULTS_DIR -b BATCH"""
    return ["detectnet_v2", "evaluate", "-e", _path("dataset.spec", spec), "-m", _path("convert.engine_file", engine),
            "-i", _path("evaluate.image_dir", image_dir), "-l", _path("evaluate.label_dir", label_dir),
            "-r", _path("evaluate.results_dir", results_dir), "-b", _positive("evaluate.batch_size", batch_size)]
