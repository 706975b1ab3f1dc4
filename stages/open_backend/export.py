"""Open backend, export: checked ONNX with TAO's names and a dynamic batch; for int8 the TensorRT
calibration cache; with gen_ds_config the DeepStream files. Returns each tensor's largest magnitude on the
calibration images, where it read them, for the deployable ONNX's fp16 range check."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ..detectnet_v2.preprocessing import iter_batches, list_images
from ..detectnet_v2.spec_facts import SpecFacts
from ..formats import onnx_model
from ..formats.calibration_cache import map_onto_model, read_cache, write_cache, write_scales
from ..formats.deepstream import write_deepstream_config
from ..formats.tensorfile import describe, read_batches
from ..pipeline.config import project_path
from ..pipeline.progress import progress
from ..pipeline.resolved_spec import deepstream_clustering, images_of
from . import int8_calibration

log = logging.getLogger("stages.open")


def _calibration_batches(cfg: DictConfig, facts: SpecFacts, tensorfile: Path, source: str | None = None):
    """(batch iterator, count) from the calibration source export.cal_source names (or `source`)."""
    export = cfg.export
    source = source or export.cal_source
    if source == "tensorfile":
        if not tensorfile.is_file():
            raise ValueError(f"export.cal_source is tensorfile but {tensorfile} does not exist "
                             "(run the calibration_tensorfile stage)")
        count, shape = describe(tensorfile)
        if shape and shape[0] < export.batch_size:
            raise ValueError(f"{tensorfile} holds batches of {shape[0]}, smaller than export.batch_size "
                             f"{export.batch_size}: TensorRT's calibrator would fail")
        count = min(count, export.batches)
        return (b[: export.batch_size] for b in read_batches(tensorfile, count)), count
    if source == "image_dir":
        directory = project_path(export.cal_image_dir)
        images = list_images(directory)  # a missing directory is an error, never random data
    else:  # training_data
        images = images_of(facts.training_dirs, facts.image_extension)
    count = min(export.batches, len(images) // export.batch_size)
    if count == 0:
        raise ValueError(f"export.batch_size is {export.batch_size} but the calibration images hold "
                         f"{len(images)}: not one full batch")
    images = images[: count * export.batch_size]
    return iter_batches(images, export.batch_size, facts.width, facts.height, cfg.backend.workers), count


def _scales_from_cache(cfg: DictConfig, exported, renames: dict, out: Path) -> None:
    """The given cache's scales under the exported model's names (export renamed the input and outputs):
    what TensorRT would take from it for the original model. No image is read."""
    given = project_path(cfg.export.calibration_cache)
    header, scales = read_cache(given)
    on_model = map_onto_model(cfg.export.calibration_cache, scales, exported, cfg.model.file, renames)
    write_scales(out / "calibration.bin", header, on_model.scales)
    moved = ", ".join(f"{old} -> {new}" for old, new in renames.items() if old in scales)
    log.info("calibration cache: %d scales from the given %s (%s)%s, no calibration; they scale the input of %d "
             "of the model's %d convolutions", len(on_model.scales), cfg.export.calibration_cache, header,
             f", renamed as export renamed the tensors ({moved})" if moved else "", on_model.covered,
             on_model.convolutions)
    if on_model.ignored:
        log.info("calibration cache: %d of its names match no tensor of the model and are ignored, as TensorRT "
                 "ignores them: %s", len(on_model.ignored), ", ".join(on_model.ignored))


def _maxima_for_fp16(cfg: DictConfig, facts: SpecFacts, exported: Path, tensorfile: Path) -> dict[str, float] | None:
    """Each tensor's largest magnitude on the calibration images (export.cal_source, or the calibration
    tensorfile where there is one), for keeping what overflows fp16 in fp32; None where there are none."""
    if cfg.export.cal_source is None and not tensorfile.is_file():
        return None
    batches, count = _calibration_batches(cfg, facts, tensorfile, cfg.export.cal_source or "tensorfile")
    maxima: dict[str, float] = {}
    with progress(count, "fp16 ranges") as bar:
        int8_calibration.collect_ranges(exported, batches, "minmax", progress=bar, maxima=maxima)
    return maxima


def run(cfg: DictConfig, facts: SpecFacts, spec_path: Path, model: Path, tensorfile: Path,
        out: Path) -> dict[str, float] | None:
    names = {onnx_model.TAO_OUTPUTS[0]: cfg.model.cov_output, onnx_model.TAO_OUTPUTS[1]: cfg.model.bbox_output}
    exported = out / "model.onnx"
    maxima = None
    model_proto = onnx_model.export_model(model, exported, cfg.model.input_name, names,
                                          (facts.channels, facts.height, facts.width), facts.source)
    log.info("exported %s -> %s (%s)", cfg.model.file, exported.name, cfg.export.data_type)
    if cfg.export.data_type == "int8" and cfg.export.calibration_cache:
        _scales_from_cache(cfg, model_proto, onnx_model.tao_renames(cfg.model.input_name, names), out)
    elif cfg.export.data_type == "int8":
        batches, count = _calibration_batches(cfg, facts, tensorfile)
        maxima = {}
        with progress(count, "calibration") as bar:
            amax = int8_calibration.collect_ranges(exported, batches, cfg.backend.calibration_method,
                                                   cfg.backend.percentile, bar, cfg.backend.skip_zeros, maxima)
        write_cache(out / "calibration.bin", amax, cfg.backend.calibration_method,
                                cfg.backend.trt_version)
        log.info("calibration cache: %d tensors from %d batches (%s)", len(amax), count, cfg.backend.calibration_method)
    elif cfg.export.data_type == "fp16":
        maxima = _maxima_for_fp16(cfg, facts, exported, tensorfile)
    if cfg.export.gen_ds_config:
        classes = list(cfg.dataset.classes)
        write_deepstream_config(out, classes, (facts.channels, facts.height, facts.width), cfg.export.data_type,
                                deepstream_clustering(spec_path, classes))
    return maxima
