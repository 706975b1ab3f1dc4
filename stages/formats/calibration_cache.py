"""TensorRT's calibration cache (text): a header `TRT-<version>-<calibrator>`, then one line per
tensor, `name: <8 hex digits>`, the big-endian float32 bits of its scale (amax / 127). TensorRT
matches the names against its network's tensors: the inputs and every node output."""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

CALIBRATOR_NAMES = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration",
                    "percentile": "LegacyCalibration"}
DEFAULT_TRT_VERSION = 8601  # TensorRT 8.6.1 writes "TRT-8601-..."


class CalibrationCacheError(ValueError):
    """A calibration cache that cannot be used. Names the file and line."""


def calibration_tensor_names(model: onnx.ModelProto) -> list[str]:
    """Tensors TensorRT assigns a dynamic range: the network inputs and every node output."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs + [o for node in model.graph.node for o in node.output if o]


def _scale_hex(amax: float) -> str:
    scale = amax / 127.0 if amax > 0 else 1.0 / 127.0  # a tensor that is always 0 is exact at any scale
    return struct.pack(">f", np.float32(scale)).hex()


def write_cache(path: str | Path, amax: Mapping[str, float], method: str = "entropy",
                trt_version: int = DEFAULT_TRT_VERSION) -> None:
    lines = [f"TRT-{trt_version}-{CALIBRATOR_NAMES[method]}"]
    lines += [f"{name}: {_scale_hex(value)}" for name, value in amax.items()]
    Path(path).write_text("\n".join(lines) + "\n")


_HEADER = re.compile(r"TRT-\d+-\w+\Z")
_ENTRY = re.compile(r"(.+): ([0-9a-fA-F]{8})\Z")


def read_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor name: scale}) of a TensorRT calibration cache."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationCacheError(f"cannot read calibration cache {path}: {exc}") from None
    if not lines or not _HEADER.match(lines[0].strip()):
        found = repr(lines[0][:60]) if lines else "an empty file"
        raise CalibrationCacheError(f"{path}:1: expected a header like 'TRT-8601-EntropyCalibration2', found {found}")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        m = _ENTRY.match(line.strip())
        if not m:
            raise CalibrationCacheError(f"{path}:{number}: expected 'TENSOR_NAME: 8 hex digits', found {line[:80]!r}")
        scale = struct.unpack(">f", bytes.fromhex(m.group(2)))[0]
        if not np.isfinite(scale) or scale <= 0:
            raise CalibrationCacheError(f"{path}:{number}: scale of {m.group(1)!r} is {scale}, not a positive number")
        scales[m.group(1)] = scale
    return lines[0].strip(), scales


def check_cache_names(path: str | Path, scales: Mapping[str, float], model: onnx.ModelProto) -> None:
    """Every cache entry must name a tensor of the model (TensorRT matches them by name)."""
    known = set(calibration_tensor_names(model))
    unknown = [name for name in scales if name not in known]
    if unknown:
        lines = Path(path).read_text().splitlines()
        where = {line.split(":")[0]: i + 1 for i, line in enumerate(lines)}
        listed = ", ".join(f"{n!r} (line {where.get(n, '?')})" for n in unknown[:5])
        raise CalibrationCacheError(f"{path}: {len(unknown)} tensor name(s) not in the model: {listed}"
                                    + (" ..." if len(unknown) > 5 else ""))
