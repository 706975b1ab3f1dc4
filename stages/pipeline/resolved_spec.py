"""The spec as a stage uses it: substituted with the configured references and overrides, checked
for the backend; and the images its directories hold, found relative to the project."""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from ..detectnet_v2.postprocessing import PostprocessingError, clustering_config
from ..detectnet_v2.preprocessing import ImageError, list_images
from ..spec import Spec, check, substitute
from .errors import StageError
from .layout import PROJECT, project_path
from .stage_params import flatten

if TYPE_CHECKING:
    from ..detectnet_v2.spec_facts import SpecFacts


def resolve_spec(cfg: DictConfig) -> Spec:
    """Load the configured spec, map its references, apply overrides, check what the backend reads."""
    path = project_path(cfg.dataset.spec)
    spec = Spec.load(path)
    references = {ref: str(real) for ref, real in OmegaConf.to_container(cfg.dataset.references).items()}
    overrides = {k: _literal(v) for k, v in flatten(OmegaConf.to_container(cfg.spec.set)).items()}
    resolved, rewrites = substitute(spec, references, overrides)
    kind = "open" if cfg.backend.name == "open" else "tao"
    check(resolved, kind, rewrites, list(cfg.spec.container_prefixes), base_dir=str(PROJECT))
    return resolved


def _literal(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _kitti_images(directory: str, extension: str | None) -> tuple[Path, list[Path]]:
    """A spec's image directory as the project sees it, and its images: the directory itself when it
    holds images, else its image_2/ (the KITTI layout, where TAO's TFRecords point)."""
    base = project_path(directory)
    try:
        return base, list_images(base, extension)
    except ImageError:
        if not (base / "image_2").is_dir():
            raise
        return base / "image_2", list_images(base / "image_2", extension)


def kitti_image_dir(directory: str, extension: str | None = None) -> Path:
    """The directory (itself or its image_2/) that holds a spec image directory's images."""
    return _kitti_images(directory, extension)[0]


def images_of(directories: tuple[str, ...], extension: str | None) -> list[Path]:
    """Images of the spec's image directories (each, or its image_2/)."""
    return [image for directory in directories for image in _kitti_images(directory, extension)[1]]


def validation_dirs(cfg: DictConfig, spec_facts: "SpecFacts") -> tuple[Path, Path]:
    """(image directory, label directory): evaluate.image_dir/label_dir, or the spec's validation data
    source (its image_2/ when it has one) with the KITTI labels in label_2/ beside the images."""
    if cfg.evaluate.image_dir:
        image_dir = project_path(cfg.evaluate.image_dir)
    elif spec_facts.validation_dirs:
        image_dir = kitti_image_dir(spec_facts.validation_dirs[0], spec_facts.image_extension)
    else:
        raise StageError(f"{spec_facts.source}: the spec has no dataset_config.validation_data_source."
                         "image_directory_path (it validates on a fold of the training data): set evaluate.image_dir "
                         "and evaluate.label_dir to a validation set")
    label_dir = project_path(cfg.evaluate.label_dir) if cfg.evaluate.label_dir else image_dir.parent / "label_2"
    return image_dir, label_dir


def training_images(spec_facts: "SpecFacts") -> list[Path]:
    """The spec's training images (what calibration reads), none of them a validation image."""
    validation = {p.resolve() for p in images_of(spec_facts.validation_dirs, spec_facts.image_extension)} \
        if spec_facts.validation_dirs else set()
    return [p for p in images_of(spec_facts.training_dirs, spec_facts.image_extension) if p.resolve() not in validation]


def evenly_spaced(items: list, count: int) -> list:
    """`count` of the items evenly spaced over the list (all of them when it holds no more): the same every run."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def shown(path: Path) -> str:
    """A path as messages show it: relative to the project where it is inside it."""
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def training_label_dirs(spec_facts: "SpecFacts") -> list[Path]:
    """The KITTI label folders (label_2/ beside image_2/) of the spec's training images."""
    return [kitti_image_dir(directory, spec_facts.image_extension).parent / "label_2"
            for directory in spec_facts.training_dirs]


def deepstream_classes(cfg: DictConfig, spec_path: Path) -> list[str]:
    """The classes in the order of the model's outputs, for DeepStream's labels.txt: the spec's
    cost_function_config.target_classes, from which Triton's labels.txt comes too, so the two never disagree.
    dataset.classes must name the same, in the same order (checked again here: the spec may have been edited
    since the validate stage ran)."""
    from ..detectnet_v2.spec_facts import target_classes

    classes = target_classes(Spec.load(spec_path))
    if cfg.dataset.classes and list(cfg.dataset.classes) != classes:
        raise StageError(f"dataset.classes is {list(cfg.dataset.classes)}, but the spec ({shown(spec_path)}, resolved from dataset.spec) trains "
                         f"cost_function_config.target_classes {classes}, in that order (the order of the model's "
                         "outputs): make them agree")
    return classes


def deepstream_clustering(spec_path: Path, classes: list[str]) -> list[dict] | None:
    """Each class's clustering_config as formats.deepstream takes it, or None (with a warning) when the
    spec's postprocessing_config cannot say: DeepStream then clusters with its defaults, and the evaluate
    stage reports the fault."""
    try:
        clustering = clustering_config(Spec.load(spec_path), classes)
    except PostprocessingError as exc:
        logging.getLogger("stages").warning("nvinfer_config.txt without clustering: %s", exc)
        return None
    return [asdict(clustering[name]) for name in classes]
