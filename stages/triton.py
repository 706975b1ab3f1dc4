"""Stage `triton`: a Triton model repository in artifacts/triton/ that answers an image with its
detections: the engine, Python-backend pre- and post-processing (the evaluate stage's own code), and an
ensemble of the three (see stages/serving/repository.py). `make serve` starts a Triton server on it."""
from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig, OmegaConf

from .detectnet_v2.evaluation import evaluation_setup
from .detectnet_v2.spec_facts import facts
from .pipeline import platform
from .pipeline.cli import run_stage
from .pipeline.config import CALIBRATION_DIR, ENGINE_DIR, RESOLVED_SPEC, TRITON_DIR, project_path
from .pipeline.errors import StageError
from .pipeline.outputs import staged_dir
from .serving.repository import RepositoryRequest, write_repository
from .serving.server import packed_environment
from .spec import Spec

log = logging.getLogger("stages.triton")


def run(cfg: DictConfig) -> None:
    platform.checked(OmegaConf.to_container(cfg))  # the repository carries the engine: valid where it was built
    spec = Spec.load(project_path(CALIBRATION_DIR) / RESOLVED_SPEC)
    spec_facts = facts(spec)
    setup = evaluation_setup(spec, spec_facts.width, spec_facts.height)
    engines = [path for path in (project_path(ENGINE_DIR) / name for name in ("model.onnx", "model.engine"))
               if path.is_file()]
    if not engines:
        raise StageError(f"{project_path(ENGINE_DIR)} holds no model.onnx or model.engine: run the convert stage")
    request = RepositoryRequest(engines[0], setup.classes, setup.clustering, spec_facts.width, spec_facts.height,
                                cfg.convert.max_batch_size, cfg.triton.engine_backend, cfg.triton.instances,
                                cfg.triton.max_queue_delay_microseconds, cfg.triton.max_image_pixels,
                                cfg.triton.max_request_bytes)
    if cfg.triton.pack_environment:  # the pre- and post-processing models are Python whatever the engine
        request.environment, request.stub = packed_environment()
    with staged_dir(project_path(TRITON_DIR)) as out:
        write_repository(out, request)
    log.info("triton: model repository for %s (%s), %d classes, batches up to %d%s", engines[0].name,
             cfg.triton.engine_backend, len(setup.classes), cfg.convert.max_batch_size,
             ", the Python models' environment packed in" if request.environment else "")


if __name__ == "__main__":
    sys.exit(run_stage("triton", __doc__, run))
