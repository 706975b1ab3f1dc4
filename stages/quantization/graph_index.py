"""One index of an ONNX graph, built once and read by the INT8 rewrite, the fp16 conversion and the lint:
who produces and who consumes each tensor, which tensors are constants, the convolution TensorRT fuses into a
tensor's producer chain, each node's depth, and the residual Adds' residual inputs. It indexes the graph as it
is when built: a rewrite builds its own index of the graph it reads, before it edits it."""
from __future__ import annotations

import functools
from typing import Mapping

import onnx

# ops TensorRT fuses into the convolution before it: biased BatchNorm as tf2onnx writes it (Mul, Add with a
# constant), or BatchNormalization. A residual Add fed through them still fuses with that convolution.
FUSIBLE_AFTER_CONV = ("Mul", "Add", "BatchNormalization")


class GraphIndex:
    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.model = model
        self.initializers = {i.name: i for i in graph.initializer}
        self.producers: dict[str, onnx.NodeProto] = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for tensor in node.input:
                self.consumers.setdefault(tensor, []).append(node)
        self.constants = set(self.initializers) | {n.output[0] for n in graph.node if n.op_type == "Constant"}
        self.outputs = {o.name for o in graph.output}
        self.nodes: dict[str, onnx.NodeProto] = {}
        for node in graph.node:
            self.nodes.setdefault(node.name, node)

    def produced_by(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        """The node of `op_type` that produces `tensor`, or None."""
        node = self.producers.get(tensor)
        return node if node is not None and node.op_type == op_type else None

    def activations(self, node: onnx.NodeProto) -> list[str]:
        """The node's inputs that are not constants."""
        return [i for i in node.input if i and i not in self.constants]

    def fused_conv(self, tensor: str) -> onnx.NodeProto | None:
        """The convolution TensorRT fuses into `tensor`'s producer chain (Conv, then any batch-norm Mul/Add with a
        constant), or None."""
        node = self.producers.get(tensor)
        while node is not None and node.op_type in FUSIBLE_AFTER_CONV:
            activations = self.activations(node)
            if len(activations) != 1:
                return None
            node = self.producers.get(activations[0])
        return node if node is not None and node.op_type == "Conv" else None

    @functools.cached_property
    def depths(self) -> dict[str, int]:
        """Each node's distance from the graph inputs, in nodes (the graph is in topological order)."""
        tensor_depth: dict[str, int] = {}
        depths = {}
        for node in self.model.graph.node:
            depth = 1 + max((tensor_depth.get(i, 0) for i in node.input if i), default=0)
            depths[node.name] = depth
            for output in node.output:
                tensor_depth[output] = depth
        return depths

    @functools.cached_property
    def residual_inputs(self) -> Mapping[str, str]:
        """{residual Add's name: its residual input}: the input that is not the output of the convolution
        TensorRT fuses with the Add. Where both inputs come from convolutions (a projection shortcut), the
        deeper one (the block's last convolution) fuses and the shortcut's is the residual input. Adds of a
        constant (batch norm) are not residual."""
        found = {}
        for node in self.model.graph.node:
            if node.op_type != "Add" or len(node.input) != 2 or any(i in self.constants for i in node.input):
                continue
            convs = [self.fused_conv(i) for i in node.input]
            if convs[0] is None and convs[1] is None:
                continue
            if convs[0] is not None and convs[1] is not None:
                fused = 0 if self.depths[convs[0].name] >= self.depths[convs[1].name] else 1
            else:
                fused = 0 if convs[0] is not None else 1
            found[node.name] = node.input[1 - fused]
        return found

    def fused_outputs(self, conv: str) -> list[str]:
        """The tensors of the convolution `conv` and of what TensorRT fuses after it (batch norm's Mul/Add with
        a constant, BatchNormalization, Relu), each the one consumer of the last: what a calibration cache
        leaves out to keep that layer out of INT8. TensorRT's builder warns "Missing scale and zero-point for
        tensor ..., expect fall back to non-int8 implementation for any layer consuming or producing given
        tensor" (TensorRT 8's log, as quoted in NVIDIA/TensorRT issue #2462)."""
        outputs = list(self.nodes[conv].output[:1])
        while len(self.consumers.get(outputs[-1], [])) == 1:
            following = self.consumers[outputs[-1]][0]
            if following.op_type not in (*FUSIBLE_AFTER_CONV, "Relu") or len(self.activations(following)) != 1:
                break
            outputs.append(following.output[0])
        return outputs


def residual_inputs(model: onnx.ModelProto) -> dict[str, str]:
    """GraphIndex(model).residual_inputs: {residual Add: its residual input}."""
    return dict(GraphIndex(model).residual_inputs)


def fused_outputs(model: onnx.ModelProto, conv: str) -> list[str]:
    """GraphIndex(model).fused_outputs(conv): the tensors a cache leaves out to keep `conv` out of INT8."""
    return GraphIndex(model).fused_outputs(conv)
