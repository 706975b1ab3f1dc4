"""The config's schema and its checks: every key typed (Hydra's structured-config idiom: the schema holds no
value, conf/*.yaml holds every one, once), a key that takes one of a few values typed with them (one_of,
from choices.py), and the value ranges and combinations that cannot work, each refused with the config key
at fault. Each backend's section has its own schema, chosen by backend.name,
so a key that backend does not read is refused."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from omegaconf import MISSING

from ..compute.workers import is_count
from .choices import (BACKENDS, CAL_SOURCES, CALIBRATION_METHODS, COMPRESSIONS, DATA_TYPES, ENGINE_KINDS,
                      GATE_FAILURE_ACTIONS, HIGH_PRECISIONS, INCONCLUSIVE_ACTIONS, INPUT_ORDERS, QUANTIZATIONS,
                      TAO_EXPORT_FORMATS, TRITON_ENGINE_BACKENDS)
from .errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig


def one_of(choices: tuple) -> Any:
    """A key that takes one of `choices` (a tuple of choices.py): the schema's field carries them, and validate
    refuses any other value, naming the key. (OmegaConf types a choice only as an Enum, whose members would
    replace the strings every stage compares and prints.)"""
    return field(default=MISSING, metadata={"choices": choices})


@dataclass
class DatasetSection:
    root: str = MISSING
    spec: str = MISSING
    references: Dict[str, str] = MISSING
    classes: List[str] = MISSING


@dataclass
class ModelSection:
    root: str = MISSING
    file: str = MISSING
    input_name: Optional[str] = MISSING
    cov_output: Optional[str] = MISSING
    bbox_output: Optional[str] = MISSING


@dataclass
class SpecSection:
    set: Dict[str, Any] = MISSING
    container_prefixes: List[str] = MISSING


@dataclass
class SampleSection:
    seed: int = MISSING
    train_images: int = MISSING
    val_images: int = MISSING
    image_width: int = MISSING
    image_height: int = MISSING
    input_width: int = MISSING
    input_height: int = MISSING
    model_width: int = MISSING
    model_seed: int = MISSING


@dataclass
class CalibrationSection:
    max_batches: int = MISSING
    use_validation_set: bool = MISSING
    seed: int = MISSING
    compression: Optional[str] = one_of(COMPRESSIONS)
    selection_images: int = MISSING


@dataclass
class ExportSection:
    data_type: str = one_of(DATA_TYPES)
    calibration_cache: Optional[str] = MISSING
    cal_source: Optional[str] = one_of(CAL_SOURCES)
    cal_image_dir: Optional[str] = MISSING
    batches: int = MISSING
    batch_size: int = MISSING
    max_batch_size: int = MISSING
    max_workspace_size: Optional[int] = MISSING
    strict_type_constraints: bool = MISSING
    force_ptq: bool = MISSING
    gen_ds_config: bool = MISSING
    verbose: bool = MISSING
    high_precision: str = one_of(HIGH_PRECISIONS)
    max_float_layers: int = MISSING


@dataclass
class ConvertSection:
    max_batch_size: int = MISSING
    opt_batch_size: int = MISSING
    min_batch_size: int = MISSING
    workspace_mib: int = MISSING
    input_order: str = one_of(INPUT_ORDERS)
    strict_type_constraints: bool = MISSING
    dla_core: Optional[int] = MISSING
    verify_images: int = MISSING
    engine: str = one_of(ENGINE_KINDS)
    quantization: str = one_of(QUANTIZATIONS)


@dataclass
class EvaluateSection:
    image_dir: Optional[str] = MISSING
    label_dir: Optional[str] = MISSING
    batch_size: int = MISSING
    max_map_drop: Optional[float] = MISSING
    on_gate_failure: str = one_of(GATE_FAILURE_ACTIONS)
    min_agreement: float = MISSING
    on_inconclusive: str = one_of(INCONCLUSIVE_ACTIONS)
    agreement_images: int = MISSING
    draw_images: int = MISSING


@dataclass
class TritonSection:
    engine_backend: str = one_of(TRITON_ENGINE_BACKENDS)
    instances: int = MISSING
    preprocess_instances: int = MISSING
    max_queue_delay_microseconds: int = MISSING
    max_image_pixels: int = MISSING
    max_request_bytes: int = MISSING
    pack_environment: bool = MISSING


@dataclass
class OpenBackend:
    name: str = MISSING
    key_env: str = MISSING
    calibration_method: str = one_of(CALIBRATION_METHODS)
    percentile: float = MISSING
    skip_zeros: bool = MISSING
    trt_version: int = MISSING
    workers: Optional[int] = MISSING


@dataclass
class TaoBackend:
    name: str = MISSING
    key_env: str = MISSING
    key_file: Optional[str] = MISSING
    export_format: str = one_of(TAO_EXPORT_FORMATS)
    converter: str = MISSING


@dataclass
class TaoImages:
    tf1: str = MISSING
    deploy: str = MISSING


@dataclass
class TaoDockerBackend(TaoBackend):
    docker: str = MISSING
    images: TaoImages = field(default_factory=TaoImages)
    gpus: str = MISSING
    map_user: bool = MISSING
    mounts: List[Dict[str, Any]] = MISSING
    docker_args: List[str] = MISSING


@dataclass
class TaoLauncherBackend(TaoBackend):
    launcher: str = MISSING
    model_task_group: Optional[str] = MISSING
    deploy_task_group: Optional[str] = MISSING
    mounts: List[Dict[str, Any]] = MISSING
    map_user: bool = MISSING
    envs: Dict[str, Any] = MISSING
    docker_options: Dict[str, Any] = MISSING


BACKEND_SCHEMAS = {"open": OpenBackend, "tao": TaoBackend, "tao_docker": TaoDockerBackend,
                   "tao_launcher": TaoLauncherBackend}


@dataclass
class PipelineConfig:
    dataset: DatasetSection = field(default_factory=DatasetSection)
    model: ModelSection = field(default_factory=ModelSection)
    backend: Any = MISSING  # typed by backend.name: BACKEND_SCHEMAS
    export: ExportSection = field(default_factory=ExportSection)
    spec: SpecSection = field(default_factory=SpecSection)
    sample: SampleSection = field(default_factory=SampleSection)
    calibration: CalibrationSection = field(default_factory=CalibrationSection)
    convert: ConvertSection = field(default_factory=ConvertSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    triton: TritonSection = field(default_factory=TritonSection)


def choice_keys(schema: type, prefix: str = "") -> dict[str, tuple]:
    """{config key: its choices} for every one_of field of `schema` and the sections under it."""
    found = {}
    for item in dataclasses.fields(schema):
        if "choices" in item.metadata:
            found[prefix + item.name] = item.metadata["choices"]
        elif dataclasses.is_dataclass(item.default_factory):
            found.update(choice_keys(item.default_factory, f"{prefix}{item.name}."))
    return found


_POSITIVE = ("calibration.max_batches", "export.batches", "export.batch_size", "export.max_batch_size",
             "convert.max_batch_size", "convert.opt_batch_size", "convert.min_batch_size",
             "convert.workspace_mib", "convert.verify_images", "sample.train_images", "sample.val_images",
             "sample.model_width", "evaluate.batch_size", "triton.instances", "triton.preprocess_instances",
             "calibration.selection_images", "triton.max_image_pixels", "triton.max_request_bytes")


def _did_you_mean(key: str, known: list[str]) -> str:
    """The hint "; did you mean `x`?" for the known key nearest a typo (difflib), or "" when none is near."""
    import difflib

    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def validate(raw: DictConfig | dict, source: str) -> DictConfig:
    """Merge onto the schema (types are checked there) and check value ranges."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    backend = raw.get("backend") if hasattr(raw, "get") else None
    name = backend.get("name") if hasattr(backend, "get") else None
    if name not in BACKEND_SCHEMAS:
        raise ConfigError(f"{source}: config key backend.name is {name!r}; expected one of {', '.join(BACKENDS)}")
    try:
        schema = OmegaConf.structured(PipelineConfig)
        schema.backend = OmegaConf.structured(BACKEND_SCHEMAS[name])
        cfg = OmegaConf.merge(schema, raw)
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        hint = ""
        if key == "experiment":  # a conf/experiment/ file composed into its group, not at the top
            hint = (". An experiment file is composed at the top of the config only when `# @package _global_` "
                    "is its first line: Hydra reads that header before any other line, comments included")
        elif isinstance(exc, ConfigKeyError) and key.startswith("backend.") and key.count(".") == 1:
            known = sorted(BACKEND_SCHEMAS[name].__dataclass_fields__)
            raise ConfigError(f"{source}: config key {key} is not read by backend {name}{_did_you_mean(key, known)} "
                              f"(it reads {', '.join(known)})") from None
        elif isinstance(exc, ConfigKeyError):
            section = OmegaConf.select(schema, key.rsplit(".", 1)[0]) if "." in key else schema
            if isinstance(section, DictConfig):
                hint = _did_you_mean(key, [str(k) for k in section.keys()])
        raise ConfigError(f"{source}: config key {key}: {str(exc).splitlines()[0]}{hint}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{source}: config key {missing[0]} has no value (conf/ gives every key one: "
                          "compose conf/ with `make params`, or set it)")
    for key, choices in {**choice_keys(PipelineConfig), **choice_keys(BACKEND_SCHEMAS[name], "backend.")}.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            shown = ", ".join("null" if c is None else str(c) for c in choices)
            raise ConfigError(f"{source}: config key {key} is {value!r}; expected one of {shown}")
    if cfg.backend.get("export_format") == "etlt":
        raise ConfigError(f"{source}: config key backend.export_format is etlt (TAO 3/4), which cannot pass the "
                          "pipeline: evaluate judges the engine against the exported fp32 ONNX "
                          "(artifacts/export/model.onnx), and an .etlt is encrypted, read only by TAO's converters. "
                          "Export onnx (TAO 5 and later export DetectNet_v2 as ONNX): -S backend.export_format=onnx")
    for key in _POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is None or value <= 0:
            raise ConfigError(f"{source}: config key {key} must be a positive integer, got {value}")
    batches = cfg.convert.min_batch_size, cfg.convert.opt_batch_size, cfg.convert.max_batch_size
    if not batches[0] <= batches[1] <= batches[2]:
        raise ConfigError(f"{source}: config keys convert.min_batch_size <= opt_batch_size <= max_batch_size must "
                          f"hold (an engine's optimization profile); got {batches[0]}, {batches[1]}, {batches[2]}")
    if cfg.export.max_float_layers < 0:
        raise ConfigError(f"{source}: config key export.max_float_layers must be 0 or more (0: no layer leaves INT8), "
                          f"got {cfg.export.max_float_layers}")
    workers = cfg.backend.get("workers")
    if workers is not None and not is_count(workers):
        raise ConfigError(f"{source}: config key backend.workers must be 1 or more (threads for decoding, "
                          f"calibration, post-processing and onnxruntime), or null for every core the process may "
                          f"use; got {workers!r}")
    if cfg.evaluate.draw_images < 0:
        raise ConfigError(f"{source}: config key evaluate.draw_images must be 0 or more, "
                          f"got {cfg.evaluate.draw_images}")
    if cfg.evaluate.max_map_drop is not None and not 0 <= cfg.evaluate.max_map_drop <= 1:
        raise ConfigError(f"{source}: config key evaluate.max_map_drop must be between 0 and 1 (a drop in mAP), "
                          f"or null to turn the gate off; got {cfg.evaluate.max_map_drop}")
    if not 0 <= cfg.evaluate.min_agreement <= 1:
        raise ConfigError(f"{source}: config key evaluate.min_agreement must be between 0 and 1 (an F1 of the "
                          f"engine's boxes against the fp32 model's), got {cfg.evaluate.min_agreement}")
    if cfg.evaluate.agreement_images < 0:
        raise ConfigError(f"{source}: config key evaluate.agreement_images must be 0 or more, "
                          f"got {cfg.evaluate.agreement_images}")
    if cfg.sample.input_width % 16 or cfg.sample.input_height % 16:
        raise ConfigError(f"{source}: config keys sample.input_width/input_height must be multiples of 16")
    if cfg.convert.quantization == "implicit" and cfg.convert.engine == "onnxruntime":
        raise ConfigError(f"{source}: config key convert.quantization is implicit, TensorRT's route with precision "
                          "flags and the calibration cache; the onnxruntime engine is built from the deployable "
                          "ONNX: -S convert.engine=tensorrt (or trtexec), or -S convert.quantization=auto")
    if cfg.export.calibration_cache and cfg.export.data_type != "int8":
        raise ConfigError(f"{source}: config key export.calibration_cache is set, but export.data_type is "
                          f"{cfg.export.data_type}: a calibration cache deploys int8 (-S export=int8)")
    if cfg.export.data_type == "int8" and cfg.export.cal_source is None and not cfg.export.calibration_cache:
        raise ConfigError(f"{source}: config key export.cal_source: int8 needs a calibration source "
                          "(tensorfile, image_dir or training_data); TAO would calibrate on random data")
    if cfg.export.cal_source == "image_dir" and not cfg.export.cal_image_dir:
        raise ConfigError(f"{source}: config key export.cal_image_dir must name a directory when "
                          "export.cal_source is image_dir")
    return cfg


