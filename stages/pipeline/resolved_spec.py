"""The spec as a stage uses it: substituted with the configured references and overrides, checked
for the backend; and the images its directories hold, found relative to the project."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..detectnet_v2.preprocessing import ImageError, list_images
from ..spec import Spec, check, substitute
from .config import PROJECT, flatten, project_path


def resolve_spec(cfg: DictConfig) -> Spec:
    """Load the configured spec, map its references, apply overrides, check what the backend reads."""
    path = project_path(cfg.spec.file)
    spec = Spec.load(path)
    references = {ref: str(real) for ref, real in OmegaConf.to_container(cfg.spec.references).items()}
    overrides = {k: _literal(v) for k, v in flatten(OmegaConf.to_container(cfg.spec.set)).items()}
    resolved, rewrites = substitute(spec, references, overrides)
    kind = "open" if cfg.backend.name == "open" else "tao"
    check(resolved, kind, rewrites, list(cfg.spec.container_prefixes), base_dir=str(PROJECT))
    return resolved


def _literal(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def images_of(directories: tuple[str, ...], extension: str | None) -> list[Path]:
    """Images of the spec's image directories. A KITTI directory keeps them in image_2/, which is
    where TAO's TFRecords point; the open backend looks there when the directory has none itself."""
    found: list[Path] = []
    for directory in directories:
        base = project_path(directory)
        kitti = base / "image_2"
        try:
            found += list_images(base, extension)
        except ImageError:
            if not kitti.is_dir():
                raise
            found += list_images(kitti, extension)
    return found
