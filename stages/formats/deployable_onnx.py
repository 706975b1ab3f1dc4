"""The deployable ONNX: the graph TensorRT 10 and 11 (strongly typed), DeepStream and Triton build an engine
from, with its precision inside it. TensorRT 11 removed implicit quantization and weak typing (builder
precision flags, per-tensor dynamic ranges, INT8 calibrators): INT8 comes only from Q/DQ nodes, FP16
only from fp16 tensors. The file depends on no GPU, so a fleet writes it once and each machine compiles it.

- int8 (`model.int8.onnx`): explicit quantization by TensorRT's rules. Symmetric INT8, zero point 0 written
  as int8 (an omitted one reads as uint8); each quantized convolution reads its data and its weights
  through Q/DQ, weights per output channel (axis 0, opset 13+); a residual Add gets Q/DQ on its residual
  input only, so TensorRT fuses the other branch's convolution with the Add; biases stay float; no Q/DQ on
  the network's outputs. Activation scales are the calibration cache's. What is not quantized computes in
  fp16 (ModelOpt's default `high_precision_dtype`, and what TensorRT 8's `--int8 --fp16` built) or fp32.
- fp16 (`model.fp16.onnx`): every tensor fp16 but the inputs and outputs (fp32, as the fp32 model has them).
- either way, a node whose tensors exceed FP16_DATA_MAX on the calibration images stays fp32.

Where it places Q/DQ differently from NVIDIA ModelOpt's ONNX PTQ, and why:
- only convolutions and residual Adds are quantized (ModelOpt also quantizes pooling, Gemm, MatMul and Mul):
  a DetectNet_v2 is convolutions, whose INT8 kernels are the gain, and TensorRT moves Q/DQ across pooling
  and concatenation itself; measured on a real TAO 5 export, the residual Adds' Q/DQ were the one
  difference that changed the outputs;
- convolutions of under 16 channels are quantized too (ModelOpt skips them): TensorRT's implicit INT8,
  which built TAO's engines and which the gate has judged, quantized every convolution the cache scales,
  and a pruned TAO model has many such layers.
Written here rather than by a library: onnxruntime's QDQ quantizer writes int32 bias DequantizeLinear
nodes and Q/DQ between a convolution and its residual Add, which TensorRT's placement rules exclude, and
NVIDIA ModelOpt's ONNX PTQ, which follows those rules, needs torch. The fp16 conversion is onnxruntime's
float16 converter. `lint` checks any ONNX against these rules."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .calibration_cache import INT8_MAX
from .file_names import DEPLOYABLE_FILES

HIGH_PRECISIONS = ("fp16", "fp32")  # export.high_precision: what is not INT8 computes in
QDQ_PER_CHANNEL_OPSET = 13  # QuantizeLinear/DequantizeLinear take `axis` (per-channel scales) from opset 13
FP16_QDQ_OPSET = 19  # and a float16 scale (DequantizeLinear then gives float16) from opset 19
# A node whose inputs or outputs reach past this on the calibration images stays fp32: the calibration
# images are a sample, so the margin to fp16's 65504 is wide. ModelOpt AutoCast's `data_max` default.
FP16_DATA_MAX = 512.0
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# ops TensorRT fuses into the convolution before it: biased BatchNorm as tf2onnx writes it (Mul, Add with a
# constant), or BatchNormalization. A residual Add fed through them still fuses with that convolution.
_FUSIBLE_AFTER_CONV = ("Mul", "Add", "BatchNormalization")


def deployable_file(data_type: str) -> str:
    """The deployable ONNX's file name in the export folder, for a precision."""
    if data_type not in DEPLOYABLE_FILES:
        raise ValueError(f"precision {data_type!r} is not one of {', '.join(DEPLOYABLE_FILES)}")
    return DEPLOYABLE_FILES[data_type]


