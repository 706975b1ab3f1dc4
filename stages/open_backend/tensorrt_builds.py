"""TensorRT engines, built by TensorRT's Python API or by trtexec, on the route the installed version takes:

  explicit  the deployable ONNX (Q/DQ for INT8, fp16 tensors for FP16) as a strongly typed network: no
            precision flag, no calibration. TensorRT 10 and 11; the only route of 11, which removed the rest.
  implicit  model.onnx with precision flags (FP16, INT8) and, for INT8, the calibration cache's ranges:
            TensorRT 8's way, and TAO's. TensorRT 8.6 and 10 (which deprecated it).

convert.quantization=auto takes explicit where the version has it (10, 11), implicit on 8.6.
convert.engine=tensorrt_rtx builds with TensorRT-RTX (stages/tensorrt/libraries.py), whose API is 11's:
explicit only, ahead of time, on any machine. Neither TensorRT nor a GPU is on this project's CI: the tests
drive TensorRT's builders with stand-ins whose APIs and flags follow each version's documentation
(tests/fake_tensorrt, tests/fake_trtexec.py), and the same code with the real TensorRT-RTX."""
from __future__ import annotations

import logging
from pathlib import Path

from ..formats.calibration_cache import INT8_MAX, map_onto_model, read_cache
from ..formats.onnx_model import TAO_INPUT, input_chw, load_model
from ..pipeline.commands import CommandError, run_command
from ..pipeline.errors import StageError
from ..pipeline.platform import trtexec_version
from ..tensorrt import libraries, network_build
from ..tensorrt.libraries import Library, TensorRTVersion
from ..tensorrt.versions import abilities
from .engine_request import EngineRequest, needed_export_file

log = logging.getLogger("stages.convert")

def route(quantization: str, version: TensorRTVersion, other_library: str | None = None) -> str:
    """explicit or implicit, for convert.quantization on this TensorRT (API) version; an error where it has no
    such route. `other_library` names a library that is not TensorRT (Library.other_than_tensorrt)."""
    name, can = other_library or f"TensorRT {version}", abilities(version.major)
    if quantization == "auto":
        return "explicit" if can.strongly_typed else "implicit"
    if quantization == "implicit" and not can.implicit:
        raise StageError(
            f"convert.quantization is implicit, but {name} {'has no' if other_library else 'removed'} "
            "implicit quantization (precision "
            "builder flags, dynamic ranges, the INT8 calibrator and its cache): it builds only from the "
            "deployable ONNX, whose precision is in the graph. -S convert.quantization=explicit (or auto) builds "
            "from export's model.int8.onnx / model.fp16.onnx")
    if quantization == "explicit" and not can.strongly_typed:
        raise StageError(
            f"convert.quantization is explicit, but {name} has no strongly typed networks (TensorRT "
            "10 has): -S convert.quantization=implicit builds from model.onnx with precision flags and the "
            "calibration cache, as TAO does")
    return quantization


def timing_cache(request: EngineRequest, version: TensorRTVersion) -> Path | None:
    """The timing cache file of this TensorRT version (another version's does not load)."""
    return Path(request.timing_cache_dir) / f"timing-{version}.cache" if request.timing_cache_dir else None


def _profile_shapes(request: EngineRequest, model: Path) -> tuple[tuple[int, ...], ...]:
    chw = input_chw(load_model(model))
    if None in chw:
        raise StageError(f"{model} has no fixed (C, H, W) input: TensorRT's optimization profile needs one")
    batches = request.min_batch_size, request.opt_batch_size, request.max_batch_size
    return tuple((batch, *chw) for batch in batches)


# --------------------------------------------------------------------------- TensorRT's Python API

def tensorrt_library() -> Library:
    """TensorRT, or a StageError that says what is missing and what builds instead."""
    try:
        return libraries.tensorrt()
    except libraries.Unavailable:
        raise StageError("convert.engine is tensorrt, but TensorRT cannot build here: the tensorrt Python package "
                         "is not installed; -S convert.engine=trtexec builds with trtexec, -S convert.engine="
                         "tensorrt_rtx builds a TensorRT-RTX engine for RTX GPUs (on any machine), "
                         "-S convert.engine=onnxruntime builds an onnxruntime engine") from None


