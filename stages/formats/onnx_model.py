"""ONNX DetectNet_v2 models: loading with clear errors, and TAO-style export (TAO's tensor names,
dynamic batch dimension, checked)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import onnx
from google.protobuf.message import DecodeError

TAO_INPUT = "input_1"
TAO_OUTPUTS = ("output_cov/Sigmoid", "output_bbox/BiasAdd")
BATCH_DIM = "N"


class ModelError(ValueError):
    """A model file that is missing, not ONNX, or does not fit the spec. Names the file."""


def load_model(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"model file {path} is not an ONNX model: {exc}") from None
    if not model.graph.node:
        raise ModelError(f"model file {path} is not an ONNX model: it holds no graph")
    return model


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The model's real inputs: older exporters also list every initializer as a graph input."""
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def input_chw(model: onnx.ModelProto) -> tuple[int | None, ...]:
    """(C, H, W) of the model's image input; None where a dimension is not fixed."""
    inputs = graph_inputs(model)
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in (inputs[0].type.tensor_type.shape.dim if inputs else [])]
    return tuple(dims[1:4]) if len(dims) == 4 else (None, None, None)


def _rename(model: onnx.ModelProto, renames: Mapping[str, str]) -> None:
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        value.name = renames.get(value.name, value.name)


def export_model(source: str | Path, target: str | Path, input_name: str | None = None,
                 output_names: Mapping[str, str] | None = None,
                 expected_chw: tuple[int, int, int] | None = None, spec_name: str = "the spec") -> onnx.ModelProto:
    """Write a checked ONNX with TAO's names and a dynamic batch dimension.

    input_name/output_names name the source model's tensors that become TAO's `input_1` and
    `output_cov/Sigmoid` / `output_bbox/BiasAdd` (None: they already carry TAO's names)."""
    model = load_model(source)
    renames = {}
    if input_name and input_name != TAO_INPUT:
        renames[input_name] = TAO_INPUT
    for tao_name, name in (output_names or {}).items():
        if name and name != tao_name:
            renames[name] = tao_name
    known = {t for node in model.graph.node for t in [*node.input, *node.output]} | {i.name for i in model.graph.input}
    missing = [name for name in renames if name not in known]
    if missing:
        raise ModelError(f"model file {source} has no tensor named {', '.join(map(repr, missing))}")
    _rename(model, renames)

    input_names = [i.name for i in graph_inputs(model)]
    graph_outputs = [o.name for o in model.graph.output]
    if input_names != [TAO_INPUT] or sorted(graph_outputs) != sorted(TAO_OUTPUTS):
        raise ModelError(
            f"model file {source} has inputs {input_names} and outputs {graph_outputs}; DetectNet_v2 needs "
            f"input {TAO_INPUT!r} and outputs {list(TAO_OUTPUTS)} (set model.input_name / model.output_names "
            f"to map other names)")
    chw = input_chw(model)
    if expected_chw and tuple(chw) != tuple(expected_chw):
        raise ModelError(
            f"model file {source} takes input (C,H,W)={chw}, but {spec_name} preprocesses images to "
            f"{tuple(expected_chw)} (augmentation_config.preprocessing output_image_channel/height/width)")

    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM
    del model.graph.value_info[:]  # stale shapes with a fixed batch; inferred again below
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(target))
    return model
