"""Open backend, convert: the engine convert.engine asks for (onnxruntime, or TensorRT where it is
installed with a GPU; never chosen by probing) and its verification against the fp32 model."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ..detectnet_v2.inference import OnnxRunner
from ..detectnet_v2.preprocessing import iter_batches
from ..detectnet_v2.spec_facts import SpecFacts
from ..pipeline.resolved_spec import images_of
from . import engines

log = logging.getLogger("stages.open")


def run(cfg: DictConfig, facts: SpecFacts, spec_path: Path, exported: Path, out: Path) -> dict:  # noqa: ARG001
    """Build the engine into `out` and return the verification metrics."""
    data_type = cfg.export.data_type
    cache = exported / "calibration.bin" if data_type == "int8" else None
    if cache is not None and not cache.is_file():
        raise ValueError(f"{cache} does not exist: export with export=int8 first")
    kind = cfg.convert.engine
    engine_path = out / ("model.engine" if kind == "tensorrt" else "model.onnx")
    engines.build_engine(engines.EngineRequest(exported / "model.onnx", data_type, engine_path, cache,
                                               cfg.convert.max_batch_size, cfg.convert.workspace_mib, kind))
    log.info("built an %s %s engine", data_type, kind)  # fp16, fp32, int8: each reads with "an"
    if kind == "tensorrt":  # pragma: no cover - no TensorRT here
        return {"precision": data_type, "engine": kind, "engine_size_bytes": engine_path.stat().st_size}
    images = images_of(facts.validation_dirs or facts.training_dirs, facts.image_extension)[: cfg.convert.verify_images]
    batches = iter_batches(images, cfg.convert.max_batch_size, facts.width, facts.height, cfg.backend.workers)
    return engines.verify(OnnxRunner(engine_path), OnnxRunner(exported / "model.onnx"),
                          batches, cfg.convert.max_batch_size, data_type, engine_path, kind)