def tensorrt_rtx_library() -> Library:
    """TensorRT-RTX, or a StageError that says why it cannot load and what builds instead."""
    try:
        return libraries.tensorrt_rtx()
    except libraries.Unavailable as exc:
        raise StageError(f"convert.engine is tensorrt_rtx, but {exc} (its wheels are built for x86-64 Linux "
                         "with glibc 2.28 or newer, Python 3.11 and 3.12; make setup installs them); "
                         "-S convert.engine=onnxruntime builds an onnxruntime engine") from None


def build_with_python_api(request: EngineRequest, library: Library | None = None) -> None:
    """An engine with an optimization profile from min to max batch, the workspace limit and a timing cache,
    on the route the library takes: TensorRT (the default), or TensorRT-RTX, whose API is TensorRT 11's."""
    library = library or tensorrt_library()
    version = library.api
    chosen = route(request.quantization, version, library.other_than_tensorrt)
    model = needed_export_file(request, chosen)

    def implicit(trt, network, config) -> None:
        _implicit_precision(trt, network, config, request)
    built = network_build.build(library, model, _profile_shapes(request, model), request.workspace_mib,
                                timing_cache(request, version), implicit if chosen == "implicit" else None,
                                explicit=chosen == "explicit")
    Path(request.output).write_bytes(built.plan)
    log.info("%s built %s on the %s route from %s in %.1f s", library, Path(request.output).name, chosen,
             model.name, built.seconds)


def _implicit_precision(trt, network, config, request: EngineRequest) -> None:
    """TensorRT 8's precision: builder flags, and for INT8 each tensor's dynamic range from the cache."""
    if request.data_type == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if request.data_type != "int8":
        return
    config.set_flag(trt.BuilderFlag.INT8)
    _, scales = read_cache(request.cache)
    # TensorRT ignores the names it cannot find: a cache of another model would build an engine quietly
    map_onto_model(request.cache, scales, load_model(request.model), str(request.model))
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
    for tensor in tensors:
        if tensor.name in scales:
            tensor.dynamic_range = (-scales[tensor.name] * INT8_MAX, scales[tensor.name] * INT8_MAX)


# --------------------------------------------------------------------------- trtexec

def trtexec_argv(request: EngineRequest, version: TensorRTVersion, chosen: str, model: Path) -> list[str]:
    """trtexec's command line for this version and route. 11 refuses every precision flag ("Unknown
    option"); `--stronglyTyped` is a no-op there, so it goes to 10 only."""
    shapes = [f"{TAO_INPUT}:{'x'.join(map(str, shape))}" for shape in _profile_shapes(request, model)]
    argv = ["trtexec", f"--onnx={model}", f"--saveEngine={request.output}", f"--minShapes={shapes[0]}",
            f"--optShapes={shapes[1]}", f"--maxShapes={shapes[2]}", f"--memPoolSize=workspace:{request.workspace_mib}M"]
    timing = timing_cache(request, version)
    if timing:
        argv.append(f"--timingCacheFile={timing}")
    if chosen == "explicit" and abilities(version.major).typing_flag:
        argv.append("--stronglyTyped")
    elif chosen == "implicit":
        argv += {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", f"--calib={request.cache}"]}[request.data_type]
    return argv


def build_with_trtexec(request: EngineRequest, log_path: Path) -> None:
    """The engine built by the trtexec on PATH, through the one place that runs commands: its output
    streams to the console and log_path, and a failure shows trtexec's last lines."""
    found = trtexec_version()
    if found is None:
        raise _no_trtexec()
    version = TensorRTVersion.parse(found)
    chosen = route(request.quantization, version)
    model = needed_export_file(request, chosen)
    if request.timing_cache_dir:
        Path(request.timing_cache_dir).mkdir(parents=True, exist_ok=True)
    run_command(trtexec_argv(request, version, chosen, model), log_path, not_found=lambda _: _no_trtexec())
    if not Path(request.output).is_file() or Path(request.output).stat().st_size == 0:
        raise CommandError(f"trtexec {version} exited 0 but wrote no {Path(request.output).name} (see {log_path})")
    log.info("trtexec (TensorRT %s) built %s on the %s route from %s", version, Path(request.output).name, chosen,
             model.name)


def _no_trtexec() -> StageError:
    return StageError("convert.engine is trtexec, but no trtexec is on PATH: it comes with every TensorRT and "
                     "DeepStream container (/usr/src/tensorrt/bin/trtexec); put it on PATH, or "
                     "-S convert.engine=tensorrt (TensorRT's Python API) or onnxruntime")
