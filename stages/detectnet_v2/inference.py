"""Running a DetectNet_v2 ONNX model (or an onnxruntime engine) on the CPU with onnxruntime: the
exported fp32 model that every engine is compared with, and the open backend's engines."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..compute.workers import worker_count
from ..formats.onnx_model import TAO_INPUT, TAO_OUTPUTS


class OnnxRunner:
    """Runs an ONNX model or onnxruntime engine on batches of any size; outputs in TAO's order."""

    def __init__(self, path: Path, spinning: bool = True):
        """`spinning=False` where other processes need the cores between runs (a server): onnxruntime's
        threads otherwise spin-wait for the next run and burn the CPU the rest would use."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # the allowed cores, not onnxruntime's default of the host's physical ones (see compute.workers)
        options.intra_op_num_threads = worker_count()
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        fixed = self.session.get_inputs()[0].shape[0]
        if not isinstance(fixed, int) or fixed == len(batch):
            return self.session.run(list(TAO_OUTPUTS), {TAO_INPUT: batch})
        # a model exported with a fixed batch size: run it that many images at a time, the last chunk padded
        parts = []
        for start in range(0, len(batch), fixed):
            chunk = batch[start:start + fixed]
            padded = np.concatenate([chunk, np.zeros((fixed - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            parts.append([out[:len(chunk)] for out in self.session.run(list(TAO_OUTPUTS), {TAO_INPUT: padded})])
        return [np.concatenate(outputs) for outputs in zip(*parts)]
