"""A stand-in for TensorRT's Python API, as much of it as stages.open_backend.engines.build_tensorrt
calls, for machines without TensorRT or a GPU (all of this project's). The network is read from the ONNX
file with onnx (one layer per node), and every call that shapes the engine is recorded in BUILDS, so a
test can check what the builder was asked for. The "engine" is a JSON description of that request."""
import enum
import json

import onnx

BUILDS = []  # one dict per build_serialized_network call


class Logger:
    WARNING = 2

    def __init__(self, severity):
        self.severity = severity


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class BuilderFlag(enum.Enum):
    FP16 = "FP16"
    INT8 = "INT8"


class Tensor:
    def __init__(self, name, shape=()):
        self.name, self.shape, self.dynamic_range = name, tuple(shape), None


class Layer:
    def __init__(self, node, tensors):
        self.name = node.name
        self.outputs = [tensors.setdefault(name, Tensor(name)) for name in node.output]
        self.num_outputs = len(self.outputs)

    def get_output(self, index):
        return self.outputs[index]


class Network:
    def __init__(self, flags):
        self.flags, self.inputs, self.layers, self.tensors = flags, [], [], {}

    @property
    def num_inputs(self):
        return len(self.inputs)

    @property
    def num_layers(self):
        return len(self.layers)

    def get_input(self, index):
        return self.inputs[index]

    def get_layer(self, index):
        return self.layers[index]


class OnnxParser:
    def __init__(self, network, logger):
        self.network, self.errors = network, []

    def parse(self, model_bytes):
        try:
            model = onnx.load_from_string(model_bytes)
        except Exception as exc:  # TensorRT reports a parse failure through get_error
            self.errors.append(f"cannot read the model: {exc}")
            return False
        weights = {init.name for init in model.graph.initializer}
        for value in model.graph.input:
            if value.name not in weights:
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
                self.network.inputs.append(self.network.tensors.setdefault(value.name, Tensor(value.name, dims)))
        self.network.layers = [Layer(node, self.network.tensors) for node in model.graph.node]
        return True

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, index):
        return self.errors[index]


class OptimizationProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, minimum, optimum, maximum):
        self.shapes[name] = [list(minimum), list(optimum), list(maximum)]


class BuilderConfig:
    def __init__(self):
        self.flags, self.profiles, self.pools = [], [], {}

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool.name] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_flag(self, flag):
        self.flags.append(flag.value)


class Builder:
    def __init__(self, logger):
        self.logger = logger

    def create_network(self, flags):
        return Network(flags)

    def create_builder_config(self):
        return BuilderConfig()

    def create_optimization_profile(self):
        return OptimizationProfile()

    def build_serialized_network(self, network, config):
        ranges = {t.name: list(t.dynamic_range) for t in network.tensors.values() if t.dynamic_range is not None}
        build = {"flags": config.flags, "pools": config.pools, "profiles": [p.shapes for p in config.profiles],
                 "dynamic_ranges": ranges, "layers": network.num_layers}
        BUILDS.append(build)
        return json.dumps(build).encode()
