"""TensorRT's calibration cache (text): a header `TRT-<version>-<calibrator>`, then one line per
tensor, `name: <8 hex digits>`, the big-endian float32 bits of its scale (amax / 127). TensorRT
matches the names against its network's tensors: the inputs and every node output."""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import onnx

# The calibration methods, by the calibrator name a cache's header gives each; in the order auto prefers them
# on a tie (TensorRT's default first). numpy and onnx load where they are used: the config's choices, which
# the platform probe reads on every `dvc repro`, name these methods.
CALIBRATOR_NAMES = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration",
                    "percentile": "LegacyCalibration"}
AUTO = "auto"  # the method that measures best of these: the cache then names the calibrator it chose


class CalibrationCacheError(ValueError):
    """A calibration cache that cannot be used. Names the file and line."""


def calibration_tensor_names(model: onnx.ModelProto) -> list[str]:
    """Tensors TensorRT assigns a dynamic range: the network inputs and every node output."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs + [o for node in model.graph.node for o in node.output if o]


# INT8's largest magnitude: a tensor's scale is its dynamic range (amax) over this, everywhere in the project
INT8_MAX = 127.0


def write_cache(path: str | Path, amax: Mapping[str, float], method: str, trt_version: int) -> None:
    """The cache of these dynamic ranges (scale amax / 127), as TensorRT's `method` calibrator writes it."""
    write_scales(path, f"TRT-{trt_version}-{CALIBRATOR_NAMES[method]}", scales_of(amax))


def scales_of(amax: Mapping[str, float]) -> dict[str, float]:
    """The cache's scales (amax / 127) of these dynamic ranges; a tensor that is always 0 is exact at any
    scale, and gets 1 / 127."""
    return {name: value / INT8_MAX if value > 0 else 1.0 / INT8_MAX for name, value in amax.items()}


def write_scales(path: str | Path, header: str, scales: Mapping[str, float]) -> None:
    """A cache of these scales, bit for bit (a float32 read by read_cache packs back to the same bits)."""
    import numpy as np

    lines = [header] + [f"{name}: {struct.pack('>f', np.float32(scale)).hex()}" for name, scale in scales.items()]
    Path(path).write_text("\n".join(lines) + "\n")


_HEADER = re.compile(r"TRT-\d+-\w+\Z")
_ENTRY = re.compile(r"(.+): ([0-9a-fA-F]{8})\Z")


def read_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor name: scale}) of a TensorRT calibration cache."""
    import numpy as np

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


@dataclass(frozen=True)
class CacheOnModel:
    """A cache's scales under the names of one model's tensors."""
    scales: dict[str, float]  # by the model's tensor names
    ignored: list[str]  # the cache's names that match no tensor of the model, as TensorRT ignores them
    convolutions: int  # the model's convolutions
    covered: int  # of which the cache gives the input a scale


def map_onto_model(path: str | Path, scales: Mapping[str, float], model: onnx.ModelProto, model_name: str,
                   renames: Mapping[str, str] | None = None) -> CacheOnModel:
    """The scales of a cache made for the model before `renames` ({old name: new name}, export's) onto
    `model`: a cache that TensorRT made for the original model (NGC's, under tf2onnx's `input_1:0` names,
    plus names of TensorRT's own layers). Refuses one that scales no convolution's input: made for
    another model."""
    renames = renames or {}
    known = set(calibration_tensor_names(model))
    mapped, ignored = {}, []
    for name, scale in scales.items():
        target = renames.get(name, name)
        if target in known:
            mapped[target] = scale
        else:
            ignored.append(name)
    convolutions = [n for n in model.graph.node if n.op_type == "Conv"]
    covered = sum(1 for n in convolutions if n.input[0] in mapped)
    if not covered:
        examples = ", ".join(repr(n) for n in list(scales)[:3])
        raise CalibrationCacheError(
            f"{path}: scales none of the {len(convolutions)} convolution inputs of {model_name}: {len(mapped)} of "
            f"its {len(scales)} tensor names match a tensor of the model (its names: {examples}, ...). Is it the "
            "calibration cache of another model?")
    return CacheOnModel(mapped, ignored, len(convolutions), covered)
