"""Every check the stages make on the config's inputs, made at once by the `validate` stage before any
stage runs: the files the config names, the agreement of the model, the spec and dataset.classes, and of
the labels with the spec (every class it trains has labelled objects). The validate stage runs on every
`dvc repro` (always_changed), so an edited spec, model or label folder is checked again before any stage
that reads it deletes an output.
The schema's own checks (types, unknown keys, the backend's keys, ranges, cross-field rules) are
config.validate's, made by every stage; this module adds what needs the files.

Inputs that a stage of this pipeline writes (the bundled sample's data and model) need not exist yet:
their stage makes them, and the agreement checks apply to them from the next run on, once they exist
(export checks the model's input against the spec on every run)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from .layout import PIPELINE_OUTPUTS, PROJECT, project_path
from .errors import ConfigError, StageError


def _made_by_the_pipeline(path: Path) -> bool:
    return any(path == PROJECT / out or PROJECT / out in path.parents for out in PIPELINE_OUTPUTS)


def _model_files(cfg: DictConfig) -> list[tuple[str, str]]:
    """(config key, path) of the files the export stage reads from model.root: the model, a given cache."""
    named = [("model.file", cfg.model.file)]
    if cfg.export.calibration_cache:
        named.append(("export.calibration_cache", cfg.export.calibration_cache))
    return named


def _named_files(cfg: DictConfig) -> list[tuple[str, str]]:
    """(config key, path) of every input file or directory the config names."""
    named = [("dataset.root", cfg.dataset.root), ("dataset.spec", cfg.dataset.spec), ("model.root", cfg.model.root),
             *_model_files(cfg)]
    named += [(f"dataset.references[{ref}]", real) for ref, real in cfg.dataset.references.items()]
    named += [(f"evaluate.{key}", cfg.evaluate[key]) for key in ("image_dir", "label_dir") if cfg.evaluate[key]]
    if cfg.export.cal_source == "image_dir" and cfg.export.cal_image_dir:
        named.append(("export.cal_image_dir", cfg.export.cal_image_dir))
    if cfg.backend.get("key_file"):
        named.append(("backend.key_file", cfg.backend.key_file))
    return named


def _missing_files(cfg: DictConfig) -> list[str]:
    return [f"config key {key} names {value}, which does not exist" for key, value in _named_files(cfg)
            if not _made_by_the_pipeline(project_path(value)) and not project_path(value).exists()]


def _outside_model_root(cfg: DictConfig) -> list[str]:
    """The export stage's DVC dependency is model.root: a model file or cache outside it would change
    without DVC noticing."""
    root = project_path(cfg.model.root).resolve()
    return [f"config key {key} names {value}, which is not inside model.root {cfg.model.root} (the folder DVC "
            "tracks for the export stage): put it there, or set model.root to a folder that holds it"
            for key, value in _model_files(cfg) if not project_path(value).resolve().is_relative_to(root)]


def _check_cache(cfg: DictConfig) -> None:
    """A given calibration cache must parse, and scale some convolution input of an ONNX model.file
    (raises CalibrationCacheError, a ValueError, naming the file and line or the counts)."""
    from ..formats.calibration_cache import map_onto_model, read_cache
    from ..formats.onnx_model import load_model

    cache, model = project_path(cfg.export.calibration_cache), project_path(cfg.model.file)
    if not cache.is_file():
        return
    _, scales = read_cache(cache)
    if model.suffix == ".onnx" and model.is_file():  # the names TensorRT matches: the model file's own
        map_onto_model(cfg.export.calibration_cache, scales, load_model(model), cfg.model.file)


def _spec_classes_and_input(spec_path: Path) -> tuple[list[str], tuple[int, int, int] | None]:
    from ..detectnet_v2.spec_facts import input_chw, target_classes
    from ..spec import Spec

    spec = Spec.load(spec_path)
    return target_classes(spec), input_chw(spec)


def _model_shapes(model_path: Path, cfg: DictConfig) -> dict[str, tuple]:
    """{'input', 'coverage', 'bbox'}: the dimensions after the batch (None where not fixed) of the model's
    tensors that become TAO's input_1, output_cov/Sigmoid and output_bbox/BiasAdd."""
    from ..formats.onnx_model import TAO_INPUT, TAO_OUTPUTS, graph_inputs, load_model

    model = load_model(model_path)
    values = {v.name: v for v in [*model.graph.input, *model.graph.output, *model.graph.value_info]}
    wanted = {"input": cfg.model.input_name or TAO_INPUT, "coverage": cfg.model.cov_output or TAO_OUTPUTS[0],
              "bbox": cfg.model.bbox_output or TAO_OUTPUTS[1]}
    missing = [f"{role} {name!r}" for role, name in wanted.items() if name not in values]
    if missing:
        inputs = [i.name for i in graph_inputs(model)]
        raise ConfigError(
            f"model.file {model_path.relative_to(PROJECT) if PROJECT in model_path.parents else model_path} has no "
            f"{', '.join(missing)} (its inputs: {inputs}, outputs: {[o.name for o in model.graph.output]}); "
            "set model.input_name, model.cov_output and model.bbox_output to its tensors' names")

    def dims(name):
        shape = values[name].type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in shape[1:])
    return {role: dims(name) for role, name in wanted.items()}


