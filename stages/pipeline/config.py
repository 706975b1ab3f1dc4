"""The one config loader: Hydra composition of conf/ (by hand, with overrides) or the composed
params.yaml (what DVC runs), checked against one schema whose errors name the config key.
OmegaConf is imported where it is used: the `platform` probe, which DVC runs on every `dvc repro`,
reads params.yaml with `read_params` alone and must start fast."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import yaml

from ..compute.workers import is_count

if TYPE_CHECKING:
    from omegaconf import DictConfig

PROJECT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT / "conf"

# Stage outputs (dvc.yaml names the same paths; a test keeps them in step).
CODE_DIR = "artifacts/code"  # one fingerprint of its code per pipeline stage, written by the `code` stage
VALIDATED_FILE = "artifacts/validated.txt"  # the `validate` stage's mark: the same bytes while the config is valid
PLATFORM_FILE = "artifacts/platform.json"  # what engines depend on beyond their inputs (the `platform` stage)
PARAMS_DIR = "artifacts/params"  # each stage's slice of params.yaml, written by the `validate` stage
PIPELINE_STAGES = ("validate", "sample", "calibration_tensorfile", "export", "convert", "evaluate", "metrics",
                   "triton")
SAMPLE_DATA, SAMPLE_MODELS = "data/sample", "models/sample"
CALIBRATION_DIR, EXPORT_DIR, ENGINE_DIR = "artifacts/calibration", "artifacts/export", "artifacts/engine"
EVALUATION_DIR = "artifacts/evaluation"
TRITON_DIR = "artifacts/triton"  # the Triton model repository
# export's, convert's and evaluate's reports: cached outputs, so that DVC's run-cache restores those stages whole
EXPORT_REPORT = "artifacts/reports/export.json"
CONVERT_REPORT, EVALUATE_REPORT = "artifacts/reports/convert.json", "artifacts/reports/evaluate.json"
# what the `metrics` stage publishes from them, in git: figures that should be identical apart from timings
METRICS_FILE, EVALUATE_METRICS_FILE = "metrics/convert.json", "metrics/evaluate.json"
EXPORT_METRICS_FILE = "metrics/export.json"
TIMINGS_FILE = "metrics/timings.json"
RESOLVED_SPEC, TENSORFILE = "spec.txt", "calibration.tensor"
# TensorRT's timing cache: kept between builds on this machine (ignored by git and DVC), so a rebuild
# re-times no layer it timed before. It changes which kernels an engine picks, never what it computes.
TIMING_CACHE_DIR = ".cache/tensorrt"
PIPELINE_OUTPUTS = (CODE_DIR, VALIDATED_FILE, PLATFORM_FILE, SAMPLE_DATA, SAMPLE_MODELS, CALIBRATION_DIR, EXPORT_DIR,
                    ENGINE_DIR, EVALUATION_DIR, TRITON_DIR, EXPORT_REPORT, CONVERT_REPORT, EVALUATE_REPORT,
                    EXPORT_METRICS_FILE, METRICS_FILE, EVALUATE_METRICS_FILE, TIMINGS_FILE)
DATA_TYPES = ("fp32", "fp16", "int8")  # precisions of export and conversion
ENGINE_KINDS = ("onnxruntime", "tensorrt", "trtexec")  # convert.engine: what the open backend builds with
# convert.quantization: precision from the deployable ONNX (explicit), or TensorRT 8's flags and the calibration
# cache (implicit); auto: explicit where the TensorRT found has it (10, 11), else implicit (8.6)
QUANTIZATIONS = ("auto", "explicit", "implicit")
HIGH_PRECISIONS = ("fp16", "fp32")  # export.high_precision: what an int8 model computes outside INT8
GATE_FAILURE_ACTIONS = ("stop", "record")  # evaluate.on_gate_failure

# What each stage reads of the config, one place for both ends: the `validate` stage writes each stage's
# slice of params.yaml (PARAMS_DIR/<stage>.json), which dvc.yaml makes the stage's dependency in place of
# `params:`, so DVC re-runs a stage only when a key it reads changed; and the stage is handed only these
# keys, so reading another fails at once, in every test, instead of going unnoticed. A section listed
# whole may leave keys out with "-key". DVC's own `params:` cannot: it lists keys, and a key one backend's
# config lacks is an error there.
CALIBRATION_ONLY = ("-backend.calibration_method", "-backend.percentile", "-backend.skip_zeros",
                    "-backend.trt_version")  # how export calibrates: nothing before it, nothing after the cache
CALIBRATION_METHODS = ("auto", "entropy", "minmax", "percentile")  # backend.calibration_method (open backend)
STAGE_PARAMS = {
    "sample": ("sample",),
    "calibration_tensorfile": ("spec", "calibration", "-calibration.selection_images", "export.calibration_cache",
                               "backend", *CALIBRATION_ONLY),
    # auto calibration measures mAP on a selection set, against the gate's threshold
    "export": ("export", "model", "dataset.classes", "backend", "calibration.selection_images",
               "evaluate.max_map_drop"),
    "convert": ("convert", "export.data_type", "export.batch_size", "export.batches", "backend", *CALIBRATION_ONLY),
    "evaluate": ("evaluate", "export.data_type", "convert.engine", "backend", *CALIBRATION_ONLY),
    "triton": ("triton", "convert.max_batch_size", "convert.engine", "backend", *CALIBRATION_ONLY),
}
BACKENDS = ("open", "tao", "tao_launcher", "tao_docker")  # backend.name: who runs the three steps
TRITON_ENGINE_BACKENDS = ("python", "auto")  # triton.engine_backend: how Triton runs the engine


class ConfigError(ValueError):
    """A config that cannot be composed or does not fit the schema. Names the key."""


@dataclass
class DatasetSection:
    root: str = "???"
    spec: str = "???"
    references: Dict[str, str] = field(default_factory=dict)
    classes: List[str] = field(default_factory=list)


@dataclass
class ModelSection:
    root: str = "???"
    file: str = "???"
    input_name: Optional[str] = None
    cov_output: Optional[str] = None
    bbox_output: Optional[str] = None


@dataclass
class SpecSection:
    file: str = "???"
    references: Dict[str, str] = field(default_factory=dict)
    set: Dict[str, Any] = field(default_factory=dict)
    container_prefixes: List[str] = field(default_factory=lambda: ["/workspace"])


@dataclass
class SampleSection:
    seed: int = 7
    train_images: int = 320
    val_images: int = 32
    image_width: int = 1242
    image_height: int = 375
    input_width: int = 624
    input_height: int = 192
    model_width: int = 16
    model_seed: int = 0


@dataclass
class CalibrationSection:
    max_batches: int = 10
    use_validation_set: bool = False
    seed: int = 42
    compression: Optional[str] = None
    selection_images: int = 32


@dataclass
class ExportSection:
    data_type: str = "fp32"
    calibration_cache: Optional[str] = None
    cal_source: Optional[str] = None
    cal_image_dir: Optional[str] = None
    batches: int = 10
    batch_size: int = 8
    max_batch_size: int = 8
    max_workspace_size: Optional[int] = None
    strict_type_constraints: bool = False
    force_ptq: bool = False
    gen_ds_config: bool = True
    verbose: bool = False
    high_precision: str = "fp16"
    max_float_layers: int = 4


@dataclass
class ConvertSection:
    max_batch_size: int = 8
    opt_batch_size: int = 8
    min_batch_size: int = 1
    workspace_mib: int = 1024
    input_order: str = "nchw"
    strict_type_constraints: bool = False
    dla_core: Optional[int] = None
    verify_images: int = 16
    engine: str = "onnxruntime"
    quantization: str = "auto"


@dataclass
class EvaluateSection:
    image_dir: Optional[str] = None
    label_dir: Optional[str] = None
    batch_size: int = 8
    max_map_drop: Optional[float] = 0.02
    on_gate_failure: str = "stop"
    draw_images: int = 4


@dataclass
class TritonSection:
    engine_backend: str = "python"
    instances: int = 1
    max_queue_delay_microseconds: int = 500
    max_image_pixels: int = 40_000_000
    max_request_bytes: int = 32 << 20
    pack_environment: bool = True


@dataclass
class PipelineConfig:
    dataset: DatasetSection = field(default_factory=DatasetSection)
    model: ModelSection = field(default_factory=ModelSection)
    backend: Dict[str, Any] = field(default_factory=dict)  # keys differ per backend: checked there
    export: ExportSection = field(default_factory=ExportSection)
    spec: SpecSection = field(default_factory=SpecSection)
    sample: SampleSection = field(default_factory=SampleSection)
    calibration: CalibrationSection = field(default_factory=CalibrationSection)
    convert: ConvertSection = field(default_factory=ConvertSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    triton: TritonSection = field(default_factory=TritonSection)


_CHOICES = {
    "export.data_type": DATA_TYPES,
    "export.cal_source": (None, "tensorfile", "image_dir", "training_data"),
    "calibration.compression": (None, "gzip", "lzf"),
    "convert.input_order": ("nchw", "nhwc", "nc"),
    "convert.engine": ENGINE_KINDS,
    "convert.quantization": QUANTIZATIONS,
    "export.high_precision": HIGH_PRECISIONS,
    "triton.engine_backend": TRITON_ENGINE_BACKENDS,
    "backend.name": BACKENDS,
}
_POSITIVE = ("calibration.max_batches", "export.batches", "export.batch_size", "export.max_batch_size",
             "convert.max_batch_size", "convert.opt_batch_size", "convert.min_batch_size",
             "convert.workspace_mib", "convert.verify_images", "sample.train_images", "sample.val_images",
             "sample.model_width", "evaluate.batch_size", "triton.instances", "calibration.selection_images",
             "triton.max_image_pixels", "triton.max_request_bytes")


def validate(raw: DictConfig | dict, source: str) -> DictConfig:
    """Merge onto the schema (types are checked there) and check value ranges."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = OmegaConf.merge(OmegaConf.structured(PipelineConfig), raw)
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        hint = ""
        if key == "experiment":  # a conf/experiment/ file composed into its group, not at the top
            hint = (". An experiment file is composed at the top of the config only when `# @package _global_` "
                    "is its first line: Hydra reads that header before any other line, comments included")
        raise ConfigError(f"{source}: config key {key}: {str(exc).splitlines()[0]}{hint}") from None
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            shown = ", ".join("null" if c is None else str(c) for c in choices)
            raise ConfigError(f"{source}: config key {key} is {value!r}; expected one of {shown}")
    backend_keys = set(yaml.safe_load((CONF_DIR / "backend" / f"{cfg.backend.name}.yaml").read_text()))
    unread = sorted(set(cfg.backend) - backend_keys)  # conf/backend/<name>.yaml lists what that backend reads
    if unread:
        raise ConfigError(f"{source}: config key backend.{unread[0]} is not read by backend {cfg.backend.name} "
                          f"(it reads {', '.join(sorted(backend_keys))})")
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
    method = cfg.backend.get("calibration_method")
    if method is not None and method not in CALIBRATION_METHODS:
        raise ConfigError(f"{source}: config key backend.calibration_method is {method!r}; expected one of "
                          f"{', '.join(CALIBRATION_METHODS)}")
    if cfg.evaluate.draw_images < 0:
        raise ConfigError(f"{source}: config key evaluate.draw_images must be 0 or more, "
                          f"got {cfg.evaluate.draw_images}")
    if cfg.evaluate.max_map_drop is not None and not 0 <= cfg.evaluate.max_map_drop <= 1:
        raise ConfigError(f"{source}: config key evaluate.max_map_drop must be between 0 and 1 (a drop in mAP), "
                          f"or null to turn the gate off; got {cfg.evaluate.max_map_drop}")
    if cfg.evaluate.on_gate_failure not in GATE_FAILURE_ACTIONS:
        raise ConfigError(f"{source}: config key evaluate.on_gate_failure is {cfg.evaluate.on_gate_failure!r}; "
                          f"expected one of {', '.join(GATE_FAILURE_ACTIONS)}")
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


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose conf/ with Hydra overrides, as `dvc exp run -S` does (and resolved the same way)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException as OmegaError

    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaError) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"cannot compose conf/ with overrides {list(overrides)}: {message}") from None
    return cfg


