"""The sample's DetectNet_v2-shaped ONNX model, with deterministic weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..formats.onnx_model import TAO_INPUT as INPUT, TAO_OUTPUTS
from .dataset import CLASSES

COV_OUTPUT, BBOX_OUTPUT = TAO_OUTPUTS

class _GraphBuilder:
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


def build_model(path: Path, width: int, height: int, num_classes: int = len(CLASSES),
                base_width: int = 16, seed: int = 0, batch: int | str = 1) -> None:
    """A DetectNet_v2-shaped model: input_1 (N,3,H,W) -> stride-16 ResNet-style backbone ->
    output_cov/Sigmoid (N,C,H/16,W/16) and output_bbox/BiasAdd (N,4C,H/16,W/16)."""
    if width % 16 or height % 16:
        raise ValueError(f"DetectNet_v2 needs input sizes that are multiples of 16, got {width}x{height}")
    g = _GraphBuilder(seed)
    channels = [base_width, base_width * 2, base_width * 4, base_width * 4]
    x = g.op("Relu", "conv1_relu", [g.conv("conv1", INPUT, 3, channels[0], 7, 2)])
    for stage, (cin, cout) in enumerate(zip(channels, channels[1:]), start=1):
        x = g.residual_block(f"block_{stage}a", x, cin, cout, 2)
        x = g.residual_block(f"block_{stage}b", x, cout, cout, 1)
    logits = g.conv("output_cov", x, channels[-1], num_classes, 1, 1, gain=0.5, bias=-1.0)
    g.op("Sigmoid", "output_cov/Sigmoid", [logits], output=COV_OUTPUT)
    g.conv("output_bbox", x, channels[-1], 4 * num_classes, 1, 1, gain=0.5, output=BBOX_OUTPUT)
    grid = (height // 16, width // 16)
    graph = helper.make_graph(
        g.nodes, "detectnet_v2_sample",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info(COV_OUTPUT, TensorProto.FLOAT, [batch, num_classes, *grid]),
         helper.make_tensor_value_info(BBOX_OUTPUT, TensorProto.FLOAT, [batch, 4 * num_classes, *grid])],
        g.initializers)
    model = helper.make_model(graph, producer_name="detectnet-deploy sample",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