@dataclass
class Deployable:
    """A deployable model and what was decided in making it: the export log and report say it."""
    model: onnx.ModelProto
    opset: int
    per_channel: bool = True
    quantized: list[str] = field(default_factory=list)  # convolutions computing in INT8
    unquantized: list[str] = field(default_factory=list)  # convolutions whose input has no scale
    left_out: list[str] = field(default_factory=list)  # convolutions kept in higher precision as asked
    residual_inputs: list[str] = field(default_factory=list)  # tensors quantized as a residual Add's input
    kept_fp32: dict[str, float] = field(default_factory=dict)  # node -> largest value seen, past FP16_DATA_MAX
    upgrade_failure: str | None = None  # why the opset could not be raised, if it could not


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _upgraded(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    from onnx import version_converter

    upgraded = version_converter.convert_version(model, target)
    upgraded.ir_version = max(upgraded.ir_version, helper.find_min_ir_version_for(
        [helper.make_opsetid("", target)], ignore_unknown=True))
    onnx.checker.check_model(upgraded)
    return upgraded


def _at_opset(model: onnx.ModelProto, wanted: int) -> tuple[onnx.ModelProto, str | None]:
    """The model at opset `wanted` or later, else (the model unchanged, why): onnx's converter lacks an
    adapter for some ops (TAO 4 exported opset 11, TAO 5 opset 12)."""
    if opset_of(model) >= wanted:
        return model, None
    try:
        return _upgraded(model, wanted), None
    except Exception as exc:  # noqa: BLE001 - the converter raises from its C++ adapter lookup
        return model, str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__


def _named(model: onnx.ModelProto) -> None:
    """Every node gets a unique name: the fp16 converter and TensorRT's layer names need one."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def _constants(model: onnx.ModelProto) -> set[str]:
    constants = {i.name for i in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return constants


def _fused_conv(tensor: str, producers: Mapping[str, onnx.NodeProto], constants: set[str]) -> onnx.NodeProto | None:
    """The convolution TensorRT fuses into `tensor`'s producer chain (Conv, then any batch-norm Mul/Add with
    a constant), or None."""
    node = producers.get(tensor)
    while node is not None and node.op_type in _FUSIBLE_AFTER_CONV:
        activations = [i for i in node.input if i and i not in constants]
        if len(activations) != 1:
            return None
        node = producers.get(activations[0])
    return node if node is not None and node.op_type == "Conv" else None


def _depths(model: onnx.ModelProto) -> dict[str, int]:
    """Each node's distance from the graph inputs, in nodes (the graph is in topological order)."""
    tensor_depth: dict[str, int] = {}
    depths = {}
    for node in model.graph.node:
        depth = 1 + max((tensor_depth.get(i, 0) for i in node.input if i), default=0)
        depths[node.name] = depth
        for output in node.output:
            tensor_depth[output] = depth
    return depths


def residual_inputs(model: onnx.ModelProto) -> dict[str, str]:
    """{residual Add's name: its residual input}: the input that is not the output of the convolution
    TensorRT fuses with the Add. Where both inputs come from convolutions (a projection shortcut), the
    deeper one (the block's last convolution) fuses and the shortcut's is the residual input. Adds of a
    constant (batch norm) are not residual."""
    producers, constants, depths = _producers(model), _constants(model), _depths(model)
    found = {}
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or any(i in constants for i in node.input):
            continue
        convs = [_fused_conv(i, producers, constants) for i in node.input]
        if convs[0] is None and convs[1] is None:
            continue
        if convs[0] is not None and convs[1] is not None:
            fused = 0 if depths[convs[0].name] >= depths[convs[1].name] else 1
        else:
            fused = 0 if convs[0] is not None else 1
        found[node.name] = node.input[1 - fused]
    return found


