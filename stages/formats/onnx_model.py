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


def tao_renames(input_name: str | None, output_names: Mapping[str, str] | None) -> dict[str, str]:
    """{the model's tensor name: TAO's} for the tensors export renames (model.input_name and the outputs)."""
    renames = {}
    if input_name and input_name != TAO_INPUT:
        renames[input_name] = TAO_INPUT
    for tao_name, name in (output_names or {}).items():
        if name and name != tao_name:
            renames[name] = tao_name
    return renames


def detectnet_output_problem(model: onnx.ModelProto) -> str | None:
    """Why the model's TAO-named outputs are not DetectNet_v2's (N, C, H/16, W/16) and (N, 4C, H/16, W/16)
    for its input (N, 3, H, W), or None. Dimensions that are not fixed are not judged."""
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in model.graph.output}
    cov, bbox = (shapes.get(name) for name in TAO_OUTPUTS)
    if cov is None or bbox is None:
        return None  # named elsewhere
    if len(cov) != 4 or len(bbox) != 4:
        return (f"its outputs have shapes {TAO_OUTPUTS[0]} {_shown(cov)} and {TAO_OUTPUTS[1]} {_shown(bbox)}, "
                "not DetectNet_v2's (N, C, H/16, W/16) and (N, 4C, H/16, W/16)")
    _, height, width = input_chw(model)
    grid = (height // 16 if height else None, width // 16 if width else None)
    for name, shape in zip(TAO_OUTPUTS, (cov, bbox)):
        if any(got is not None and want is not None and got != want for got, want in zip(shape[2:], grid)):
            return (f"its output {name} has a {shape[2]}x{shape[3]} grid, but its {height}x{width} input gives "
                    f"DetectNet_v2 a {grid[0]}x{grid[1]} grid (stride 16)")
    if cov[1] is not None and bbox[1] is not None and bbox[1] != 4 * cov[1]:
        return (f"its output {TAO_OUTPUTS[1]} has {bbox[1]} channels and {TAO_OUTPUTS[0]} {cov[1]}: DetectNet_v2 has "
                "4 box channels per coverage channel")
    return None


def _shown(shape: list) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def export_model(source: str | Path, target: str | Path, input_name: str | None = None,
                 output_names: Mapping[str, str] | None = None,
                 expected_chw: tuple[int, int, int] | None = None, spec_name: str = "the spec") -> onnx.ModelProto:
    """Write a checked ONNX with TAO's names and a dynamic batch dimension.

    input_name/output_names name the source model's tensors that become TAO's `input_1` and
    `output_cov/Sigmoid` / `output_bbox/BiasAdd` (None: they already carry TAO's names)."""
    model = load_model(source)
    renames = tao_renames(input_name, output_names)
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
            f"input {TAO_INPUT!r} and outputs {list(TAO_OUTPUTS)} (set model.input_name, "
            f"model.cov_output and model.bbox_output to map other names)")
    problem = detectnet_output_problem(model)
    if problem:
        raise ModelError(f"model file {source} is not a DetectNet_v2 model: {problem}")
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
