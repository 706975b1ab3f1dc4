"""Stage `sample`: generate the bundled sample (KITTI-style images and labels, a TAO spec with
container references, a DetectNet_v2-shaped ONNX model). Seeded and deterministic."""
from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from . import bundled_sample
from .pipeline.cli import run_stage
from .pipeline.config import SAMPLE_DATA, SAMPLE_MODELS, project_path
from .pipeline.outputs import staged_dir

log = logging.getLogger("stages.sample")


def run(cfg: DictConfig) -> None:
    s = cfg.sample
    with staged_dir(project_path(SAMPLE_DATA)) as data, staged_dir(project_path(SAMPLE_MODELS)) as models:
        bundled_sample.write_dataset(data, {"training": s.train_images, "validation": s.val_images},
                                s.seed, (s.image_width, s.image_height))
        bundled_sample.write_spec(data / "spec.txt", s.input_width, s.input_height, batch_size=8)
        bundled_sample.build_model(models / "detectnet_v2.onnx", s.input_width, s.input_height,
                              len(bundled_sample.CLASSES), s.model_width, s.model_seed)
    log.info("sample: %d training and %d validation images, spec and model written",
             s.train_images, s.val_images)


if __name__ == "__main__":
    sys.exit(run_stage("sample", __doc__, run))
