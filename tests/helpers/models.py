"""A tiny exported model, images for it, and the engine request convert makes for it."""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path


def tiny_export(folder: Path) -> Path:
    """The sample's graph at 96x48 (base width 8, random heads) exported as the export stage does, in
    `folder` (sample.onnx, model.onnx); returns the folder."""
    from stages import bundled_sample
    from stages.formats.onnx_model import export_model

    bundled_sample.build_model(folder / "sample.onnx", 96, 48, base_width=8, seed=1)
    export_model(folder / "sample.onnx", folder / "model.onnx", expected_chw=(3, 48, 96))
    return folder


@functools.lru_cache(maxsize=None)
def _composed_convert():
    from stages.pipeline import config
    return config.load([]).convert


def engine_request(export_dir: Path, data_type: str, output: Path, **changes):
    """The engine request the convert stage makes with conf/'s values, with `changes`."""
    from stages.open_backend.engine_request import EngineRequest
    return dataclasses.replace(EngineRequest.of(_composed_convert(), export_dir, data_type, output, None), **changes)


def tiny_images(seed: int = 0, n: int = 4, gain: float = 1.0):
    """n images for tiny_export's model: a horizontal ramp with noise, in [0, gain]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = np.linspace(0, 1, 96, dtype=np.float32)[None, None, None, :]
    return (np.clip(base + rng.normal(0, 0.1, (n, 3, 48, 96)).astype(np.float32), 0, 1) * gain).astype(np.float32)
