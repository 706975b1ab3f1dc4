"""DetectNet_v2 models in the shapes TAO and NGC ship, for the tests and benchmarks, which need TAO's
shapes without downloading a model. Test support, not product code: no stage's code fingerprint holds it.

as_tao_export rewrites a model of stages.bundled_sample (random or fitted) as TAO's tf2onnx export writes
it, with the same function. What changes (docs/design.md, "What TAO and NGC ship"):
- tensor names carry TensorFlow's `:0` (`input_1:0`, `output_cov/Sigmoid:0`, `output_bbox/BiasAdd:0`,
  `conv1/convolution:0`, ...);
- the batch dimension is a named symbol (`unk__134`);
- batch norm is folded into a `Mul` and an `Add` after each biased backbone `Conv`
  (`bn_conv1/batchnorm/mul_1:0`, `bn_conv1/batchnorm/add_1:0`);
- the opset is the exporter's: 11 (TAO 4), 12 (TAO 5), 13 and later.
Pruned models' odd channel counts come from the builder itself (build_model's `base_width` as four stage
widths).

build_resnet18_shape builds TAO's ResNet-18 DetectNet_v2 with random weights, at the size users deploy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from stages.bundled_sample.dataset import CLASSES
from stages.bundled_sample.model import BBOX_OUTPUT, COV_OUTPUT, GraphBuilder, model_proto
from stages.detectnet_v2.grid import grid_shape
from stages.formats.onnx_model import TAO_INPUT

TAO_INPUT_NAME = "input_1:0"
TAO_OUTPUT_NAMES = ("output_cov/Sigmoid:0", "output_bbox/BiasAdd:0")
HEADS = ("output_cov", "output_bbox")  # DetectNet_v2's head convolutions: no batch norm after them
# the IR version each opset's exporter writes (onnx's table of releases: opset 11 came with IR 6, 12-14 with 7)
IR_VERSIONS = {11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8}


def as_tao_export(model: onnx.ModelProto, opset: int, seed: int = 0) -> onnx.ModelProto:
    """The same detector as TAO's export writes it (see the module's docstring); seed draws the batch
    norm's scales and shifts, which the convolution's weights absorb, so the function stays the same."""
    if opset not in IR_VERSIONS:
        raise ValueError(f"opset {opset} is not one of {sorted(IR_VERSIONS)}")
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    weights = {i.name: i for i in graph.initializer}
    nodes, renamed = [], {}
    for node in graph.node:
        if node.op_type != "Conv" or node.name in HEADS or len(node.input) < 3:
            nodes.append(node)
            continue
        kernel, bias = numpy_helper.to_array(weights[node.input[1]]), numpy_helper.to_array(weights[node.input[2]])
        scale = rng.uniform(0.5, 2.0, len(bias)).astype(np.float32)
        shift = rng.normal(0.0, 0.1, len(bias)).astype(np.float32)
        # conv(x; W/s, (b-t)/s) * s + t == conv(x; W, b): the batch norm TAO folds, unfolded again
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(kernel / scale[:, None, None, None], node.input[1]))
        weights[node.input[2]].CopyFrom(numpy_helper.from_array((bias - shift) / scale, node.input[2]))
        bn = f"bn_{node.name}/batchnorm"
        graph.initializer.extend([numpy_helper.from_array(scale.reshape(-1, 1, 1), f"{bn}/mul"),
                                  numpy_helper.from_array(shift.reshape(-1, 1, 1), f"{bn}/sub")])
        original = node.output[0]
        node.output[0] = f"{node.name}/convolution"
        renamed[original] = f"{bn}/add_1"
        nodes += [node, helper.make_node("Mul", [node.output[0], f"{bn}/mul"], [f"{bn}/mul_1"], name=f"{bn}/mul_1"),
                  helper.make_node("Add", [f"{bn}/mul_1", f"{bn}/sub"], [f"{bn}/add_1"], name=f"{bn}/add_1")]
    initializers = set(weights) | {i.name for i in graph.initializer}

    def tf_name(name: str) -> str:
        name = renamed.get(name, name)
        return name if not name or name in initializers else f"{name}:0"

    for node in nodes:
        node.input[:] = [tf_name(n) for n in node.input]
        node.output[:] = [tf_name(n) for n in node.output]
    del graph.node[:]
    graph.node.extend(nodes)
    for value, symbol in zip([*graph.input, *graph.output], ("unk__134", "unk__135", "unk__136")):
        value.name = tf_name(value.name)
        value.type.tensor_type.shape.dim[0].dim_param = symbol
    del graph.value_info[:]
    graph.name = "tf2onnx"
    del out.opset_import[:]
    out.opset_import.append(helper.make_opsetid("", opset))
    out.ir_version = IR_VERSIONS[opset]
    out.producer_name, out.producer_version = "tf2onnx", "1.9.2"
    onnx.checker.check_model(out, full_check=True)
    return out


RESNET18_WIDTHS = (64, 128, 256, 512)


def build_resnet18_shape(path: Path, width: int, height: int, num_classes: int = len(CLASSES),
                         widths: tuple[int, int, int, int] = RESNET18_WIDTHS, seed: int = 0,
                         batch: int | str = "N") -> None:
    """A DetectNet_v2 graph of TAO's ResNet-18 shape with random weights, for measuring at the size
    users deploy (the sample's own graph is a few times lighter): conv1 7x7/2, four stages of two
    basic blocks with strides 2, 2, 2, 1 (output stride 16, as TAO builds DetectNet_v2's ResNets
    without pooling), and the two heads as 1x1 convolutions on the last stage, as TAO's are."""
    grid_shape(width, height)
    g = GraphBuilder(seed)
    x = g.op("Relu", "conv1_relu", [g.conv("conv1", TAO_INPUT, 3, widths[0], 7, 2)])
    cin = widths[0]
    for stage, (cout, stride) in enumerate(zip(widths, (2, 2, 2, 1)), start=1):
        x = g.residual_block(f"block_{stage}a", x, cin, cout, stride)
        x = g.residual_block(f"block_{stage}b", x, cout, cout, 1)
        cin = cout
    g.conv("output_cov", x, cin, num_classes, 1, 1, gain=0.3, bias=-1.0)
    g.conv("output_bbox", x, cin, 4 * num_classes, 1, 1, gain=0.3, output=BBOX_OUTPUT)
    g.op("Sigmoid", COV_OUTPUT, ["output_cov/BiasAdd"], output=COV_OUTPUT)
    onnx.save(model_proto(g, width, height, [(COV_OUTPUT, num_classes), (BBOX_OUTPUT, 4 * num_classes)], batch), path)
