"""The lint: what keeps an ONNX from being a deployable ONNX of a precision for TensorRT 10/11, by the rules
formats/deployable_onnx.py states. It checks any graph, ours or a user's; the NVIDIA builder's check of the
same file (builder_check.py) sits beside it."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..formats.deployable_onnx import QDQ_OPS, QDQ_PER_CHANNEL_OPSET
from .deployable import copy_of, opset_of
from .graph_index import GraphIndex


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
    index, opset = GraphIndex(model), opset_of(model)
    qdq = [n for n in model.graph.node if n.op_type in QDQ_OPS]
    problems = [f"{value.name}: an input or output that is not float32" for value in [*model.graph.input,
                *model.graph.output] if value.type.tensor_type.elem_type != TensorProto.FLOAT]
    if data_type != "int8" and qdq:
        problems.append(f"{len(qdq)} Q/DQ nodes in a {data_type} model")
    for node in qdq:
        problems += _qdq_problems(node, index, opset)
    for node in model.graph.node:
        if node.op_type in QDQ_OPS and any(i in index.outputs for i in node.input):
            problems.append(f"{node.name}: Q/DQ on the network's output {node.input[0]}")
        if node.op_type == "Conv":
            problems += _convolution_problems(node, index, opset)
    problems += _residual_problems(model, index)
    if data_type == "fp16" or (data_type == "int8" and any(
            _dtype(n.output[0], model, index.initializers) == TensorProto.FLOAT16 for n in qdq)):
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
        if not any(t == TensorProto.FLOAT16 for t in types.values()):
            problems.append("no fp16 tensor in an fp16 model")
    return problems


def _qdq_problems(node: onnx.NodeProto, index: GraphIndex, opset: int) -> list[str]:
    """A QuantizeLinear's or DequantizeLinear's: its zero point, its axis, the network's outputs, its pair."""
    if len(node.input) < 3 or not node.input[2]:
        return [f"{node.name}: no zero point (ONNX reads an omitted one as uint8)"]
    problems = []
    zero = index.initializers.get(node.input[2])
    if zero is None:
        problems.append(f"{node.name}: its zero point is not a constant")
    elif zero.data_type != TensorProto.INT8:
        problems.append(f"{node.name}: zero point of type {TensorProto.DataType.Name(zero.data_type)}, not INT8")
    elif np.any(numpy_helper.to_array(zero) != 0):
        problems.append(f"{node.name}: a zero point that is not 0 (TensorRT takes symmetric INT8 only)")
    if any(a.name == "axis" for a in node.attribute) and opset < QDQ_PER_CHANNEL_OPSET:
        problems.append(f"{node.name}: per-channel (axis) at opset {opset}, which reads it from 13 on")
    if any(o in index.outputs for o in node.output):
        problems.append(f"{node.name}: Q/DQ on the network's output {node.output[0]}")
    if node.op_type == "QuantizeLinear":
        following = index.consumers.get(node.output[0], [])
        if not following or any(c.op_type != "DequantizeLinear" for c in following):
            problems.append(f"{node.name}: a QuantizeLinear not followed by a DequantizeLinear")
    return problems


def _convolution_problems(node: onnx.NodeProto, index: GraphIndex, opset: int) -> list[str]:
    """A convolution's: DequantizeLinear feeding it directly on both its data and weights or on neither, weights
    per output channel, a float bias."""
    problems = []
    sources = [index.producers.get(i) for i in node.input[:2]]
    for source in sources:
        if source is not None and source.op_type == "Cast" and \
                index.produced_by(source.input[0], "DequantizeLinear") is not None:
            problems.append(f"{node.name}: a Cast between its DequantizeLinear and it (TensorRT fuses DQ into "
                            "the convolution only when it feeds it directly)")
    through_dq = [s is not None and s.op_type == "DequantizeLinear" for s in sources]
    if any(through_dq) and not all(through_dq):
        problems.append(f"{node.name}: Q/DQ on one of its data and weight inputs but not the other")
    if all(through_dq):
        weight_dq = sources[1]
        axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), None)
        scale = index.initializers.get(weight_dq.input[1])
        if axis not in (None, 0):
            problems.append(f"{node.name}: weights quantized along axis {axis}, not the output channels (0)")
        if scale is not None and scale.dims and opset < QDQ_PER_CHANNEL_OPSET:
            problems.append(f"{node.name}: per-channel weight scales at opset {opset}")
    if len(node.input) > 2 and node.input[2] and index.produced_by(node.input[2], "DequantizeLinear") is not None:
        problems.append(f"{node.name}: its bias comes through a DequantizeLinear (TensorRT takes float biases)")
    return problems


def _residual_problems(model: onnx.ModelProto, index: GraphIndex) -> list[str]:
    """Q/DQ between a residual Add and the convolution it fuses with (found on the graph without its Q/DQ)."""
    problems = []
    for add, residual in GraphIndex(_stripped(model)).residual_inputs.items():
        for tensor in index.nodes[add].input:
            source = index.produced_by(tensor, "DequantizeLinear")
            if source is None:
                continue
            quantized = source.input[0]
            q_node = index.producers.get(quantized)
            original = q_node.input[0] if q_node is not None else quantized
            if original != residual and index.fused_conv(original) is not None:
                problems.append(f"{add}: Q/DQ between the convolution it fuses with and the Add ({original})")
    return problems


def _stripped(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its activation Q/DQ pairs bypassed and Casts removed: the graph they were placed
    on, for finding its residual Adds."""
    stripped = copy_of(model)
    producers = GraphIndex(stripped).producers
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
    index = GraphIndex(model)
    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and all(index.produced_by(i, "DequantizeLinear") is not None for i in n.input[:2])]


def qdq_count(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type in QDQ_OPS)
