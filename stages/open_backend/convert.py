"""Open backend, convert: the engine convert.engine asks for (onnxruntime, or TensorRT through its Python
API or trtexec where it is installed with a GPU; never chosen by probing) and its verification against
the fp32 model."""
from __future__ import annotations

import logging
from pathlib import Path

from ..detectnet_v2.inference import OnnxRunner
from ..detectnet_v2.preprocessing import iter_batches
from ..pipeline.backends import ConvertReport, ConvertRequest
from ..pipeline.layout import TIMING_CACHE_DIR, engine_file, project_path
from ..pipeline.resolved_spec import images_of
from ..tensorrt.libraries import RTX_COMPUTE_CAPABILITIES
from . import engines
from .engine_request import EngineRequest

log = logging.getLogger("stages.open")


def run(request: ConvertRequest) -> ConvertReport:
    """Build the engine into the request's folder and verify it against the fp32 model where it runs here."""
    cfg, facts, exported, out = request.cfg, request.facts, request.exported, request.out
    data_type, kind, c = cfg.export.data_type, cfg.convert.engine, cfg.convert
    engine_path = out / Path(engine_file("open", kind)).name
    engine_request = EngineRequest.of(c, exported, data_type, engine_path, project_path(TIMING_CACHE_DIR))
    engines.build_engine(engine_request, out / "trtexec.log")
    log.info("built an %s %s engine", data_type, kind)  # fp16, fp32, int8: each reads with "an"
    if kind != "onnxruntime":  # no GPU to run it on here: TensorRT's engine is judged where it was built
        return ConvertReport(data_type, kind, engine_path.stat().st_size,
                             runs_on_compute_capabilities=RTX_COMPUTE_CAPABILITIES if kind == "tensorrt_rtx" else ())
    images = images_of(facts.validation_dirs or facts.training_dirs, facts.image_extension)[: cfg.convert.verify_images]
    batches = iter_batches(images, cfg.convert.max_batch_size, facts.width, facts.height, cfg.backend.workers)
    verification = engines.verify(OnnxRunner(engine_path), OnnxRunner(engine_request.model), batches,
                                  cfg.convert.max_batch_size)
    return ConvertReport(data_type, kind, engine_path.stat().st_size, verification)
