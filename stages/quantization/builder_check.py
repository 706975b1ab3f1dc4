"""Export's check of its deployable ONNX with NVIDIA's own parser and builder: TensorRT-RTX parses it and
builds it ahead of time (strongly typed, export's batch profile), with no GPU. A graph it refuses fails
export with the parser's own words (the node and the reason); where the library cannot load here, export
says so once and goes on, and the report says the check was skipped. What a build says is recorded: the
builder and its version, the plan's size, the weights memory from its log and the warnings counted by
kind: figures that are the same on every run of the same graph, so the report and the export's log keep
their bytes and nothing after export re-runs for them. The build time varies from run to run: it goes to
`timings` (export's timings file, published in metrics/timings.json beside convert's latency). Accepted by
TensorRT-RTX is evidence, not proof, that TensorRT 10/11 accept the graph (libraries.py says how the two
differ)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..tensorrt.libraries import RTX_NAME, Unavailable, tensorrt_rtx
from ..tensorrt.network_build import build

log = logging.getLogger("stages.export")

# TensorRT-RTX compiles its kernels on the GPU that runs the engine: the workspace of an ahead-of-time
# build bounds nothing here, and any size the GPUs it targets have does
CHECK_WORKSPACE_MIB = 1024


BUILD_TIME_KEY = "nvidia_builder_build_s"  # export's timings: seconds TensorRT-RTX took to parse and build


def check(model: Path, chw: tuple[int, int, int], max_batch_size: int, timings: dict | None = None) -> dict:
    """Build `model` with TensorRT-RTX for batches 1 to max_batch_size (or its own batch, where the graph fixes
    one, as a TAO export may); the report's entry. The seconds the parse and build took go into `timings`
    (BUILD_TIME_KEY) where one is given. Raises
    network_build.ParserRefusal, or StageError for a build that fails, with NVIDIA's message."""
    try:
        library = tensorrt_rtx()
    except Unavailable as exc:
        log.warning("%s is not checked with NVIDIA's builder: %s", model.name, exc)
        return {"builder": RTX_NAME, "checked": False, "reason": str(exc)}
    shapes = ((1, *chw), (max_batch_size, *chw), (max_batch_size, *chw))
    started = time.perf_counter()
    built = build(library, model, shapes, CHECK_WORKSPACE_MIB, follow_static_batch=True)
    if timings is not None:
        timings[BUILD_TIME_KEY] = round(time.perf_counter() - started, 3)
    warnings = built.warnings
    log.info("%s (NVIDIA's ONNX parser and builder) built %s ahead of time: a plan of %d bytes, %s bytes "
             "of weights%s. Accepted by %s is evidence, not proof, that TensorRT 10/11 accept it", library,
             model.name, len(built.plan), built.weights_memory,
             "".join(f"; {count} x warning '{kind}'" for kind, count in warnings.items()), RTX_NAME)
    return {"builder": RTX_NAME, "version": library.version, "checked": True, "graph": model.name,
            "plan_bytes": len(built.plan), "weights_memory_bytes": built.weights_memory, "warnings": warnings}
