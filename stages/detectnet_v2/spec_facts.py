"""What the deployment steps read from a DetectNet_v2 experiment spec: the network's input size, the
batch size, and the image directories of the training and validation data."""
from __future__ import annotations

from dataclasses import dataclass

from ..spec import Spec


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


PREPROCESSING = "augmentation_config.preprocessing"


def target_classes(spec: Spec) -> list[str]:
    """cost_function_config.target_classes by name: the model's classes, in the order of its outputs."""
    return [m.value.value for m in spec.find("cost_function_config.target_classes[*].name", strict=False)]


def input_chw(spec: Spec) -> tuple[int, int, int] | None:
    """(channels, height, width) the spec preprocesses images to; None when it gives no width or height."""
    if _scalar(spec, f"{PREPROCESSING}.output_image_width") is None or \
            _scalar(spec, f"{PREPROCESSING}.output_image_height") is None:
        return None
    return (_int(spec, f"{PREPROCESSING}.output_image_channel", 3), _int(spec, f"{PREPROCESSING}.output_image_height"),
            _int(spec, f"{PREPROCESSING}.output_image_width"))


def facts(spec: Spec) -> SpecFacts:
    pre = PREPROCESSING
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
