"""Stage `triton`: a Triton model repository in artifacts/triton/ that answers an image with its
detections: the engine, Python-backend pre- and post-processing (the evaluate stage's own code), and an
ensemble of the three (see stages/serving/repository.py). `make serve` starts a Triton server on it."""
from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from .detectnet_v2.evaluation import evaluation_setup
from .pipeline.cli import StageInputs, run_stage
from .pipeline.layout import TRITON_DIR, engine_file, engine_kind, project_path
from .pipeline.errors import StageError
from .pipeline.outputs import staged_dir
from .serving.repository import RepositoryRequest, write_repository
from .serving.server import packed_environment

log = logging.getLogger("stages.triton")


def run(cfg: DictConfig, inputs: StageInputs) -> None:
    spec_facts = inputs.facts
    setup = evaluation_setup(inputs.spec, spec_facts.width, spec_facts.height)
    engine = project_path(engine_file(cfg.backend.name, cfg.convert.engine))
    kind = engine_kind(cfg.backend.name, cfg.convert.engine)
    if kind == "tensorrt_rtx":
        raise StageError(f"convert.engine is tensorrt_rtx: {engine.name} is a TensorRT-RTX engine, and Triton's "
                         "TensorRT backend (like DeepStream's nvinfer and trtexec) loads TensorRT plans, not TensorRT-RTX "
                         "engines; serve -S convert.engine=onnxruntime here, or a TensorRT plan built on the serving "
                         "GPU (-S convert.engine=tensorrt or trtexec there)")
    if not engine.is_file():
        raise StageError(f"{engine} does not exist: run the convert stage")
    request = RepositoryRequest(engine, kind, setup.classes, setup.clustering, spec_facts.width, spec_facts.height,
                                cfg.convert.max_batch_size, cfg.triton.engine_backend, cfg.triton.instances,
                                cfg.triton.preprocess_instances,
                                cfg.triton.max_queue_delay_microseconds, cfg.triton.max_image_pixels,
                                cfg.triton.max_request_bytes)
    if cfg.triton.pack_environment:  # the pre- and post-processing models are Python whatever the engine
        request.environment, request.stub = packed_environment()
    with staged_dir(project_path(TRITON_DIR)) as out:
        write_repository(out, request)
    log.info("triton: model repository for %s (%s), %d classes, batches up to %d%s", engine.name,
             cfg.triton.engine_backend, len(setup.classes), cfg.convert.max_batch_size,
             ", the Python models' environment packed in" if request.environment else "")


if __name__ == "__main__":
    sys.exit(run_stage("triton", __doc__, run, reads_spec=True, checks_platform=True))
