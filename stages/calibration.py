"""INT8 calibration without TensorRT: per-tensor dynamic ranges from real data, and the TensorRT
calibration cache that carries them.

The collectors stream: each batch is reduced to a running max or a fixed-width histogram and then
dropped, so memory does not grow with the number of batches. Entropy calibration follows TensorRT's
EntropyCalibration2 as NVIDIA's pytorch-quantization documents it: a 2048-bin histogram of |x|, and
for every candidate threshold i >= 128 the KL divergence between the clipped reference distribution
and its 128-level quantization; the last minimising i gives amax = i * bin_width.
"""
from __future__ import annotations

import re
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx

NUM_BINS, START_BIN, QUANT_LEVELS = 2048, 128, 128
CALIBRATOR_NAMES = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration",
                    "percentile": "LegacyCalibration"}
DEFAULT_TRT_VERSION = 8601  # TensorRT 8.6.1 writes "TRT-8601-..."


class CalibrationCacheError(ValueError):
    """A calibration cache that cannot be used. Names the file and line."""


# --------------------------------------------------------------------------- collectors

class MaxCollector:
    def __init__(self):
        self.amax = 0.0

    def add(self, values: np.ndarray) -> None:
        if values.size:
            self.amax = max(self.amax, float(np.max(np.abs(values))))

    def compute(self) -> float:
        return self.amax


class HistogramCollector:
    """Histogram of |x| with a fixed bin width set by the first non-zero batch (max / 2048). Later
    batches that reach further add bins of the same width; past 2 x 2048 bins, neighbouring bins are
    merged in pairs, which keeps the histogram exact on a coarser grid."""

    def __init__(self, num_bins: int = NUM_BINS, skip_zeros: bool = True):
        self.num_bins, self.skip_zeros = num_bins, skip_zeros
        self.width: float | None = None
        self.hist = np.zeros(0, dtype=np.int64)
        self.zeros = 0  # elements seen before any non-zero value fixed the grid

    def add(self, values: np.ndarray) -> None:
        a = np.abs(values.ravel())  # a copy: the caller's array stays intact
        if self.skip_zeros:
            a = a[a != 0]
        top = float(a.max()) if a.size else 0.0
        if top == 0.0:
            if self.width is None:
                self.zeros += a.size
            else:
                self.hist[0] += a.size
            return
        if self.width is None:
            self.width = top / self.num_bins
            self.hist = np.zeros(self.num_bins, dtype=np.int64)
            self.hist[0] += self.zeros
        inv = np.float32(1.0 / self.width)
        needed = int(np.float32(top) * inv) + 1
        if needed > len(self.hist):
            self.hist = np.concatenate([self.hist, np.zeros(needed - len(self.hist), np.int64)])
            while len(self.hist) >= 2 * self.num_bins:
                if len(self.hist) % 2:
                    self.hist = np.append(self.hist, 0)
                self.hist = self.hist.reshape(-1, 2).sum(axis=1)
                self.width *= 2
            inv = np.float32(1.0 / self.width)
        np.multiply(a, inv, out=a)
        index = a.astype(np.intp)
        np.minimum(index, len(self.hist) - 1, out=index)
        self.hist += np.bincount(index, minlength=len(self.hist))

    def edges(self) -> np.ndarray:
        return np.arange(len(self.hist) + 1) * (self.width or 0.0)


