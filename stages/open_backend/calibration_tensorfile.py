"""Open backend, calibration_tensorfile: the spec's images, preprocessed as TAO does, into a TensorFile."""
from __future__ import annotations

import logging
import random

from ..detectnet_v2.preprocessing import iter_batches
from ..formats.tensorfile import TensorFileWriter
from ..pipeline.backends import TensorfileReport, TensorfileRequest
from ..pipeline.progress import progress
from ..pipeline.resolved_spec import images_of

log = logging.getLogger("stages.open")


def run(request: TensorfileRequest) -> TensorfileReport:
    """Write the calibration TensorFile of the spec's images (the resolved spec's facts)."""
    cfg, facts, output = request.cfg, request.facts, request.output
    if cfg.calibration.use_validation_set:
        if not facts.validation_dirs:
            how = ("a TFRecords validation fold (dataset_config.validation_fold), which the open backend "
                   "cannot read: add a dataset_config.validation_data_source with an image_directory_path, "
                   "or use a TAO backend" if facts.uses_validation_fold else
                   "no dataset_config.validation_data_source")
            raise ValueError(f"{facts.source}: calibration.use_validation_set is true but the spec has {how}")
        directories = facts.validation_dirs
    else:
        directories = facts.training_dirs
        if not directories:
            raise ValueError(f"{facts.source}: the spec has no dataset_config.data_sources[*].image_directory_path")
    images = images_of(directories, facts.image_extension)
    random.Random(cfg.calibration.seed).shuffle(images)
    available = len(images) // facts.batch_size
    if available == 0:
        raise ValueError(f"{facts.source}: a batch needs {facts.batch_size} images "
                         f"(training_config.batch_size_per_gpu) but {', '.join(directories)} hold {len(images)}")
    batches = cfg.calibration.max_batches
    if batches > available:
        # TAO's dataloader repeats the dataset and would write duplicated batches; we stop at its end.
        log.warning("calibration.max_batches is %d but the data holds %d full batches of %d: writing %d",
                    batches, available, facts.batch_size, available)
        batches = available
    selected = images[: batches * facts.batch_size]
    with TensorFileWriter(output, cfg.calibration.compression) as writer, \
            progress(batches, "tensorfile") as bar:
        for batch in iter_batches(selected, facts.batch_size, facts.width, facts.height, cfg.backend.workers,
                                  reuse=True):
            writer.write(batch)
            bar.update(1)
    log.info("wrote %d batches of %s to %s", batches, (facts.batch_size, 3, facts.height, facts.width), output.name)
    return TensorfileReport(batches)
