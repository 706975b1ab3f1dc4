"""The INT8 rewrite: the explicitly quantized model TensorRT 10/11 build INT8 from (formats/deployable_onnx.py
says the rules and why they differ from ModelOpt's). Activation scales are the calibration cache's; weights
are quantized here, symmetric, per output channel where the opset allows it."""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..formats.calibration_cache import INT8_MAX
from ..formats.deployable_onnx import FP16_QDQ_OPSET, HIGH_PRECISIONS, QDQ_PER_CHANNEL_OPSET
from .deployable import Deployable, at_opset, copy_of, name_nodes, opset_of
from .fp16 import to_fp16
from .graph_index import GraphIndex


def explicit_int8(model: onnx.ModelProto, scales: Mapping[str, float], high_precision: str,
                  maxima: Mapping[str, float] | None = None, float_layers: Iterable[str] = ()) -> Deployable:
    """The explicitly quantized model: Q/DQ from `scales` ({tensor: amax / 127}, a calibration cache's),
    weights quantized here; the rest in `high_precision` (export.high_precision), but nodes past
    FP16_DATA_MAX in `maxima`. The convolutions named in `float_layers` stay in higher precision: no Q/DQ, the
    graph's precision."""
    if high_precision not in HIGH_PRECISIONS:
        raise ValueError(f"high precision {high_precision!r} is not one of {', '.join(HIGH_PRECISIONS)}")
    wanted = FP16_QDQ_OPSET if high_precision == "fp16" else QDQ_PER_CHANNEL_OPSET
    work, failure = at_opset(copy_of(model), wanted)
    if failure and wanted == FP16_QDQ_OPSET:  # fp16 Q/DQ cannot be had: fp32 rest, per-channel if possible
        work, _ = at_opset(work, QDQ_PER_CHANNEL_OPSET)
    opset = opset_of(work)
    name_nodes(work)
    result = Deployable(work, opset, per_channel=opset >= QDQ_PER_CHANNEL_OPSET, upgrade_failure=failure)
    activations, residual = _placement(work, scales, set(float_layers), result)
    _rewrite(work.graph, scales, activations, residual, result)
    if high_precision == "fp16" and opset >= FP16_QDQ_OPSET:
        result.model, result.kept_fp32 = to_fp16(work, maxima or {})
    onnx.checker.check_model(result.model)
    return result


def _placement(work: onnx.ModelProto, scales: Mapping[str, float], float_layers: set[str],
               result: Deployable) -> tuple[dict[str, str], dict[str, str]]:
    """Where Q/DQ go: ({tensor: its dequantized name} for each activation quantized, {residual Add: its
    residual input}); the convolutions sorted into result's quantized-to-be, without_scale and float_layers."""
    index = GraphIndex(work)
    residual = {add: tensor for add, tensor in index.residual_inputs.items() if tensor in scales}
    activations: dict[str, str] = {}
    for node in work.graph.node:
        if node.op_type != "Conv":
            continue
        if node.name in float_layers:
            result.float_layers.append(node.name)
        elif node.input[0] in scales and node.input[1] in index.initializers:
            activations.setdefault(node.input[0], f"{node.input[0]}_dequantized")
        else:
            result.without_scale.append(node.name)
    for tensor in residual.values():
        activations.setdefault(tensor, f"{tensor}_dequantized")
    result.residual_inputs = sorted(set(residual.values()))
    return activations, residual


def _scalar(name: str, value, dtype) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _activation_qdq(tensor: str, scale: float, dequantized: str) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Quantize then dequantize `tensor` (symmetric INT8, zero point 0 as int8) into `dequantized`."""
    scale_name, zero = f"{tensor}_scale", f"{tensor}_zero_point"
    nodes = [helper.make_node("QuantizeLinear", [tensor, scale_name, zero], [f"{tensor}_quantized"],
                              name=f"{tensor}_QuantizeLinear"),
             helper.make_node("DequantizeLinear", [f"{tensor}_quantized", scale_name, zero], [dequantized],
                              name=f"{tensor}_DequantizeLinear")]
    return nodes, [_scalar(scale_name, scale, np.float32), _scalar(zero, 0, np.int8)]


def quantized_weight(weight: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scales): symmetric, per output channel (axis 0) or per tensor."""
    axes = tuple(range(1, weight.ndim)) if per_channel else None
    amax = np.abs(weight).max(axis=axes).astype(np.float32)
    scale = np.where(amax > 0, amax / np.float32(INT8_MAX), np.float32(1.0)).astype(np.float32)
    shaped = scale.reshape((-1,) + (1,) * (weight.ndim - 1)) if per_channel else scale
    quantized = np.clip(np.rint(weight / shaped), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantized, scale


def _weight_dq(weight: TensorProto, per_channel: bool) -> tuple[onnx.NodeProto, list[TensorProto]]:
    """The weight as int8 initializers and the DequantizeLinear that gives `<weight>_dequantized`."""
    name = weight.name
    values, scale = quantized_weight(numpy_helper.to_array(weight), per_channel)
    initializers = [numpy_helper.from_array(values, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale"),
                    numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point")]
    attributes = {"axis": 0} if per_channel else {}
    node = helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                            [f"{name}_dequantized"], name=f"{name}_DequantizeLinear", **attributes)
    return node, initializers


def _rewrite(graph: onnx.GraphProto, scales: Mapping[str, float], activations: Mapping[str, str],
             residual: Mapping[str, str], result: Deployable) -> None:
    """Q/DQ after each tensor of `activations` (after the graph input, or after its producer), each quantized
    convolution reading its data and weights through DequantizeLinear, each residual Add its residual input;
    the float weights that no node reads any more dropped."""
    weights = {i.name: i for i in graph.initializer}
    new_nodes, new_weights = [], []

    def add_qdq(tensor: str) -> None:
        nodes, initializers = _activation_qdq(tensor, scales[tensor], activations[tensor])
        new_nodes.extend(nodes)
        new_weights.extend(initializers)

    for value in graph.input:
        if value.name in activations:
            add_qdq(value.name)
    quantized_weights: set[str] = set()
    skipped = set(result.without_scale) | set(result.float_layers)
    for node in graph.node:
        if node.op_type == "Conv" and node.input[0] in activations and node.name not in skipped:
            weight = node.input[1]
            if weight not in quantized_weights:
                quantized_weights.add(weight)
                dequantize, initializers = _weight_dq(weights[weight], result.per_channel)
                new_weights += initializers
                new_nodes.append(dequantize)
            node.input[0] = activations[node.input[0]]
            node.input[1] = f"{weight}_dequantized"
            result.quantized.append(node.name)
        elif node.name in residual:
            node.input[:] = [activations[i] if i == residual[node.name] else i for i in node.input]
        new_nodes.append(node)
        for output in node.output:
            if output in activations:
                add_qdq(output)
    del graph.node[:]
    graph.node.extend(new_nodes)
    unused = quantized_weights - {i for n in graph.node for i in n.input}
    kept = [w for w in graph.initializer if w.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_weights)
    del graph.value_info[:]
