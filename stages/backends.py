"""The backend a stage uses, picked by `backend.name`: `stages.<backend>_backend.<step>`.
The open backend and the TAO runners never import each other; only this switch knows both."""
from __future__ import annotations

import importlib
from types import ModuleType

from omegaconf import DictConfig


def step(cfg: DictConfig, name: str) -> ModuleType:
    """The step module; stages import it before staging outputs, so that a signal arriving during
    the (slow, native) imports cannot strand a half-made output."""
    package = "open_backend" if cfg.backend.name == "open" else "tao_backend"
    return importlib.import_module(f"{__package__}.{package}.{name}")
