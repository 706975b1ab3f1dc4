"""The sample's DetectNet_v2 graph: a ResNet-style backbone to stride 16 whose last feature map is
concatenated with the two earlier stages average- and max-pooled to stride 16, standardized per channel,
and read by DetectNet_v2's two heads (3x3 convolutions): `output_cov/Sigmoid` (N,C,H/16,W/16) and
`output_bbox/BiasAdd` (N,4C,H/16,W/16). The backbone's weights are deterministic random (He-initialised);
the heads are random (`build_model`) or fitted to data (fit.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..detectnet_v2.grid import grid_shape
from ..formats.onnx_model import TAO_INPUT, TAO_OUTPUTS
from .dataset import CLASSES

COV_OUTPUT, BBOX_OUTPUT = TAO_OUTPUTS
FEATURES = "head_features"  # what the heads read: the standardized, concatenated feature maps
HEAD_KERNEL = 3


class GraphBuilder:
    """Builds a ResNet-style DetectNet_v2 graph with deterministic He-initialised weights."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.initializers = [], []

    def conv(self, name: str, x: str, cin: int, cout: int, kernel: int, stride: int,
             gain: float = 1.0, bias: float = 0.0, output: str | None = None) -> str:
        std = gain * np.sqrt(2.0 / (cin * kernel * kernel))
        weight = (self.rng.standard_normal((cout, cin, kernel, kernel)) * std).astype(np.float32)
        self.initializers += [numpy_helper.from_array(weight, f"{name}/kernel"),
                              numpy_helper.from_array(np.full(cout, bias, np.float32), f"{name}/bias")]
        out = output or f"{name}/BiasAdd"
        self.nodes.append(helper.make_node("Conv", [x, f"{name}/kernel", f"{name}/bias"], [out], name=name,
                                           kernel_shape=[kernel, kernel], strides=[stride, stride],
                                           pads=[kernel // 2] * 4))
        return out

    def op(self, op_type: str, name: str, inputs: list[str], output: str | None = None) -> str:
        out = output or f"{name}/{op_type}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name))
        return out

    def residual_block(self, name: str, x: str, cin: int, cout: int, stride: int) -> str:
        y = self.op("Relu", f"{name}_relu_1", [self.conv(f"{name}_conv_1", x, cin, cout, 3, stride)])
        y = self.conv(f"{name}_conv_2", y, cout, cout, 3, 1, gain=0.5)  # keep the sum's variance in check
        shortcut = x if stride == 1 and cin == cout else self.conv(f"{name}_conv_shortcut", x, cin, cout, 1, stride)
        return self.op("Relu", f"{name}_relu", [self.op("Add", f"{name}_add", [y, shortcut])])


Widths = Union[int, Tuple[int, int, int, int]]


def stage_widths(base_width: Widths) -> tuple[int, int, int, int]:
    """Channels of conv1 and of the three stages: (w, 2w, 4w, 4w) for a base width w, or as given (a
    pruned model's odd counts)."""
    if isinstance(base_width, int):
        return base_width, 2 * base_width, 4 * base_width, 4 * base_width
    if len(base_width) != 4 or min(base_width) < 1:
        raise ValueError(f"stage widths must be 4 positive channel counts, got {base_width}")
    return tuple(int(w) for w in base_width)


def feature_depth(base_width: Widths) -> int:
    """Channels of FEATURES: the last stage, and the average and max pools of stages 1 and 2."""
    _, stage1, stage2, stage3 = stage_widths(base_width)
    return stage3 + 2 * stage1 + 2 * stage2


def _backbone(g: GraphBuilder, base_width: Widths, scale: np.ndarray, shift: np.ndarray) -> str:
    channels = stage_widths(base_width)
    x = g.op("Relu", "conv1_relu", [g.conv("conv1", TAO_INPUT, 3, channels[0], 7, 2)])
    stages = []
    for stage, (cin, cout) in enumerate(zip(channels, channels[1:]), start=1):
        x = g.residual_block(f"block_{stage}a", x, cin, cout, 2)
        x = g.residual_block(f"block_{stage}b", x, cout, cout, 1)
        stages.append(x)
    stride4, stride8, stride16 = stages
    parts = [stride16]
    for source, factor, label in ((stride4, 4, "block_1"), (stride8, 2, "block_2")):
        for op_type in ("AveragePool", "MaxPool"):
            name = f"{label}_{op_type.lower()}"
            g.nodes.append(helper.make_node(op_type, [source], [name], name=name,
                                            kernel_shape=[factor, factor], strides=[factor, factor]))
            parts.append(name)
    concat = g.op("Concat", "head_concat", parts)
    g.nodes[-1].attribute.append(helper.make_attribute("axis", 1))
    # per-channel standardization, so that the heads' zero padding means "an average feature"
    shape = [1, len(scale), 1, 1]
    g.initializers += [numpy_helper.from_array(scale.astype(np.float32).reshape(shape), "head_scale"),
                       numpy_helper.from_array(shift.astype(np.float32).reshape(shape), "head_shift")]
    return g.op("Add", "head_standardize", [g.op("Mul", "head_scale", [concat, "head_scale"]), "head_shift"],
                output=FEATURES)


def model_proto(g: GraphBuilder, width: int, height: int, outputs: list[tuple[str, int]],
           batch: int | str) -> onnx.ModelProto:
    rows, columns = grid_shape(width, height)
    graph = helper.make_graph(
        g.nodes, "detectnet_v2_sample",
        [helper.make_tensor_value_info(TAO_INPUT, TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, depth, rows, columns])
         for name, depth in outputs],
        g.initializers)
    model = helper.make_model(graph, producer_name="detectnet-deploy sample",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def backbone(width: int, height: int, base_width: Widths = 16, seed: int = 0) -> onnx.ModelProto:
    """The graph up to FEATURES (unstandardized), its only output: what the heads are fitted on. The
    same seed gives build_model's backbone."""
    g = GraphBuilder(seed)
    depth = feature_depth(base_width)
    _backbone(g, base_width, np.ones(depth), np.zeros(depth))
    return model_proto(g, width, height, [(FEATURES, depth)], "N")


def build_model(path: Path, width: int, height: int, num_classes: int = len(CLASSES),
                base_width: Widths = 16, seed: int = 0, batch: int | str = 1, heads: dict | None = None) -> None:
    """A DetectNet_v2 model: input_1 (N,3,H,W) -> backbone -> output_cov/Sigmoid (N,C,H/16,W/16) and
    output_bbox/BiasAdd (N,4C,H/16,W/16). Random heads, or `heads` as fit.py makes them: {"scale", "shift"
    (per FEATURES channel), "output_cov" and "output_bbox": (kernel, bias)}. The same seed gives the same backbone."""
    grid_shape(width, height)
    g = GraphBuilder(seed)
    depth = feature_depth(base_width)
    heads = heads or {"scale": np.full(depth, 0.5), "shift": np.zeros(depth)}
    features = _backbone(g, base_width, heads["scale"], heads["shift"])
    heads_out = (("output_cov", num_classes, None), ("output_bbox", 4 * num_classes, BBOX_OUTPUT))
    for name, out_channels, output in heads_out:
        if name in heads:
            kernel, bias = heads[name]
            g.initializers += [numpy_helper.from_array(kernel.astype(np.float32), f"{name}/kernel"),
                               numpy_helper.from_array(bias.astype(np.float32), f"{name}/bias")]
            g.nodes.append(helper.make_node("Conv", [features, f"{name}/kernel", f"{name}/bias"],
                                            [output or f"{name}/BiasAdd"], name=name,
                                            kernel_shape=[HEAD_KERNEL] * 2, pads=[HEAD_KERNEL // 2] * 4))
        else:
            g.conv(name, features, depth, out_channels, HEAD_KERNEL, 1, gain=0.3,
                   bias=-1.0 if name == "output_cov" else 0.0, output=output)
    g.op("Sigmoid", COV_OUTPUT, ["output_cov/BiasAdd"], output=COV_OUTPUT)
    onnx.save(model_proto(g, width, height, [(COV_OUTPUT, num_classes), (BBOX_OUTPUT, 4 * num_classes)], batch), path)
