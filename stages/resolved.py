"""The spec as a stage uses it: substituted with the configured references and overrides,
checked for the backend, and the facts the steps need read from it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import PROJECT, flatten, project_path
from .images import ImageError, list_images
from .spec import Spec, check, substitute


@dataclass(frozen=True)
class SpecFacts:
    source: str
    width: int
    height: int
    channels: int
    batch_size: int
    image_extension: str | None
    training_dirs: tuple[str, ...]
    validation_dirs: tuple[str, ...]
    uses_validation_fold: bool


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


def _scalar(spec: Spec, path: str, default=None):
    matches = spec.find(path, strict=False)
    return matches[0].value.value if matches else default


def _int(spec: Spec, path: str, default: int | None = None) -> int:
    value = _scalar(spec, path)
    if value is None:
        if default is None:
            raise ValueError(f"{spec.source}: the spec has no {path}, which the deployment steps need")
        return default
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{spec.source}: {path} is {value!r}, not a number") from None


def facts(spec: Spec) -> SpecFacts:
    pre = "augmentation_config.preprocessing"
    batch_size = _int(spec, "training_config.batch_size_per_gpu")
    if batch_size <= 0:
        raise ValueError(f"{spec.source}: training_config.batch_size_per_gpu is {batch_size}; it must be positive")
    sources = "dataset_config.data_sources[*]", "dataset_config.validation_data_source"
    train, val = (tuple(m.value.value for m in spec.find(f"{s}.image_directory_path", strict=False)) for s in sources)
    return SpecFacts(
        source=spec.source,
        width=_int(spec, f"{pre}.output_image_width"),
        height=_int(spec, f"{pre}.output_image_height"),
        channels=_int(spec, f"{pre}.output_image_channel", 3),
        batch_size=batch_size,
        image_extension=_scalar(spec, "dataset_config.image_extension"),
        training_dirs=train,
        validation_dirs=val,
        uses_validation_fold=bool(spec.find("dataset_config.validation_fold", strict=False)),
    )


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
