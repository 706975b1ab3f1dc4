"""A deployable model and what was decided in making it (the export log and report say it), and what the INT8
rewrite and the fp16 conversion both do to the graph first: raise its opset, name every node."""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import helper


@dataclass
class Deployable:
    model: onnx.ModelProto
    opset: int
    per_channel: bool = True
    quantized: list[str] = field(default_factory=list)  # convolutions computing in INT8
    without_scale: list[str] = field(default_factory=list)  # convolutions whose input has no scale
    float_layers: list[str] = field(default_factory=list)  # convolutions kept in higher precision as asked
    residual_inputs: list[str] = field(default_factory=list)  # tensors quantized as a residual Add's input
    kept_fp32: dict[str, float] = field(default_factory=dict)  # node -> largest value seen, past FP16_DATA_MAX
    upgrade_failure: str | None = None  # why the opset could not be raised, if it could not


def copy_of(model: onnx.ModelProto) -> onnx.ModelProto:
    work = onnx.ModelProto()
    work.CopyFrom(model)
    return work


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _upgraded(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    from onnx import version_converter

    upgraded = version_converter.convert_version(model, target)
    upgraded.ir_version = max(upgraded.ir_version, helper.find_min_ir_version_for(
        [helper.make_opsetid("", target)], ignore_unknown=True))
    onnx.checker.check_model(upgraded)
    return upgraded


def at_opset(model: onnx.ModelProto, wanted: int) -> tuple[onnx.ModelProto, str | None]:
    """The model at opset `wanted` or later, else (the model unchanged, why): onnx's converter lacks an
    adapter for some ops (TAO 4 exported opset 11, TAO 5 opset 12)."""
    if opset_of(model) >= wanted:
        return model, None
    try:
        return _upgraded(model, wanted), None
    except Exception as exc:  # noqa: BLE001 - the converter raises from its C++ adapter lookup
        return model, str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__


def name_nodes(model: onnx.ModelProto) -> None:
    """Every node gets a unique name: the fp16 converter and TensorRT's layer names need one."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
