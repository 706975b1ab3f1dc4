"""Stand-ins for TensorRT's Python API of 8.6, 10.x and 11.x, as much of it as
stages.open_backend.tensorrt_builds calls, for machines without TensorRT or a GPU (all of this project's).

Each version has exactly the names NVIDIA's documentation gives it, so a call to a name a version lacks
fails as on the real module (AttributeError):
- 8.6: NetworkDefinitionCreationFlag EXPLICIT_BATCH (the ONNX parser needs it) and EXPLICIT_PRECISION, no
  STRONGLY_TYPED (9.x added it); BuilderFlag FP16/INT8 and the precision constraints; ITensor.dynamic_range;
  IBuilderConfig.int8_calibrator.
- 10.x: EXPLICIT_BATCH deprecated and ignored, STRONGLY_TYPED = 1 (TensorRT's Python API reference,
  "NetworkDefinitionCreationFlag": "EXPLICIT_BATCH: [DEPRECATED] Ignored"); the same weak-typing names,
  deprecated (10.1 deprecated the calibrators); a strongly typed network takes no precision flag (the same
  reference: "Setting layer precision and layer output types is not allowed"; onnxruntime's TensorRT
  execution provider sets kSTRONGLY_TYPED only when it sets neither kFP16 nor kINT8), so the stand-in's build
  fails with one.
- 11.x ("Migrating from TensorRT 10.x to 11.x", Python API): BuilderFlag.FP16/INT8/BF16/FP8/INT4/FP4,
  OBEY_/PREFER_PRECISION_CONSTRAINTS and DIRECT_IO, int8_calibrator, ITensor.dynamic_range and
  set_dynamic_range, EXPLICIT_BATCH and platform_has_fast_fp16/int8 are gone; STRONGLY_TYPED is 0 and
  ignored; create_network() takes no flags by default.
Sources: docs/design.md, "TensorRT 10 and 11", which collects them (TensorRT OSS
python/src/infer/pyCore.cpp and pyGraph.cpp, 11.1 against release/10.16; the migration pages). The network is read from the ONNX file with onnx (one layer per node), every build is recorded in BUILDS so
a test can check what the builder was asked for, and the "engine" is a JSON description of that request."""
from __future__ import annotations

import enum
import importlib.util
import json
import sys
from pathlib import Path

_VERSIONS_MODULE = "_tensorrt_versions"