def fused_outputs(model: onnx.ModelProto, conv: str) -> list[str]:
    """The tensors of the convolution `conv` and of what TensorRT fuses after it (batch norm's Mul/Add with a
    constant, BatchNormalization, Relu), each the one consumer of the last: what a calibration cache leaves
    out to keep that layer out of INT8. TensorRT's builder warns "Missing scale and zero-point for tensor
    ..., expect fall back to non-int8 implementation for any layer consuming or producing given tensor"
    (TensorRT 8's log, as quoted in NVIDIA/TensorRT issue #2462)."""
    node = next(n for n in model.graph.node if n.name == conv)
    constants = _constants(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for other in model.graph.node:
        for tensor in other.input:
            consumers.setdefault(tensor, []).append(other)
    outputs = list(node.output[:1])
    while len(consumers.get(outputs[-1], [])) == 1:
        following = consumers[outputs[-1]][0]
        activations = [i for i in following.input if i and i not in constants]
        if following.op_type not in (*_FUSIBLE_AFTER_CONV, "Relu") or len(activations) != 1:
            break
        outputs.append(following.output[0])
    return outputs


# --------------------------------------------------------------------------- int8

def _scalar(name: str, value, dtype) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _quantized_weight(weight: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scales): symmetric, per output channel (axis 0) or per tensor."""
    axes = tuple(range(1, weight.ndim)) if per_channel else None
    amax = np.abs(weight).max(axis=axes).astype(np.float32)
    scale = np.where(amax > 0, amax / np.float32(INT8_MAX), np.float32(1.0)).astype(np.float32)
    shaped = scale.reshape((-1,) + (1,) * (weight.ndim - 1)) if per_channel else scale
    quantized = np.clip(np.rint(weight / shaped), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantized, scale


def explicit_int8(model: onnx.ModelProto, scales: Mapping[str, float], high_precision: str = "fp16",
                  maxima: Mapping[str, float] | None = None, exclude: Iterable[str] = ()) -> Deployable:
    """The explicitly quantized model: Q/DQ from `scales` ({tensor: amax / 127}, a calibration cache's),
    weights quantized here; the rest in `high_precision`, but nodes past FP16_DATA_MAX in `maxima`. The
    convolutions named in `exclude` stay unquantized: no Q/DQ, the graph's precision."""
    if high_precision not in HIGH_PRECISIONS:
        raise ValueError(f"high precision {high_precision!r} is not one of {', '.join(HIGH_PRECISIONS)}")
    work = onnx.ModelProto()
    work.CopyFrom(model)
    wanted = FP16_QDQ_OPSET if high_precision == "fp16" else QDQ_PER_CHANNEL_OPSET
    work, failure = _at_opset(work, wanted)
    if failure and wanted == FP16_QDQ_OPSET:  # fp16 Q/DQ cannot be had: fp32 rest, per-channel if possible
        work, _ = _at_opset(work, QDQ_PER_CHANNEL_OPSET)
    opset = opset_of(work)
    _named(work)
    result = Deployable(work, opset, per_channel=opset >= QDQ_PER_CHANNEL_OPSET, upgrade_failure=failure)

    graph = work.graph
    excluded = set(exclude)
    weights = {i.name: i for i in graph.initializer}
    residual = {add: tensor for add, tensor in residual_inputs(work).items() if tensor in scales}
    activations: dict[str, str] = {}  # tensor -> its dequantized name
    for node in graph.node:
        if node.op_type == "Conv" and node.name in excluded:
            result.left_out.append(node.name)
        elif node.op_type == "Conv" and node.input[0] in scales and node.input[1] in weights:
            activations.setdefault(node.input[0], f"{node.input[0]}_dequantized")
        elif node.op_type == "Conv":
            result.unquantized.append(node.name)
    for tensor in residual.values():
        activations.setdefault(tensor, f"{tensor}_dequantized")
    result.residual_inputs = sorted(set(residual.values()))

    new_nodes, new_weights = [], []

    def qdq(tensor: str) -> list[onnx.NodeProto]:
        scale, zero = f"{tensor}_scale", f"{tensor}_zero_point"
        new_weights.extend([_scalar(scale, scales[tensor], np.float32), _scalar(zero, 0, np.int8)])
        return [helper.make_node("QuantizeLinear", [tensor, scale, zero], [f"{tensor}_quantized"],
                                 name=f"{tensor}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{tensor}_quantized", scale, zero], [activations[tensor]],
                                 name=f"{tensor}_DequantizeLinear")]

    for value in graph.input:
        if value.name in activations:
            new_nodes += qdq(value.name)
    quantized_weights: set[str] = set()
    for node in graph.node:
        if (node.op_type == "Conv" and node.input[0] in activations and node.name not in result.unquantized
                and node.name not in excluded):
            weight = node.input[1]
            dequantized = f"{weight}_dequantized"
            if weight not in quantized_weights:
                quantized_weights.add(weight)
                values, weight_scale = _quantized_weight(numpy_helper.to_array(weights[weight]), result.per_channel)
                new_weights += [numpy_helper.from_array(values, f"{weight}_int8"),
                                numpy_helper.from_array(weight_scale, f"{weight}_scale"),
                                numpy_helper.from_array(np.zeros(weight_scale.shape, np.int8), f"{weight}_zero_point")]
                attributes = {"axis": 0} if result.per_channel else {}
                new_nodes.append(helper.make_node(
                    "DequantizeLinear", [f"{weight}_int8", f"{weight}_scale", f"{weight}_zero_point"],
                    [dequantized], name=f"{weight}_DequantizeLinear", **attributes))
            node.input[0] = activations[node.input[0]]
            node.input[1] = dequantized
            result.quantized.append(node.name)
        elif node.name in residual:
            node.input[:] = [activations[i] if i == residual[node.name] else i for i in node.input]
        new_nodes.append(node)
        for output in node.output:
            if output in activations:
                new_nodes += qdq(output)
    del graph.node[:]
    graph.node.extend(new_nodes)
    unused = quantized_weights - {i for n in graph.node for i in n.input}
    kept = [w for w in graph.initializer if w.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_weights)
    del graph.value_info[:]

    if high_precision == "fp16" and opset >= FP16_QDQ_OPSET:
        result.model, result.kept_fp32 = _to_fp16(work, maxima or {})
    onnx.checker.check_model(result.model)
    return result


# --------------------------------------------------------------------------- fp16

def overflowing_nodes(model: onnx.ModelProto, maxima: Mapping[str, float],
                      limit: float = FP16_DATA_MAX) -> dict[str, float]:
    """{node name: the largest value among its inputs and outputs} for nodes past `limit`. The values of a
    tensor Q/DQ made count as the tensor's."""
    found = {}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        seen = [maxima.get(_unquantized_name(t), 0.0) for t in [*node.input, *node.output] if t]
        largest = max(seen, default=0.0)
        if largest > limit:
            found[node.name] = float(largest)
    return found


def _unquantized_name(tensor: str) -> str:
    for suffix in ("_dequantized", "_quantized"):
        if tensor.endswith(suffix):
            return tensor[: -len(suffix)]
    return tensor


def _to_fp16(model: onnx.ModelProto, maxima: Mapping[str, float]) -> tuple[onnx.ModelProto, dict[str, float]]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    kept = overflowing_nodes(model, maxima)
    # the Q/DQ pairs a kept node reads stay fp32 with it, so that each DequantizeLinear still feeds its
    # convolution directly (TensorRT fuses that pattern; a Cast between them would break it)
    made_by = _producers(model)
    blocked = set(kept)
    for node in model.graph.node:
        if node.name in kept:
            for tensor in node.input:
                dequantize = made_by.get(tensor)
                if dequantize is not None and dequantize.op_type == "DequantizeLinear":
                    blocked.add(dequantize.name)
                    quantize = made_by.get(dequantize.input[0])
                    if quantize is not None and quantize.op_type == "QuantizeLinear":
                        blocked.add(quantize.name)
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(blocked))
    _drop_cast_round_trips(converted.graph)
    _sort_topologically(converted.graph)  # the converter appends the Casts it adds at the end
    return converted, kept