def entropy_amax(hist: np.ndarray, width: float, start_bin: int = START_BIN,
                 levels: int = QUANT_LEVELS) -> float:
    """EntropyCalibration2's threshold for a histogram of |x|, all candidates at once.

    KL(P || Q) for candidate i, with P = hist[:i] plus the outliers folded into its last bin and Q
    the 128-level quantization of hist[:i] spread over its non-zero bins, reduces to prefix sums:
    sum P log P - sum_j C_j log(C_j / n_j) - O log q_last, normalised by the totals, where C_j and
    n_j are the mass and the non-zero count of chunk j, and O the outlier mass.
    """
    hist = np.asarray(hist, dtype=np.float64)
    n = len(hist)
    if n == 0 or width == 0:
        return 0.0
    if n < start_bin:
        return n * width
    total = hist.sum()
    cum = np.concatenate([[0.0], np.cumsum(hist)])
    cum_nz = np.concatenate([[0.0], np.cumsum(hist > 0)])
    hlogh = np.where(hist > 0, hist * np.log(np.where(hist > 0, hist, 1.0)), 0.0)
    cum_hlogh = np.concatenate([[0.0], np.cumsum(hlogh)])

    cand = np.arange(start_bin, n + 1)
    merged = cand // levels  # bins per quantized level; the last level also takes the remainder
    j = np.arange(levels)
    starts = j[None, :] * merged[:, None]
    stops = np.where(j[None, :] == levels - 1, cand[:, None], starts + merged[:, None])
    mass = cum[stops] - cum[starts]
    count = cum_nz[stops] - cum_nz[starts]
    with np.errstate(divide="ignore", invalid="ignore"):
        level_value = np.where(count > 0, mass / np.where(count > 0, count, 1), 0.0)
        sum_p_log_q = np.where(mass > 0, mass * np.log(np.where(level_value > 0, level_value, 1.0)), 0.0).sum(axis=1)
    last = hist[cand - 1]
    outliers = total - cum[cand]
    q_last = level_value[:, -1]
    # The last reference bin holds its own count plus the outliers.
    p_last = last + outliers
    with np.errstate(divide="ignore", invalid="ignore"):
        p_log_p = cum_hlogh[cand - 1] + np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
        sum_p_log_q = sum_p_log_q + np.where(outliers > 0, outliers * np.log(np.where(q_last > 0, q_last, 1.0)), 0.0)
        kl = (p_log_p - sum_p_log_q) / total - np.log(total) + np.log(cum[cand])
    kl = np.where((outliers > 0) & (last == 0), np.inf, kl)  # mass where Q has none
    best = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return float(cand[best] * width)


def percentile_amax(hist: np.ndarray, width: float, percentile: float) -> float:
    if hist.sum() == 0:
        return 0.0
    cdf = np.cumsum(hist) / hist.sum()
    index = int(np.searchsorted(cdf, percentile / 100.0))
    return float((index + 1) * width)


@dataclass
class Calibrator:
    """Collects every tensor's range over batches and computes amax per tensor."""

    method: str = "entropy"
    percentile: float = 99.99
    skip_zeros: bool = True

    def __post_init__(self):
        if self.method not in CALIBRATOR_NAMES:
            raise ValueError(f"calibration method {self.method!r} is not one of {sorted(CALIBRATOR_NAMES)}")
        self.collectors: dict[str, MaxCollector | HistogramCollector] = {}
        self._pool = ThreadPoolExecutor()  # numpy releases the GIL: one tensor per core

    def add(self, tensors: Mapping[str, np.ndarray]) -> None:
        for name in tensors:
            if name not in self.collectors:
                self.collectors[name] = (MaxCollector() if self.method == "minmax"
                                         else HistogramCollector(skip_zeros=self.skip_zeros))
        list(self._pool.map(lambda item: self.collectors[item[0]].add(item[1]), tensors.items()))

    def amax(self) -> dict[str, float]:
        self._pool.shutdown()
        out = {}
        for name, c in self.collectors.items():
            if isinstance(c, MaxCollector):
                out[name] = c.compute()
            elif self.method == "entropy":
                out[name] = entropy_amax(c.hist, c.width or 0.0)
            else:
                out[name] = percentile_amax(c.hist, c.width or 0.0, self.percentile)
        return out


# --------------------------------------------------------------------------- the model's tensors

def calibration_tensor_names(model: onnx.ModelProto) -> list[str]:
    """Tensors TensorRT assigns a dynamic range: the network inputs and every node output."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs + [o for node in model.graph.node for o in node.output if o]


def with_all_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model that also outputs every intermediate tensor."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in calibration_tensor_names(model):
        if name not in existing and name not in {i.name for i in probe.graph.input}:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    return probe


def collect_ranges(model_path: str | Path, batches: Iterable[np.ndarray], method: str = "entropy",
                   percentile: float = 99.99, progress=None, skip_zeros: bool = True) -> dict[str, float]:
    """amax of every calibration tensor of the model over the batches (streamed)."""
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    names = calibration_tensor_names(model)
    input_name = names[0]
    session = ort.InferenceSession(with_all_outputs(model).SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    calibrator = Calibrator(method, percentile, skip_zeros)
    for batch in batches:
        values = dict(zip(outputs, session.run(outputs, {input_name: batch})))
        values[input_name] = batch
        calibrator.add({name: values[name] for name in names})
        if progress is not None:
            progress.update(1)
    return calibrator.amax()


# --------------------------------------------------------------------------- cache file

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