def tensorrt_versions():
    """stages/tensorrt/versions.py, the table of what each version can do, which the builders read too: loaded
    by its file, once a process (the stand-ins run in processes that may not import the project). The trtexec
    stand-in reads it through here too."""
    if _VERSIONS_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(_VERSIONS_MODULE,
                                                      Path(__file__).parents[2] / "stages/tensorrt/versions.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclass looks its module up there
        spec.loader.exec_module(module)
    return sys.modules[_VERSIONS_MODULE]

_WEAK_TYPING_FLAGS = ("FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                      "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO")
_OTHER_FLAGS = ("DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS",
                "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "STRIP_PLAN")


def namespace(version: str) -> dict:
    """The module namespace of `tensorrt` at this version."""
    can = tensorrt_versions().abilities(int(version.split(".")[0]))
    builds: list[dict] = []

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, severity=WARNING):
            self.severity = severity
            self.messages: list[str] = []

        def log(self, severity, message):
            self.messages.append(message)

    if not can.explicit_batch_flag:
        Flag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
    elif can.strongly_typed:
        Flag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    else:
        Flag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1})
    if not can.implicit:
        builder_flags = _OTHER_FLAGS
    elif can.strongly_typed:
        builder_flags = _WEAK_TYPING_FLAGS + _OTHER_FLAGS
    else:
        builder_flags = ("FP16", "INT8", "FP8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                         "DIRECT_IO") + _OTHER_FLAGS[:-1]  # no BF16 (9.x), no STRIP_PLAN (10.0)
    BuilderFlag = enum.IntEnum("BuilderFlag", {name: i for i, name in enumerate(builder_flags)})
    MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})

    if not can.implicit:
        class ITensor:
            __slots__ = ("name", "shape")  # no dynamic_range: assigning one raises AttributeError

            def __init__(self, name, shape=()):
                self.name, self.shape = name, tuple(shape)
    else:
        class ITensor:
            def __init__(self, name, shape=()):
                self.name, self.shape, self.dynamic_range = name, tuple(shape), None

            def set_dynamic_range(self, low, high):
                self.dynamic_range = (low, high)
                return True

    class ILayer:
        def __init__(self, node, tensors):
            self.name, self.type = node.name, node.op_type
            self.outputs = [tensors.setdefault(name, ITensor(name)) for name in node.output]
            self.num_outputs = len(self.outputs)

        def get_output(self, index):
            return self.outputs[index]

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags, self.inputs, self.layers, self.tensors = flags, [], [], {}
            if can.strongly_typed and not can.typing_flag:  # the only typing
                self.strongly_typed, self.explicit_batch = True, True
            elif can.strongly_typed:
                self.strongly_typed, self.explicit_batch = bool(flags & (1 << Flag.STRONGLY_TYPED)), True
            else:
                self.strongly_typed, self.explicit_batch = False, bool(flags & (1 << Flag.EXPLICIT_BATCH))
            self.model_ops: list[str] = []

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

        def parse(self, model_bytes, path=None):
            import onnx  # here: the trtexec stand-in imports this module for tensorrt_versions alone

            if not self.network.explicit_batch:  # TensorRT 8's ONNX parser: explicit-batch networks only
                self.errors.append("Network must have explicit batch dimensions (EXPLICIT_BATCH)")
                return False
            try:
                model = onnx.load_from_string(bytes(model_bytes))
            except Exception as exc:  # TensorRT reports a parse failure through get_error
                self.errors.append(f"cannot read the model: {exc}")
                return False
            unknown = [n.op_type for n in model.graph.node if not onnx.defs.has(n.op_type)]
            if unknown:  # the parser's words for an op it has no importer for
                self.errors.append(f"No importer registered for op: {unknown[0]}")
                return False
            weights = {init.name for init in model.graph.initializer}
            for value in model.graph.input:
                if value.name not in weights:
                    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
                    self.network.inputs.append(self.network.tensors.setdefault(value.name, ITensor(value.name, dims)))
            self.network.layers = [ILayer(node, self.network.tensors) for node in model.graph.node]
            self.network.model_ops = [node.op_type for node in model.graph.node]
            return True

        def parse_from_file(self, path):
            with open(path, "rb") as handle:
                return self.parse(handle.read(), path)

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's keyword names
            self.shapes[name] = [list(min), list(opt), list(max)]

    class ITimingCache:
        def __init__(self, blob: bytes):
            self.entries = json.loads(blob) if blob else []

        def serialize(self):
            return memoryview(json.dumps(self.entries).encode())

    config_slots = ("flags", "profiles", "pools", "timing_cache")

    class IBuilderConfig:
        if not can.implicit:
            __slots__ = config_slots  # no int8_calibrator

        def __init__(self):
            self.flags, self.profiles, self.pools, self.timing_cache = [], [], {}, None
            if can.implicit:
                self.int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool.name] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_flag(self, flag):
            self.flags.append(flag.name)

        def create_timing_cache(self, blob):
            return ITimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            if can.fast_precision_queries:
                self.platform_has_fast_fp16 = self.platform_has_fast_int8 = True

        def create_network(self, flags=0):
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            precision = [f for f in config.flags if f in _WEAK_TYPING_FLAGS]
            if network.strongly_typed and precision:
                self.logger.log(Logger.ERROR, f"precision flags {precision} are not allowed on a strongly typed "
                                              "network")
                return None
            ranges = {t.name: list(t.dynamic_range) for t in network.tensors.values()
                      if getattr(t, "dynamic_range", None) is not None}
            if config.timing_cache is not None:
                config.timing_cache.entries.append(len(config.timing_cache.entries))  # one more build timed
            build = {"version": version, "network_flags": network.flags, "strongly_typed": network.strongly_typed,
                     "flags": config.flags, "pools": config.pools, "profiles": [p.shapes for p in config.profiles],
                     "dynamic_ranges": ranges, "layers": network.num_layers,
                     "qdq": sum(op in ("QuantizeLinear", "DequantizeLinear") for op in network.model_ops)}
            builds.append(build)
            return memoryview(json.dumps(build).encode())

    names = {"__version__": version, "BUILDS": builds, "Logger": Logger, "NetworkDefinitionCreationFlag": Flag,
             "BuilderFlag": BuilderFlag, "MemoryPoolType": MemoryPoolType, "ITensor": ITensor, "ILayer": ILayer,
             "INetworkDefinition": INetworkDefinition, "OnnxParser": OnnxParser,
             "IOptimizationProfile": IOptimizationProfile, "ITimingCache": ITimingCache,
             "IBuilderConfig": IBuilderConfig, "Builder": Builder}
    return names