def _agreement_problems(cfg: DictConfig) -> list[str]:
    """dataset.classes vs the spec's target_classes; the model's input vs the spec's preprocessing; its
    coverage and bbox channels vs the classes. Checked on the files there now."""
    spec_path, model_path = project_path(cfg.dataset.spec), project_path(cfg.model.file)
    if not spec_path.is_file():
        return []
    spec_name = cfg.dataset.spec
    spec_classes, spec_chw = _spec_classes_and_input(spec_path)
    problems = []
    if cfg.dataset.classes and spec_classes and list(cfg.dataset.classes) != spec_classes:
        problems.append(f"dataset.classes is {list(cfg.dataset.classes)}, but the spec {spec_name} trains "
                        f"cost_function_config.target_classes {spec_classes}, in that order (the order of the "
                        "model's outputs)")
    if not model_path.is_file():
        return problems
    shapes = _model_shapes(model_path, cfg)
    if spec_chw and len(shapes["input"]) == 3 and None not in shapes["input"] and shapes["input"] != spec_chw:
        problems.append(f"model.file {cfg.model.file} takes input (C,H,W)={shapes['input']}, but the spec "
                        f"{spec_name} preprocesses images to {spec_chw} (augmentation_config.preprocessing "
                        "output_image_channel/height/width)")
    classes = spec_classes or list(cfg.dataset.classes)
    for role, per_class in (("coverage", 1), ("bbox", 4)):
        channels = shapes[role][0] if shapes[role] else None
        if classes and channels is not None and channels != per_class * len(classes):
            problems.append(f"model.file {cfg.model.file} has {channels} {role} channels, but the spec {spec_name} "
                            f"has {len(classes)} classes {classes}: DetectNet_v2 has {per_class} per class")
    return problems


def _auto_selects(cfg: DictConfig) -> bool:
    """Whether export measures mAP on labelled training images (backend.calibration_method auto)."""
    return (cfg.export.data_type == "int8" and not cfg.export.calibration_cache and cfg.backend.name == "open"
            and cfg.backend.get("calibration_method") == "auto")


def _label_problems(cfg: DictConfig) -> list[str]:
    """Every class the spec trains has objects in the validation labels, and in the training labels where auto
    selects on them (a class without any would score AP 0 for the engine and fp32 alike, and pass the gate).
    Checked on the files there now; the bundled sample's, made after this stage, from the next run on."""
    from ..detectnet_v2.evaluation import evaluation_setup, label_census, validation_set
    from ..detectnet_v2.spec_facts import facts
    from .resolved_spec import resolve_spec, shown, training_label_dirs, validation_dirs

    if not project_path(cfg.dataset.spec).is_file() or not project_path(cfg.dataset.root).exists():
        return []
    spec = resolve_spec(cfg)
    spec_facts = facts(spec)
    setup = evaluation_setup(spec, spec_facts.width, spec_facts.height)
    image_dir, label_dir = validation_dirs(cfg, spec_facts)
    samples = validation_set(image_dir, label_dir, spec_facts.image_extension)
    problems = [label_census([s.label for s in samples], setup, shown(label_dir)).problem(setup.classes, "validation")]
    if _auto_selects(cfg):
        folders = [folder for folder in training_label_dirs(spec_facts) if folder.is_dir()]
        labels = [label for folder in folders for label in sorted(folder.glob("*.txt"))]
        census = label_census(labels, setup, ", ".join(shown(folder) for folder in folders) or "label_2/")
        problems.append(census.problem(setup.classes, "training"))
    return [problem for problem in problems if problem]


def check_inputs(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every problem found, or return."""
    problems = _missing_files(cfg) + _outside_model_root(cfg)
    try:
        problems += _agreement_problems(cfg)
        if not problems:
            problems += _label_problems(cfg)
        if cfg.export.calibration_cache:
            _check_cache(cfg)
    except (ValueError, OSError, StageError) as exc:  # a spec, model or label that cannot be read: say which
        problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems) if len(problems) == 1 else
                          f"{len(problems)} problems: " + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1)))
