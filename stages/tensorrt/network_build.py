"""One way to build a network from an ONNX file with TensorRT's Python API, whichever library offers it
(libraries.py): parse, an optimization profile over the batch sizes, the workspace limit, a timing cache
where the library has one, build. What the library logs is kept: the warnings counted by kind, the weights
memory, and, where its ONNX parser refuses the graph, the node and NVIDIA's reason."""
from __future__ import annotations

import collections
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..pipeline.errors import StageError
from .libraries import Library
from .versions import abilities

class ParserRefusal(StageError):
    """NVIDIA's ONNX parser refused the graph: the message names the file, the node and the reason."""


@dataclass
class Built:
    plan: bytes
    seconds: float
    messages: list[tuple[str, str]] = field(default_factory=list)  # (severity, message), INFO and above

    @property
    def weights_memory(self) -> int | None:
        """'Total Weights Memory: N bytes' from the builder's log, where it says so."""
        for _, message in self.messages:
            found = re.search(r"Total Weights Memory: (\d+) bytes", message)
            if found:
                return int(found[1])
        return None

    @property
    def warnings(self) -> dict[str, int]:
        """The builder's warnings counted by kind: the message, without the layer it names."""
        kinds = collections.Counter(re.sub(r"^\s*\([^)]*\)\s*", "", message).strip()
                                    for severity, message in self.messages if severity == "WARNING")
        return dict(sorted(kinds.items()))


def _recording_logger(trt, messages: list):
    """A logger that keeps INFO and above; TensorRT's plain Logger where the module offers no ILogger."""
    if not hasattr(trt, "ILogger"):
        return trt.Logger(trt.Logger.WARNING)
    kept = {trt.ILogger.Severity.INTERNAL_ERROR: "ERROR", trt.ILogger.Severity.ERROR: "ERROR",
            trt.ILogger.Severity.WARNING: "WARNING", trt.ILogger.Severity.INFO: "INFO"}

    class Recording(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, message):
            if severity in kept:
                messages.append((kept[severity], message))
    return Recording()


def _reason(error) -> str:
    """NVIDIA's words for a parser error: the node, its operator and the description, without the CUDA
    runtime's complaint that no GPU is here (it is not the reason)."""
    if not hasattr(error, "desc"):
        return str(error)
    lines = [line for line in str(error.desc()).splitlines()
             if line.strip() and "Cuda Runtime" not in line and not line.startswith("Invalid Node - ")]
    node = error.node_name() or f"node {error.node()}"
    return f"node {node} ({error.node_operator()}): {' '.join(lines) or str(error.code())}"


def build(library: Library, model: Path, shapes: Sequence[tuple[int, ...]], workspace_mib: int,
          timing_cache: Path | None = None,
          configure: Callable[[object, object, object], None] | None = None, explicit: bool = True,
          follow_static_batch: bool = False) -> Built:
    """Build `model` into a serialized engine with `library`: a strongly typed network where `explicit`
    (the only kind TensorRT 11 and TensorRT-RTX have), else TensorRT 8's explicit-batch network for
    `configure(trt, network, config)` to set precision flags on. `shapes`: the input's min, opt and max; with
    `follow_static_batch`, a model whose batch dimension is fixed is built for that batch instead."""
    trt, messages = library.module, []
    start = time.perf_counter()
    logger = _recording_logger(trt, messages)
    builder = trt.Builder(logger)
    if explicit and not abilities(library.api.major).typing_flag:
        network = builder.create_network()  # strong typing is the only typing
    elif explicit:
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    else:  # EXPLICIT_BATCH: 8.6 parses ONNX only into explicit-batch networks; 10 ignores it
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(model).read_bytes()):
        reasons = "; ".join(_reason(parser.get_error(i)) for i in range(parser.num_errors))
        raise ParserRefusal(f"{library} cannot parse {model}: {reasons}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    entry = network.get_input(0)  # by its own name: export's input_1, a tf2onnx export's input_1:0
    if follow_static_batch and len(entry.shape) and entry.shape[0] > 0:  # one fixed batch: that batch only
        shapes = tuple((entry.shape[0], *shape[1:]) for shape in shapes)
    profile = builder.create_optimization_profile()
    profile.set_shape(entry.name, *shapes)
    config.add_optimization_profile(profile)
    if library.timing_cache and timing_cache is not None:
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, False)
    if configure is not None:
        configure(trt, network, config)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        said = "; ".join(message for severity, message in messages if severity == "ERROR")
        raise StageError(f"{library} failed to build an engine from {model}: {said or 'see its log above'}")
    if library.timing_cache and timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return Built(bytes(serialized), time.perf_counter() - start, messages)
