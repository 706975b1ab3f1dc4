"""Inference engines for the convert step, of the kind convert.engine asks for: an onnxruntime engine
(graph-optimized fp32, fp16, or int8 QDQ whose scales come from the calibration cache), or a TensorRT
engine where TensorRT and a GPU are (asked for elsewhere, an error). Plus the verification run against
the fp32 model."""
from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from ..formats.calibration_cache import check_cache_names, read_cache
from ..formats.onnx_model import TAO_INPUT, TAO_OUTPUTS
from ..pipeline.config import DATA_TYPES, ENGINE_KINDS

log = logging.getLogger("stages.convert")


def tensorrt_available() -> str | None:
    """Why TensorRT cannot be used here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    try:
        import ctypes
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no CUDA driver (libcuda.so.1) is present"
    return None


@dataclass
class EngineRequest:
    model: Path  # exported ONNX (TAO names, dynamic batch)
    data_type: str
    output: Path
    cache: Path | None = None
    max_batch_size: int = 8
    workspace_mib: int = 1024
    kind: str = "onnxruntime"  # convert.engine: asked for, never chosen by probing the machine


def build_engine(request: EngineRequest) -> str:
    """Build the engine file of the kind asked for; returns that kind."""
    if request.data_type not in DATA_TYPES:
        raise ValueError(f"data_type {request.data_type!r} is not one of {DATA_TYPES}")
    if request.kind not in ENGINE_KINDS:
        raise ValueError(f"convert.engine is {request.kind!r}, not one of {', '.join(ENGINE_KINDS)}")
    if request.data_type == "int8" and request.cache is None:
        raise ValueError("int8 conversion needs the calibration cache written by export (export=int8)")
    if request.kind == "tensorrt":
        reason = tensorrt_available()
        if reason is not None:
            raise ValueError(f"convert.engine is tensorrt, but TensorRT cannot build here: {reason}; "
                             "-S convert.engine=onnxruntime builds an onnxruntime engine instead")
        build_tensorrt(request)
    else:
        _build_onnxruntime(request)
    return request.kind


def _save_optimized(model: onnx.ModelProto, output: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # EXTENDED, not ALL: the saved graph stays free of this CPU's layout-specific rewrites.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(output)
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _build_onnxruntime(request: EngineRequest) -> None:
    model = onnx.load(str(request.model))
    if request.data_type == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16
        model = convert_float_to_float16(model, keep_io_types=True)
    elif request.data_type == "int8":
        model = quantize_with_cache(model, request.cache)
    _save_optimized(model, request.output)


QDQ_PER_CHANNEL_OPSET = 13  # QuantizeLinear/DequantizeLinear take `axis` (per-channel scales) from opset 13


def with_per_channel_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """(the model at an opset whose QDQ nodes take per-channel scales, True), upgrading an older one (TAO 4
    exported opset 11, TAO 5 opset 12); where the graph cannot be upgraded, (the model, False): its
    weights are then quantized per tensor, which every opset reads."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), QDQ_PER_CHANNEL_OPSET)
    if opset >= QDQ_PER_CHANNEL_OPSET:
        return model, True
    from onnx import version_converter
    try:
        upgraded = version_converter.convert_version(model, QDQ_PER_CHANNEL_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as exc:  # the converter has no adapter for some op of this graph
        log.warning("int8: the model's opset %d cannot be upgraded to %d (%s): its weights are quantized "
                    "per tensor, not per channel as TensorRT does", opset, QDQ_PER_CHANNEL_OPSET,
                    str(exc).strip().splitlines()[-1][:200])
        return model, False
    log.info("int8: the model's opset %d upgraded to %d, for per-channel weight scales", opset,
             QDQ_PER_CHANNEL_OPSET)
    return upgraded, True


def quantize_with_cache(model: onnx.ModelProto, cache: Path) -> onnx.ModelProto:
    """INT8 QDQ model whose activation scales are exactly the cache's (symmetric, zero point 0);
    weights are quantized per channel, as TensorRT does, where the model's opset allows it
    (with_per_channel_qdq)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    _, scales = read_cache(cache)
    check_cache_names(cache, scales, model)
    model, per_channel = with_per_channel_qdq(model)
    # A convolution whose input has no range stays in float, as TensorRT keeps such layers.
    unranged = [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] not in scales]
    ranges = {name: TensorData(lowest=np.float32(-s * 127.0), highest=np.float32(s * 127.0))
              for name, s in scales.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        shaped = load_model_with_shape_infer(path)
    quantizer = QDQQuantizer(
        shaped, per_channel=per_channel, reduce_range=False, weight_qType=QuantType.QInt8,
        activation_qType=QuantType.QInt8, tensors_range=TensorsData(CalibrationMethod.MinMax, ranges),
        nodes_to_quantize=[], nodes_to_exclude=unranged,
        # TensorRT fuses Conv with the Add/ReLU/Sigmoid after it, so INT8 data flows into each
        # convolution and its result stays in higher precision until the next one: quantize the
        # convolutions' inputs and weights, not their outputs.
        op_types_to_quantize=["Conv"],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                       "OpTypesToExcludeOutputQuantization": ["Conv"]})
    return quantizer.quantize_model()


def build_tensorrt(request: EngineRequest) -> None:
    """A TensorRT engine with an optimization profile up to max_batch_size, INT8 ranges from the
    cache. Needs TensorRT and a GPU, which no machine of this project's CI has: the tests drive it
    with a stand-in `tensorrt` module (tests/fake_tensorrt) up to the builder call."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(request.model).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {request.model}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_mib << 20)
    shape = tuple(network.get_input(0).shape)[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(TAO_INPUT, (1, *shape), (request.max_batch_size, *shape), (request.max_batch_size, *shape))
    config.add_optimization_profile(profile)
    if request.data_type == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if request.data_type == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        _, scales = read_cache(request.cache)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            for j in range(layer.num_outputs):
                tensor = layer.get_output(j)
                if tensor.name in scales:
                    tensor.dynamic_range = (-scales[tensor.name] * 127.0, scales[tensor.name] * 127.0)
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if tensor.name in scales:
                tensor.dynamic_range = (-scales[tensor.name] * 127.0, scales[tensor.name] * 127.0)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    Path(request.output).write_bytes(bytes(serialized))


# --------------------------------------------------------------------------- verification

def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator else float(np.array_equal(a, b))


def latency_ms(run, batch: np.ndarray, repeats: int = 10) -> float:
    run(batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def verify(engine, reference, batches: Iterable[np.ndarray], max_batch_size: int,
           data_type: str, engine_path: Path, engine_kind: str) -> dict:
    """Compare the engine with the fp32 model on the batches and time it: DVC metrics."""
    stats = {name: {"dot": 0.0, "nn_e": 0.0, "nn_r": 0.0, "max_abs": 0.0} for name in TAO_OUTPUTS}
    sample = None
    images = 0
    for batch in batches:
        images += len(batch)
        sample = batch if sample is None else sample
        for name, got, want in zip(TAO_OUTPUTS, engine(batch), reference(batch)):
            s = stats[name]
            got64, want64 = got.ravel().astype(np.float64), want.ravel().astype(np.float64)
            s["dot"] += float(got64 @ want64)
            s["nn_e"] += float(got64 @ got64)
            s["nn_r"] += float(want64 @ want64)
            s["max_abs"] = max(s["max_abs"], float(np.max(np.abs(got64 - want64))))
    if sample is None:
        raise ValueError("verification needs at least one image")
    outputs = {}
    for name, s in stats.items():
        denominator = np.sqrt(s["nn_e"] * s["nn_r"])
        outputs[name] = {"cosine_similarity": round(float(s["dot"] / denominator) if denominator else 1.0, 6),
                         "max_abs_error": round(s["max_abs"], 6)}
    one = sample[:1]
    full = np.concatenate([sample] * (-(-max_batch_size // len(sample))))[:max_batch_size]
    return {
        "precision": data_type,
        "engine": engine_kind,
        "images": images,
        "outputs": outputs,
        # stable keys, so experiments with other batch sizes share a column in `dvc exp show`
        "max_batch_size": max_batch_size,
        "latency_ms": {"batch_1": round(latency_ms(engine, one), 3), "max_batch": round(latency_ms(engine, full), 3)},
        "engine_size_bytes": Path(engine_path).stat().st_size,
    }
