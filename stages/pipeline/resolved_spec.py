"""The spec as a stage uses it: substituted with the configured references and overrides, checked
for the backend; and the images its directories hold, found relative to the project."""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..detectnet_v2.postprocessing import PostprocessingError, clustering_config
from ..detectnet_v2.preprocessing import ImageError, list_images
from ..spec import Spec, check, substitute
from .layout import PROJECT, project_path
from .stage_params import flatten


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