def _drop_cast_round_trips(graph: onnx.GraphProto) -> None:
    """Between two fp32 nodes the converter writes Cast(fp16) then Cast(fp32): a rounding for nothing, and
    between a DequantizeLinear and its convolution it would break TensorRT's fusion. Each such pair goes."""
    made_by = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}

    def cast_to(node, data_type):
        return node.op_type == "Cast" and any(a.name == "to" and a.i == data_type for a in node.attribute)

    replaced = {}
    for node in graph.node:
        source = made_by.get(node.input[0]) if node.input else None
        if cast_to(node, TensorProto.FLOAT) and source is not None and cast_to(source, TensorProto.FLOAT16) \
                and node.output[0] not in outputs:
            replaced[node.output[0]] = source.input[0]
    for node in graph.node:
        node.input[:] = [replaced.get(i, i) for i in node.input]
    used = {i for n in graph.node for i in n.input} | outputs
    kept = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError(f"the graph has a cycle or a missing tensor at {pending[0].name}")
        for node in ready:
            available.update(node.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)


def strongly_typed_fp16(model: onnx.ModelProto, maxima: Mapping[str, float] | None = None) -> Deployable:
    """The fp16 model: fp16 tensors throughout, fp32 inputs and outputs, nodes past FP16_DATA_MAX in
    `maxima` ({tensor: largest magnitude on the calibration images}) kept fp32."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    _named(work)
    converted, kept = _to_fp16(work, maxima or {})
    onnx.checker.check_model(converted)
    return Deployable(converted, opset_of(converted), kept_fp32=kept)


# --------------------------------------------------------------------------- lint

def _dtype(tensor: str, model: onnx.ModelProto, initializers: Mapping[str, TensorProto]) -> int | None:
    if tensor in initializers:
        return initializers[tensor].data_type
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.name == tensor:
            return value.type.tensor_type.elem_type
    return None


# What NVIDIA's own parser and builder (TensorRT-RTX 1.7.1.116, tests/test_nvidia_builder.py) do with a graph
# that breaks one rule of the lint, and what each rule rests on where they accept it:
# - refused by the parser: a bias through an Int32 DequantizeLinear ("input has type Int32 but must have type
#   FP8, FP4, Int4, Int8, or UInt8"); a zero point that is not 0 ("Non-zero zero point is not supported").
# - built, on the Q/DQ placement and fusion rules of TensorRT's "Explicit Quantization" guide
#   (docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html):
#   a weighted layer runs in INT8 only with Q/DQ on both its data and weight inputs, and a DequantizeLinear is
#   fused into the layer only when it feeds it directly (so: Q/DQ on data but not weights, a Cast between DQ and
#   Conv); on a residual Add, Q/DQ goes on the residual input so that the Add fuses into the convolution (Q/DQ
#   between Conv and Add); weights are quantized per output channel, axis 0 (axis 1); Q/DQ on a network output
#   and a Q without its DQ leave that tensor in INT8 where TensorRT's consumers (DeepStream, Triton) read floats;
# - built, and kept by the lint for what a graph means, not what one builder accepts: an omitted zero point is
#   uint8 in ONNX (the guide's INT8 is signed and symmetric), a zero point computed by a node is constant only
#   after constant folding, and every input and output is float32 because DeepStream's and Triton's configs
#   say so (`network-input-order`, TYPE_FP32).
def lint(model: onnx.ModelProto, data_type: str) -> list[str]:
    """What keeps `model` from being a deployable ONNX of `data_type` for TensorRT 10/11: [] if nothing."""
    problems = []
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producers = _producers(model)
    opset = opset_of(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    outputs = {o.name for o in graph.output}
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            problems.append(f"{value.name}: an input or output that is not float32")
    qdq = [n for n in graph.node if n.op_type in QDQ_OPS]
    if data_type != "int8" and qdq:
        problems.append(f"{len(qdq)} Q/DQ nodes in a {data_type} model")
    for node in qdq:
        if len(node.input) < 3 or not node.input[2]:
            problems.append(f"{node.name}: no zero point (ONNX reads an omitted one as uint8)")
            continue
        zero = initializers.get(node.input[2])
        if zero is None:
            problems.append(f"{node.name}: its zero point is not a constant")
        elif zero.data_type != TensorProto.INT8:
            problems.append(f"{node.name}: zero point of type {TensorProto.DataType.Name(zero.data_type)}, not INT8")
        elif np.any(numpy_helper.to_array(zero) != 0):
            problems.append(f"{node.name}: a zero point that is not 0 (TensorRT takes symmetric INT8 only)")
        if any(a.name == "axis" for a in node.attribute) and opset < QDQ_PER_CHANNEL_OPSET:
            problems.append(f"{node.name}: per-channel (axis) at opset {opset}, which reads it from 13 on")
        if any(o in outputs for o in node.output):
            problems.append(f"{node.name}: Q/DQ on the network's output {node.output[0]}")
        if node.op_type == "QuantizeLinear":
            following = consumers.get(node.output[0], [])
            if not following or any(c.op_type != "DequantizeLinear" for c in following):
                problems.append(f"{node.name}: a QuantizeLinear not followed by a DequantizeLinear")
    for node in graph.node:
        if node.op_type in QDQ_OPS and any(i in outputs for i in node.input):
            problems.append(f"{node.name}: Q/DQ on the network's output {node.input[0]}")
        if node.op_type != "Conv":
            continue
        sources = [producers.get(i) for i in node.input[:2]]
        for source in sources:
            if source is not None and source.op_type == "Cast" and \
                    getattr(producers.get(source.input[0]), "op_type", None) == "DequantizeLinear":
                problems.append(f"{node.name}: a Cast between its DequantizeLinear and it (TensorRT fuses DQ into "
                                "the convolution only when it feeds it directly)")
        through_dq = [s is not None and s.op_type == "DequantizeLinear" for s in sources]
        if any(through_dq) and not all(through_dq):
            problems.append(f"{node.name}: Q/DQ on one of its data and weight inputs but not the other")
        if all(through_dq):
            weight_dq = sources[1]
            axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), None)
            scale = initializers.get(weight_dq.input[1])
            if axis not in (None, 0):
                problems.append(f"{node.name}: weights quantized along axis {axis}, not the output channels (0)")
            if scale is not None and scale.dims and opset < QDQ_PER_CHANNEL_OPSET:
                problems.append(f"{node.name}: per-channel weight scales at opset {opset}")
        if len(node.input) > 2 and node.input[2]:
            bias_source = producers.get(node.input[2])
            if bias_source is not None and bias_source.op_type == "DequantizeLinear":
                problems.append(f"{node.name}: its bias comes through a DequantizeLinear (TensorRT takes float "
                                "biases)")
    constants = _constants(model)
    for add, residual in residual_inputs(_stripped(model)).items():
        node = next(n for n in graph.node if n.name == add)
        for tensor in node.input:
            source = producers.get(tensor)
            if source is None or source.op_type != "DequantizeLinear":
                continue
            quantized = source.input[0]
            q_node = producers.get(quantized)
            original = q_node.input[0] if q_node is not None else quantized
            if original != residual and _fused_conv(original, producers, constants) is not None:
                problems.append(f"{add}: Q/DQ between the convolution it fuses with and the Add ({original})")
    if data_type == "fp16" or (data_type == "int8" and any(
            _dtype(n.output[0], model, initializers) == TensorProto.FLOAT16 for n in qdq)):
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
        if not any(t == TensorProto.FLOAT16 for t in types.values()):
            problems.append("no fp16 tensor in an fp16 model")
    return problems


def _stripped(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its activation Q/DQ pairs bypassed and Casts removed: the graph they were placed
    on, for finding its residual Adds."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    producers = _producers(stripped)
    bypass = {}
    for node in stripped.graph.node:
        if node.op_type in ("DequantizeLinear", "Cast"):
            source = producers.get(node.input[0])
            origin = source.input[0] if source is not None and source.op_type == "QuantizeLinear" else node.input[0]
            bypass[node.output[0]] = origin
    kept = [n for n in stripped.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast")]
    for node in kept:
        node.input[:] = [_follow(bypass, i) for i in node.input]
    del stripped.graph.node[:]
    stripped.graph.node.extend(kept)
    return stripped


def _follow(bypass: Mapping[str, str], tensor: str) -> str:
    while tensor in bypass:
        tensor = bypass[tensor]
    return tensor


def quantized_convolutions(model: onnx.ModelProto) -> list[str]:
    """Names of the convolutions that read their data and weights through DequantizeLinear."""
    producers = _producers(model)
    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and all((p := producers.get(i)) is not None and p.op_type == "DequantizeLinear" for i in n.input[:2])]


def qdq_count(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type in QDQ_OPS)


def names_of(nodes: Iterable[str], limit: int = 8) -> str:
    nodes = list(nodes)
    return ", ".join(nodes[:limit]) + (f" and {len(nodes) - limit} more" if len(nodes) > limit else "")


# --------------------------------------------------------------------------- the export folder

def write_for_export(folder, data_type: str, high_precision: str = "fp16",
                     maxima: Mapping[str, float] | None = None, exclude: Iterable[str] = ()) -> Deployable | None:
    """The deployable ONNX of the export in `folder` (model.onnx, and for int8 calibration.bin), written
    beside it as deployable_file(data_type); None for fp32, whose model.onnx is deployable as it is.
    `maxima`: each tensor's largest magnitude on the calibration images, where they were read; for int8,
    the cache's ranges (scale x 127) stand in for the tensors it does not give. `exclude`: convolutions
    left in higher precision."""
    from pathlib import Path

    from .calibration_cache import map_onto_model, read_cache
    from .file_names import CACHE_FILE

    folder = Path(folder)
    if data_type == "fp32":
        return None
    model = onnx.load(str(folder / DEPLOYABLE_FILES["fp32"]))
    if data_type == "int8":
        cache = folder / CACHE_FILE
        _, scales = read_cache(cache)
        on_model = map_onto_model(cache, scales, model, DEPLOYABLE_FILES["fp32"]).scales
        ranges = {name: scale * INT8_MAX for name, scale in on_model.items()}
        deployable = explicit_int8(model, on_model, high_precision, {**ranges, **(maxima or {})}, exclude)
    else:
        deployable = strongly_typed_fp16(model, maxima)
    onnx.save(deployable.model, str(folder / deployable_file(data_type)))
    return deployable


def described(deployable: Deployable, data_type: str, maxima_known: bool) -> list[str]:
    """Log lines saying what the deployable ONNX holds and why."""
    name = deployable_file(data_type)
    lines = []
    if data_type == "int8":
        lines.append(f"{name}: explicit INT8 at opset {deployable.opset}: {len(deployable.quantized)} convolutions "
                     f"quantized ({'per-channel' if deployable.per_channel else 'per-tensor'} weights), "
                     f"{qdq_count(deployable.model)} Q/DQ nodes, Q/DQ on {len(deployable.residual_inputs)} residual "
                     "Add inputs")
        if deployable.unquantized:
            lines.append(f"{name}: {len(deployable.unquantized)} convolutions stay in higher precision, their input "
                         f"has no scale in the cache: {names_of(deployable.unquantized)}")
        if deployable.left_out:
            lines.append(f"{name}: {len(deployable.left_out)} convolutions left in higher precision, where INT8 cost "
                         f"the selection set too much: {names_of(deployable.left_out)}")
        high = "fp16" if deployable.opset >= FP16_QDQ_OPSET else "fp32"
        lines.append(f"{name}: what is not INT8 computes in {high}")
        if deployable.upgrade_failure:
            lines.append(f"{name}: the model's opset could not be raised to {FP16_QDQ_OPSET} "
                         f"({deployable.upgrade_failure}): fp16 Q/DQ needs it, so the rest stays fp32"
                         + ("" if deployable.per_channel else ", and weights are quantized per tensor"))
    else:
        lines.append(f"{name}: strongly typed fp16 (fp32 inputs and outputs)")
    if deployable.kept_fp32:
        shown = ", ".join(f"{node} ({value:.4g})" for node, value in list(deployable.kept_fp32.items())[:8])
        lines.append(f"{name}: {len(deployable.kept_fp32)} nodes stay fp32, their values reach past "
                     f"{FP16_DATA_MAX:g} on the calibration images: {shown}")
    elif not maxima_known and (data_type == "fp16" or deployable.opset >= FP16_QDQ_OPSET):
        lines.append(f"{name}: no calibration images were read, so no tensor was checked against fp16's range "
                     + ("beyond the cache's" if data_type == "int8" else ""))
    return lines
