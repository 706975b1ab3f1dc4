"""The backend a stage uses, picked by `backend.name`: `stages.<package>.<step>`.
The open backend and the TAO runners never import each other; only this switch knows both."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from omegaconf import DictConfig

from .choices import BACKENDS

# backend.name -> the package holding its step modules (one per stage, named after the stage)
STEP_PACKAGES = {name: "open_backend" if name == "open" else "tao_backend" for name in BACKENDS}


def step(cfg: DictConfig, name: str) -> ModuleType:
    """The step module; stages import it before staging outputs, so that a signal arriving during
    the (slow, native) imports cannot strand a half-made output."""
    return importlib.import_module(f"stages.{STEP_PACKAGES[cfg.backend.name]}.{name}")


@dataclass
class ExportOutcome:
    """What a backend's export step tells the export stage, beyond the files it wrote: for the deployable
    ONNX and the export report."""
    maxima: dict[str, float] | None = None  # each tensor's largest magnitude on the calibration images
    calibration: dict = field(default_factory=dict)  # the report's `calibration` section
    float_layers: list[str] = field(default_factory=list)  # convolutions left in higher precision
