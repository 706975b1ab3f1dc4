"""Open backend, export: checked ONNX with TAO's names and a dynamic batch; for int8 the TensorRT
calibration cache (backend.calibration_method=auto: the method that measures best, int8_selection.py); with
gen_ds_config the DeepStream files. Returns what the deployable ONNX and the export report need: each
tensor's largest magnitude on the calibration images, the calibration's figures, the layers left out of INT8."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from omegaconf import DictConfig

from ..detectnet_v2.evaluation import evaluation_setup
from ..detectnet_v2.preprocessing import iter_batches, list_images
from ..detectnet_v2.spec_facts import SpecFacts
from ..formats import onnx_model
from ..formats.calibration_cache import AUTO, INT8_MAX, map_onto_model, read_cache, write_cache, write_scales
from ..formats.deepstream import write_deepstream_config
from ..formats.file_names import CACHE_FILE
from ..formats.tensorfile import describe, read_batches
from ..pipeline.backends import ExportReport, ExportRequest
from ..pipeline.layout import project_path
from ..pipeline.errors import StageError
from ..pipeline.progress import progress
from ..pipeline.resolved_spec import deepstream_classes, deepstream_clustering, images_of, training_images
from ..spec import Spec
from ..quantization import calibrate
from ..quantization.graph_index import GraphIndex
from ..quantization.histograms import clipped_share
from . import int8_selection

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
        _fewer_batches(export.batches, count, "the calibration tensorfile")  # no path: the log is an output
        count = min(count, export.batches)
        return (b[: export.batch_size] for b in read_batches(tensorfile, count)), count
    if source == "image_dir":
        directory = project_path(export.cal_image_dir)
        images = list_images(directory)  # a missing directory is an error, never random data
    else:  # training_data
        images = images_of(facts.training_dirs, facts.image_extension)
    _fewer_batches(export.batches, len(images) // export.batch_size,
                   f"the {len(images)} calibration images (batches of {export.batch_size})")
    count = min(export.batches, len(images) // export.batch_size)
    if count == 0:
        raise ValueError(f"export.batch_size is {export.batch_size} but the calibration images hold "
                         f"{len(images)}: not one full batch")
    images = images[: count * export.batch_size]
    return iter_batches(images, export.batch_size, facts.width, facts.height, cfg.backend.workers), count


def _fewer_batches(asked: int, held: int, source: str) -> None:
    if 0 < held < asked:
        log.warning("export.batches asks for %d calibration batches, but only %d are in %s: calibrating on %d",
                    asked, held, source, held)


# A given cache is checked on a few of the user's images: a tensor whose values the cache's range clips in
# more than this share is a sign the cache was made for another model. The limit lies between what a model's
# own cache clips and what another model's does, measured on the TAO family (tests/tao_family.py; figures in
# bench/README.md, "Measurements behind the code"). A cache whose ranges are only too wide clips nothing: the
# gate judges that one.
CACHE_CLIP_LIMIT = 0.02
CACHE_CHECK_BATCHES = 2


def _check_cache_on_images(cfg: DictConfig, facts: SpecFacts, exported: Path, scales: dict[str, float],
                           model: "onnx.ModelProto") -> None:
    """Say how far the cache's ranges agree with what the model produces on a few of the user's images (the
    spec's validation images: no calibration), and refuse one that clips a convolution's input too much."""
    directories = facts.validation_dirs or facts.training_dirs
    images = images_of(directories, facts.image_extension)[: CACHE_CHECK_BATCHES * cfg.export.batch_size] \
        if directories else []
    if not images:
        log.warning("calibration cache: no image to check it against the model on; the gate alone judges it")
        return
    inputs = {n.input[0] for n in model.graph.node if n.op_type == "Conv"} & set(scales)
    histograms = calibrate.collect_histograms(
        exported, iter_batches(images, cfg.export.batch_size, facts.width, facts.height, cfg.backend.workers),
        skip_zeros=True)  # a ReLU's exact zeros would only dilute the share clipped
    clipped = {t: clipped_share(histograms[t], scales[t] * INT8_MAX) for t in inputs if t in histograms}
    ratios = {t: scales[t] * INT8_MAX / histograms[t].top for t in inputs if t in histograms and histograms[t].top > 0}
    if not clipped:
        return
    worst = sorted(clipped, key=lambda t: -clipped[t])[:3]
    log.info("calibration cache against the model on %d images: it clips at most %.2f%% of a convolution input's "
             "values (%s); its ranges are %.2fx-%.2fx the largest values seen (median %.2fx)", len(images),
             100 * clipped[worst[0]], worst[0], min(ratios.values()), max(ratios.values()),
             float(np.median(list(ratios.values()))))
    if clipped[worst[0]] > CACHE_CLIP_LIMIT:
        listed = ", ".join(f"{t} {100 * clipped[t]:.1f}%" for t in worst)
        raise StageError(f"{cfg.export.calibration_cache}: its ranges clip {100 * clipped[worst[0]]:.1f}% of the values "
                         f"the model's convolution inputs take on {len(images)} of your images (a cache made for "
                         f"this model clips well under {100 * CACHE_CLIP_LIMIT:.0f}%): {listed}. Is it the "
                         "calibration cache of another model with the same tensor names? Calibrate on your images "
                         "instead: drop export.calibration_cache and set export.cal_source")


def _scales_from_cache(cfg: DictConfig, facts: SpecFacts, exported, renames: dict, out: Path) -> None:
    """The given cache's scales under the exported model's names (export renamed the input and outputs):
    what TensorRT would take from it for the original model. Nothing is calibrated: a few of the user's images
    only check that the cache suits the model."""
    given = project_path(cfg.export.calibration_cache)
    header, scales = read_cache(given)
    on_model = map_onto_model(cfg.export.calibration_cache, scales, exported, cfg.model.file, renames)
    _check_cache_on_images(cfg, facts, out / "model.onnx", on_model.scales, exported)
    write_scales(out / CACHE_FILE, header, on_model.scales)
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
    maxima = {}
    with progress(count, "fp16 ranges") as bar:
        calibrate.collect_ranges(exported, batches, "minmax", percentile=None, skip_zeros=cfg.backend.skip_zeros,
                                 progress=bar, maxima=maxima)
    return maxima


def _calibrate(cfg: DictConfig, facts: SpecFacts, spec_path: Path, exported: Path, tensorfile: Path,
               out: Path) -> ExportReport:
    """The calibration cache of backend.calibration_method; for auto, of the method that measures best on
    the selection set, without the tensors of the convolutions it leaves in higher precision."""
    method, backend = cfg.backend.calibration_method, cfg.backend
    samples = None
    if method == AUTO:  # checked before the long pass over the batches
        setup = evaluation_setup(Spec.load(spec_path), facts.width, facts.height)
        samples = int8_selection.selection_samples(facts, cfg.calibration.selection_images, setup)
    batches, count = _calibration_batches(cfg, facts, tensorfile)
    maxima: dict[str, float] = {}
    with progress(count, "calibration") as bar:
        if samples is None:
            amax = calibrate.collect_ranges(exported, batches, method, percentile=backend.percentile,
                                            skip_zeros=backend.skip_zeros, progress=bar, maxima=maxima)
        else:
            candidates = calibrate.collect_candidates(exported, batches, percentile=backend.percentile,
                                                      skip_zeros=backend.skip_zeros, progress=bar, maxima=maxima)
    outcome = ExportReport(maxima, {"method": method})
    if samples is not None:
        selection = int8_selection.choose(exported, candidates, samples, setup, cfg.export.batch_size,
                                          cfg.export.high_precision, maxima, cfg.evaluate.max_map_drop,
                                          cfg.export.max_float_layers, backend.workers,
                                          images_available=len(training_images(facts)))
        method, outcome.calibration, outcome.float_layers = selection.chosen, selection.report(), selection.float_layers
        # the implicit route and TAO's tools: a tensor without a scale keeps its layers out of INT8
        index = GraphIndex(onnx.load(str(exported)))
        float_tensors = {name for conv in selection.float_layers for name in index.fused_outputs(conv)}
        amax = {name: value for name, value in candidates[method].items() if name not in float_tensors}
    write_cache(out / CACHE_FILE, amax, method, backend.trt_version)
    log.info("calibration cache: %d tensors from %d batches (%s)", len(amax), count, method)
    return outcome


def run(request: ExportRequest) -> ExportReport:
    cfg, facts, spec_path, model, tensorfile, out = (request.cfg, request.facts, request.spec_path, request.model,
                                                     request.tensorfile, request.out)
    names = {onnx_model.TAO_OUTPUTS[0]: cfg.model.cov_output, onnx_model.TAO_OUTPUTS[1]: cfg.model.bbox_output}
    exported = out / "model.onnx"
    outcome = ExportReport(calibration={"method": None})
    model_proto = onnx_model.export_model(model, exported, cfg.model.input_name, names,
                                          (facts.channels, facts.height, facts.width), facts.source)
    log.info("exported %s -> %s (%s)", cfg.model.file, exported.name, cfg.export.data_type)
    if cfg.export.data_type == "int8" and cfg.export.calibration_cache:
        _scales_from_cache(cfg, facts, model_proto, onnx_model.tao_renames(cfg.model.input_name, names), out)
        outcome.calibration = {"method": "given", "cache": cfg.export.calibration_cache}
    elif cfg.export.data_type == "int8":
        outcome = _calibrate(cfg, facts, spec_path, exported, tensorfile, out)
    elif cfg.export.data_type == "fp16":
        outcome.maxima = _maxima_for_fp16(cfg, facts, exported, tensorfile)
    if cfg.export.gen_ds_config:
        classes = deepstream_classes(cfg, spec_path)
        write_deepstream_config(out, classes, (facts.channels, facts.height, facts.width), cfg.export.data_type,
                                deepstream_clustering(spec_path, classes))
    return outcome
