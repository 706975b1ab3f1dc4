"""Inference engines for the convert step, of the kind convert.engine asks for (engine_request.py): an
onnxruntime engine (the deployable ONNX that export wrote, optimized for the CPU), or a TensorRT engine built
by TensorRT's Python API or by trtexec where TensorRT and a GPU are (tensorrt_builds.py; asked for elsewhere,
an error). Plus the verification run against the fp32 model."""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from ..formats.onnx_model import TAO_OUTPUTS
from ..pipeline.choices import DATA_TYPES, ENGINE_KINDS, QUANTIZATIONS
from . import tensorrt_builds
from .engine_request import EngineRequest, needed_export_file

log = logging.getLogger("stages.convert")


def build_engine(request: EngineRequest, log_path: Path | None = None) -> None:
    """Build the engine file of the kind asked for (trtexec's output goes to log_path)."""
    if request.data_type not in DATA_TYPES:
        raise ValueError(f"data_type {request.data_type!r} is not one of {DATA_TYPES}")
    if request.kind not in ENGINE_KINDS:
        raise ValueError(f"convert.engine is {request.kind!r}, not one of {', '.join(ENGINE_KINDS)}")
    if request.quantization not in QUANTIZATIONS:
        raise ValueError(f"convert.quantization is {request.quantization!r}, not one of {', '.join(QUANTIZATIONS)}")
    if request.kind == "onnxruntime":
        if request.quantization == "implicit":
            raise ValueError("convert.quantization is implicit, TensorRT's route with precision flags and a "
                             "calibration cache; the onnxruntime engine is built from the deployable ONNX: "
                             "-S convert.quantization=auto")
        _build_onnxruntime(request)
        return
    if request.kind == "tensorrt":
        tensorrt_builds.build_with_python_api(request)
    elif request.kind == "tensorrt_rtx":
        tensorrt_builds.build_with_python_api(request, tensorrt_builds.tensorrt_rtx_library())
    else:
        tensorrt_builds.build_with_trtexec(request, log_path or Path(request.output).with_suffix(".log"))


def _build_onnxruntime(request: EngineRequest) -> None:
    """The deployable ONNX, optimized for this CPU: the engine's mAP is the mAP of the graph a GPU builds from."""
    import onnxruntime as ort

    model = needed_export_file(request, "explicit")
    options = ort.SessionOptions()
    # EXTENDED, not ALL: the saved graph stays free of this CPU's layout-specific rewrites.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(request.output)
    options.log_severity_level = 3  # its constant folder warns of every fp16 node it leaves to run time
    ort.InferenceSession(onnx.load(str(model)).SerializeToString(), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- verification

def latency_ms(run, batch: np.ndarray, repeats: int = 10) -> float:
    run(batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def verify(engine, reference, batches: Iterable[np.ndarray], max_batch_size: int) -> dict:
    """Compare the engine with the fp32 model on the batches and time it: the convert report's verification
    (DVC metrics)."""
    stats = {name: {"dot": 0.0, "nn_e": 0.0, "nn_r": 0.0, "max_abs": 0.0} for name in TAO_OUTPUTS}
    sample = None
    images = 0
    for batch in batches:
        images += len(batch)
        sample = batch if sample is None else sample
        for name, got, want in zip(TAO_OUTPUTS, engine(batch), reference(batch)):
            s = stats[name]
            got64, want64 = got.ravel().astype(np.float64), want.ravel().astype(np.float64)
            s["dot"] += float(got64 @ want64)
            s["nn_e"] += float(got64 @ got64)
            s["nn_r"] += float(want64 @ want64)
            s["max_abs"] = max(s["max_abs"], float(np.max(np.abs(got64 - want64))))
    if sample is None:
        raise ValueError("verification needs at least one image")
    outputs = {}
    for name, s in stats.items():
        denominator = np.sqrt(s["nn_e"] * s["nn_r"])
        outputs[name] = {"cosine_similarity": round(float(s["dot"] / denominator) if denominator else 1.0, 6),
                         "max_abs_error": round(s["max_abs"], 6)}
    one = sample[:1]
    full = np.concatenate([sample] * (-(-max_batch_size // len(sample))))[:max_batch_size]
    return {
        "images": images,
        "outputs": outputs,
        # stable keys, so experiments with other batch sizes share a column in `dvc exp show`
        "max_batch_size": max_batch_size,
        "latency_ms": {"batch_1": round(latency_ms(engine, one), 3), "max_batch": round(latency_ms(engine, full), 3)},
    }
