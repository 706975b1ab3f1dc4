"""Stage `sample`: generate the bundled sample: KITTI-style images and labels, a complete DetectNet_v2
spec with container references, and a DetectNet_v2 model fitted to the training images. Seeded and
deterministic."""
from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from . import bundled_sample
from .pipeline.cli import run_stage
from .pipeline.layout import SAMPLE_DATA, SAMPLE_MODELS, project_path
from .pipeline.outputs import staged_dir
from .pipeline.progress import progress

log = logging.getLogger("stages.sample")


def run(cfg: DictConfig) -> None:
    s = cfg.sample
    with staged_dir(project_path(SAMPLE_DATA)) as data, staged_dir(project_path(SAMPLE_MODELS)) as models:
        with progress(s.train_images + s.val_images, "sample images", unit="image") as bar:
            bundled_sample.write_dataset(data, {"training": s.train_images, "validation": s.val_images},
                                         s.seed, (s.image_width, s.image_height), bar)
        bundled_sample.write_spec(data / "spec.txt", s.input_width, s.input_height, batch_size=8)
        with progress(s.train_images, "sample model", unit="image") as bar:
            report = bundled_sample.fit_model(models / "detectnet_v2.onnx", data / "training", bundled_sample.CLASSES,
                                              s.input_width, s.input_height, s.model_width, s.model_seed, bar)
    covered = ", ".join(f"{name} {count}" for name, count in report.covered.items())
    log.info("sample: %d training and %d validation images, spec, and a model fitted on %d grid cells "
             "(covered: %s)", s.train_images, s.val_images, report.cells, covered)


if __name__ == "__main__":
    sys.exit(run_stage("sample", __doc__, run))
