"""The fp16 conversion: the strongly typed fp16 model (every tensor fp16 but the inputs and outputs), and the
fp16 half of an int8 model's rest; either way a node whose values pass FP16_DATA_MAX on the calibration images
stays fp32. The conversion itself is onnxruntime's float16 converter; what it leaves behind (Casts that round
for nothing, nodes out of order) is tidied here."""
from __future__ import annotations

from typing import Mapping

import onnx
from onnx import TensorProto

from ..formats.deployable_onnx import QDQ_OPS
from .deployable import Deployable, copy_of, name_nodes, opset_of
from .graph_index import GraphIndex

# A node whose inputs or outputs reach past this on the calibration images stays fp32: the calibration
# images are a sample, so the margin to fp16's 65504 is wide. ModelOpt AutoCast's `data_max` default.
FP16_DATA_MAX = 512.0


def strongly_typed_fp16(model: onnx.ModelProto, maxima: Mapping[str, float] | None = None) -> Deployable:
    """The fp16 model: fp16 tensors throughout, fp32 inputs and outputs, nodes past FP16_DATA_MAX in
    `maxima` ({tensor: largest magnitude on the calibration images}; None where none were read) kept fp32."""
    work = copy_of(model)
    name_nodes(work)
    converted, kept = to_fp16(work, maxima or {})
    onnx.checker.check_model(converted)
    return Deployable(converted, opset_of(converted), kept_fp32=kept)


def overflowing_nodes(model: onnx.ModelProto, maxima: Mapping[str, float],
                      limit: float = FP16_DATA_MAX) -> dict[str, float]:
    """{node name: the largest value among its inputs and outputs} for nodes past `limit`. The values of a
    tensor Q/DQ made count as the tensor's."""
    found = {}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        seen = [maxima.get(_before_qdq(t), 0.0) for t in [*node.input, *node.output] if t]
        largest = max(seen, default=0.0)
        if largest > limit:
            found[node.name] = float(largest)
    return found


def _before_qdq(tensor: str) -> str:
    for suffix in ("_dequantized", "_quantized"):
        if tensor.endswith(suffix):
            return tensor[: -len(suffix)]
    return tensor


def to_fp16(model: onnx.ModelProto, maxima: Mapping[str, float]) -> tuple[onnx.ModelProto, dict[str, float]]:
    """(the model converted to fp16 but the nodes past FP16_DATA_MAX in `maxima`, those nodes)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    kept = overflowing_nodes(model, maxima)
    # the Q/DQ pairs a kept node reads stay fp32 with it, so that each DequantizeLinear still feeds its
    # convolution directly (TensorRT fuses that pattern; a Cast between them would break it)
    index = GraphIndex(model)
    blocked = set(kept)
    for node in model.graph.node:
        if node.name in kept:
            for tensor in node.input:
                dequantize = index.produced_by(tensor, "DequantizeLinear")
                if dequantize is not None:
                    blocked.add(dequantize.name)
                    quantize = index.produced_by(dequantize.input[0], "QuantizeLinear")
                    if quantize is not None:
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
