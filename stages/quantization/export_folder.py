"""The export folder's deployable ONNX: written beside the exported model.onnx from it (and, for int8, from
its calibration cache), and the log lines that say what it holds and why."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import onnx

from ..formats.calibration_cache import INT8_MAX, map_onto_model, read_cache
from ..formats.deployable_onnx import FP16_QDQ_OPSET, deployable_file
from ..formats.file_names import CACHE_FILE, DEPLOYABLE_FILES
from .deployable import Deployable
from .fp16 import FP16_DATA_MAX, strongly_typed_fp16
from .int8_rewrite import explicit_int8
from .lint import qdq_count


def write_for_export(folder: str | Path, data_type: str, high_precision: str,
                     maxima: Mapping[str, float] | None = None, float_layers: Iterable[str] = ()) -> Deployable | None:
    """The deployable ONNX of the export in `folder` (model.onnx, and for int8 calibration.bin), written
    beside it as deployable_file(data_type); None for fp32, whose model.onnx is deployable as it is.
    `maxima`: each tensor's largest magnitude on the calibration images, where they were read; for int8,
    the cache's ranges (scale x 127) stand in for the tensors it does not give. `float_layers`: convolutions
    left in higher precision (int8)."""
    folder = Path(folder)
    if data_type == "fp32":
        return None
    model = onnx.load(str(folder / DEPLOYABLE_FILES["fp32"]))
    if data_type == "int8":
        cache = folder / CACHE_FILE
        _, scales = read_cache(cache)
        on_model = map_onto_model(cache, scales, model, DEPLOYABLE_FILES["fp32"]).scales
        ranges = {name: scale * INT8_MAX for name, scale in on_model.items()}
        deployable = explicit_int8(model, on_model, high_precision, {**ranges, **(maxima or {})}, float_layers)
    else:
        deployable = strongly_typed_fp16(model, maxima)
    onnx.save(deployable.model, str(folder / deployable_file(data_type)))
    return deployable


def described(deployable: Deployable, data_type: str, maxima_known: bool) -> list[str]:
    """Log lines saying what the deployable ONNX holds and why."""
    name = deployable_file(data_type)
    lines = []
    if data_type == "int8":
        lines.append(f"{name}: explicit INT8 at opset {deployable.opset}: {len(deployable.quantized)} convolutions "
                     f"quantized ({'per-channel' if deployable.per_channel else 'per-tensor'} weights), "
                     f"{qdq_count(deployable.model)} Q/DQ nodes, Q/DQ on {len(deployable.residual_inputs)} residual "
                     "Add inputs")
        if deployable.without_scale:
            lines.append(f"{name}: {len(deployable.without_scale)} convolutions stay in higher precision, their input "
                         f"has no scale in the cache: {names_of(deployable.without_scale)}")
        if deployable.float_layers:
            lines.append(f"{name}: {len(deployable.float_layers)} convolutions left in higher precision, where INT8 cost "
                         f"the selection set too much: {names_of(deployable.float_layers)}")
        high = "fp16" if deployable.opset >= FP16_QDQ_OPSET else "fp32"
        lines.append(f"{name}: what is not INT8 computes in {high}")
        if deployable.upgrade_failure:
            lines.append(f"{name}: the model's opset could not be raised to {FP16_QDQ_OPSET} "
                         f"({deployable.upgrade_failure}): fp16 Q/DQ needs it, so the rest stays fp32"
                         + ("" if deployable.per_channel else ", and weights are quantized per tensor"))
    else:
        lines.append(f"{name}: strongly typed fp16 (fp32 inputs and outputs)")
    if deployable.kept_fp32:
        shown = ", ".join(f"{node} ({value:.4g})" for node, value in list(deployable.kept_fp32.items())[:8])
        lines.append(f"{name}: {len(deployable.kept_fp32)} nodes stay fp32, their values reach past "
                     f"{FP16_DATA_MAX:g} on the calibration images: {shown}")
    elif not maxima_known and (data_type == "fp16" or deployable.opset >= FP16_QDQ_OPSET):
        lines.append(f"{name}: no calibration images were read, so no tensor was checked against fp16's range "
                     + ("beyond the cache's" if data_type == "int8" else ""))
    return lines


def names_of(nodes: Iterable[str], limit: int = 8) -> str:
    nodes = list(nodes)
    return ", ".join(nodes[:limit]) + (f" and {len(nodes) - limit} more" if len(nodes) > limit else "")