def composed_yaml(overrides: list[str] | tuple[str, ...] = ()) -> str:
    """params.yaml as DVC writes it for these overrides."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(compose(overrides))


def read_params(path: str | Path) -> dict:
    """params.yaml as plain data, not yet checked against the schema."""
    path = Path(path)
    try:
        # libyaml's loader where PyYAML has it: the same data, read several times faster
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping of config sections")
    return data


def load_params(path: str | Path) -> DictConfig:
    return validate(read_params(path), str(path))


def load(overrides: list[str] | tuple[str, ...] = (), params: str | Path | None = None) -> DictConfig:
    if params is not None:
        if overrides:
            raise ConfigError(f"overrides {list(overrides)} apply to conf/, not to {params}: "
                              "drop --params, or use `dvc exp run -S ...`")
        return load_params(params)
    return validate(compose(overrides), "conf/")


def _listed(key: str, entries: tuple[str, ...]) -> bool:
    def under(entry: str) -> bool:
        return key == entry or key.startswith(entry + ".")
    return any(under(e) for e in entries if not e.startswith("-")) and \
        not any(under(e[1:]) for e in entries if e.startswith("-"))


def stage_params(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The keys STAGE_PARAMS lists for `stage`, flattened ({'export.data_type': 'int8', ...}), sorted."""
    from omegaconf import OmegaConf

    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    return {key: flat[key] for key in sorted(flat) if _listed(key, STAGE_PARAMS[stage])}


def for_stage(cfg: DictConfig, stage: str) -> DictConfig:
    """The config as `stage` may read it: only what STAGE_PARAMS lists; reading another key raises."""
    from omegaconf import OmegaConf

    def keep(tree: Any, prefix: str) -> Any:
        if not isinstance(tree, dict) or not tree:
            return tree
        kept = {}
        for key, value in tree.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            below = [e.lstrip("-") for e in STAGE_PARAMS[stage] if e.lstrip("-").startswith(path + ".")]
            if below and isinstance(value, dict):  # part of it listed, or listed less some keys
                kept[key] = keep(value, path)
            elif _listed(path, STAGE_PARAMS[stage]):
                kept[key] = value
        return kept

    masked = OmegaConf.create(keep(OmegaConf.to_container(cfg, resolve=True), ""))
    OmegaConf.set_struct(masked, True)
    return masked


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: nested `spec.set` entries become field paths."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def project_path(path: str | Path) -> Path:
    """A config path, relative to the project root unless absolute."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT / path
