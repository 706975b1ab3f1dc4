"""INT8 calibration without TensorRT: per-tensor dynamic ranges from real data, which
formats.calibration_cache writes as TensorRT's calibration cache.

The collectors stream: each batch is reduced to a running max or a fixed-width histogram and then
dropped, so memory does not grow with the number of batches. Entropy calibration follows TensorRT's
EntropyCalibration2 as NVIDIA's pytorch-quantization documents it: a 2048-bin histogram of |x|, and
for every candidate threshold i >= 128 the KL divergence between the clipped reference distribution
and its 128-level quantization; the last minimising i gives amax = i * bin_width.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numba
import numpy as np
import onnx

from ..compute.workers import worker_count
from ..formats.calibration_cache import CALIBRATOR_NAMES, calibration_tensor_names

NUM_BINS, START_BIN, QUANT_LEVELS = 2048, 128, 128


# --------------------------------------------------------------------------- collectors

# A large tensor is reduced in pieces of this many elements (8 MiB), each on any free thread: with one
# task per tensor, the largest tensors (234 MiB at TAO's ResNet-18 on 1248x384) leave every other core
# idle at the end of each batch. The histogram's counts are integers, so the pieces' sum is the same
# histogram to the last count, whatever the number of pieces or threads.
CHUNK_ELEMENTS = 1 << 21


def _flat(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).ravel()


def chunks(values: np.ndarray) -> list[np.ndarray]:
    """The tensor as contiguous float32 pieces of at most CHUNK_ELEMENTS (views, no copy)."""
    flat = _flat(values)
    return [flat[start:start + CHUNK_ELEMENTS] for start in range(0, flat.size, CHUNK_ELEMENTS)]


def largest_magnitude(values: np.ndarray, relu: bool = False) -> float:
    """max |x|, or max(max(x), 0) with relu, of a non-empty array."""
    return max(float(values.max()), 0.0 if relu else -float(values.min()))


class MaxCollector:
    def __init__(self):
        self.amax = 0.0

    def observe(self, top: float) -> None:
        self.amax = max(self.amax, top)

    def compute(self) -> float:
        return self.amax


@numba.njit(cache=True, nogil=True)
def _bin(values: np.ndarray, inv: np.float32, hist: np.ndarray, relu: bool) -> int:
    """hist[int(|v| * inv)] += 1 for every non-zero v (v -> max(v, 0) with relu), in one pass without
    temporaries (numpy needs five passes and two arrays as large as the tensor); returns how many values
    were zero. Zeros are counted, not binned: half of a ReLU's values are, and incrementing one counter
    in memory over and over makes each increment wait for the last (measured: 18% slower)."""
    zeros = 0
    for v in values:
        a = (v if v > 0 else np.float32(0)) if relu else abs(v)
        if a == 0:
            zeros += 1
        else:
            hist[np.intp(a * inv)] += 1
    return zeros


def _load_kernels() -> None:
    _bin(np.zeros(1, np.float32), np.float32(1), np.zeros(1, np.int64), False)
    _kl_divergences(np.ones(2, np.int64), 1, 1)


class HistogramCollector:
    """Histogram of |x| with a fixed bin width set by the first non-zero batch (max / 2048). Later
    batches that reach further add bins of the same width; past 2 x 2048 bins, neighbouring bins are
    merged in pairs, which keeps the histogram exact on a coarser grid. Exact zeros (ReLU's) are
    left out with skip_zeros, as pytorch-quantization's option of that name does: otherwise the
    zero spike dominates the KL search and clips most of the range.

    A batch is added in three steps, so that its pieces can be binned on several threads: observe()
    the batch's largest magnitude (which fixes or widens the grid), binned() each piece into a
    histogram of its own, merge() those. add() does the three for one array."""

    def __init__(self, num_bins: int = NUM_BINS, skip_zeros: bool = True):
        self.num_bins, self.skip_zeros = num_bins, skip_zeros
        self.width: float | None = None
        self.hist = np.zeros(0, dtype=np.int64)
        self.zeros = 0  # elements seen before any non-zero value fixed the grid
        self.top = 0.0  # the largest magnitude seen: minmax's amax, from the same pass

    def add(self, values: np.ndarray, relu: bool = False) -> None:
        """Add |values|, or max(values, 0) with relu: a ReLU's tensor from its input's."""
        flat = _flat(values)
        if flat.size and self.observe(largest_magnitude(flat, relu), flat.size):
            self.merge(*self.binned(flat, relu))

    def observe(self, top: float, size: int) -> bool:
        """Take in a batch of `size` values whose largest magnitude is `top`: fix the grid, or widen it
        to reach top. False when the batch is all zeros, which leaves nothing to bin."""
        self.top = max(self.top, top)
        if top == 0.0:
            if not self.skip_zeros:
                if self.width is None:
                    self.zeros += size
                else:
                    self.hist[0] += size
            return False
        if self.width is None:
            self.width = top / self.num_bins
            self.hist = np.zeros(self.num_bins, dtype=np.int64)
            self.hist[0] += self.zeros
        needed = int(np.float32(top) * np.float32(1.0 / self.width)) + 1
        if needed > len(self.hist):
            self.hist = np.concatenate([self.hist, np.zeros(needed - len(self.hist), np.int64)])
            while len(self.hist) >= 2 * self.num_bins:
                if len(self.hist) % 2:
                    self.hist = np.append(self.hist, 0)
                self.hist = self.hist.reshape(-1, 2).sum(axis=1)
                self.width *= 2
        return True

    def binned(self, piece: np.ndarray, relu: bool) -> tuple[np.ndarray, int]:
        """A piece of the observed batch binned on the current grid (zeros left out), and how many of its
        values were zero."""
        hist = np.zeros(len(self.hist), np.int64)
        # float32 products, like `needed` above, so no index passes the last bin
        return hist, _bin(piece, np.float32(1.0 / self.width), hist, relu)

    def merge(self, hist: np.ndarray, zeros: int) -> None:
        self.hist += hist
        if not self.skip_zeros:
            self.hist[0] += zeros

    def edges(self) -> np.ndarray:
        return np.arange(len(self.hist) + 1) * (self.width or 0.0)


def entropy_amax(hist: np.ndarray, width: float, start_bin: int = START_BIN,
                 levels: int = QUANT_LEVELS) -> float:
    """EntropyCalibration2's threshold for a histogram of |x|: the last candidate i minimising
    KL(P || Q), amax = i * width (see _kl_divergences)."""
    hist = np.asarray(hist, dtype=np.float64)
    n = len(hist)
    if n == 0 or width == 0:
        return 0.0
    if n < start_bin:
        return n * width
    kl = _kl_divergences(hist, start_bin, levels)
    best = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return float((start_bin + best) * width)


@numba.njit(cache=True, nogil=True)
def _kl_divergences(hist: np.ndarray, start_bin: int, levels: int) -> np.ndarray:
    """KL(P || Q) for every candidate i in [start_bin, len(hist)].

    P is hist[:i] with the outliers hist[i:] folded into its last bin; Q is hist[:i] merged into
    `levels` chunks (i // levels bins each, the last chunk taking the remainder) and spread evenly
    over each chunk's non-zero bins. With prefix sums, sum P log P and sum P log Q need only the
    mass C_j and the non-zero count n_j of each chunk, so a candidate costs O(levels), not O(i):
      KL = (sum P log P - sum_j C_j log(C_j / n_j) - O log q_last) / T - log T + log S_i
    where T is the total, S_i = sum hist[:i] (Q's total) and O the outlier mass.
    """
    n = len(hist)
    cum = np.zeros(n + 1)
    cum_nz = np.zeros(n + 1)
    cum_hlogh = np.zeros(n + 1)
    for k in range(n):
        h = hist[k]
        cum[k + 1] = cum[k] + h
        cum_nz[k + 1] = cum_nz[k] + (1.0 if h > 0 else 0.0)
        cum_hlogh[k + 1] = cum_hlogh[k] + (h * np.log(h) if h > 0 else 0.0)
    total = cum[n]
    out = np.empty(n - start_bin + 1)
    for c in range(start_bin, n + 1):
        merged = c // levels
        sum_p_log_q = 0.0
        q_last = 0.0
        for j in range(levels):
            lo = j * merged
            hi = c if j == levels - 1 else lo + merged
            mass = cum[hi] - cum[lo]
            count = cum_nz[hi] - cum_nz[lo]
            if mass > 0 and count > 0:
                value = mass / count
                sum_p_log_q += mass * np.log(value)
                if j == levels - 1:
                    q_last = value
        last = hist[c - 1]
        outliers = total - cum[c]
        if outliers > 0 and last == 0:  # P has mass where Q has none
            out[c - start_bin] = np.inf
            continue
        p_last = last + outliers
        p_log_p = cum_hlogh[c - 1] + (p_last * np.log(p_last) if p_last > 0 else 0.0)
        if outliers > 0:
            sum_p_log_q += outliers * np.log(q_last)
        out[c - start_bin] = (p_log_p - sum_p_log_q) / total - np.log(total) + np.log(cum[c])
    return out


def percentile_amax(hist: np.ndarray, width: float, percentile: float) -> float:
    if hist.sum() == 0:
        return 0.0
    cdf = np.cumsum(hist) / hist.sum()
    index = int(np.searchsorted(cdf, percentile / 100.0))
    return float((index + 1) * width)


AUTO = "auto"  # every method's amax from one pass: histograms and maxima together (candidates())
METHODS = ("entropy", "minmax", "percentile")  # in the order auto prefers them on a tie: TensorRT's default first


@dataclass
class Calibrator:
    """Collects every tensor's range over batches and computes amax per tensor. `add` reduces a batch on
    every worker thread (numba and numpy release the GIL) and returns when it is done. Method `auto`
    keeps histograms and exact maxima, so that candidates() gives every method's amax. No defaults that
    conf/ holds: the method and backend.percentile come from the caller (the percentile only where a
    percentile is computed)."""

    method: str
    percentile: float | None = None
    skip_zeros: bool = True

    def __post_init__(self):
        if self.method not in (*CALIBRATOR_NAMES, AUTO):
            raise ValueError(f"calibration method {self.method!r} is not one of {sorted(CALIBRATOR_NAMES)} or {AUTO}")
        if self.method == "percentile" and self.percentile is None:
            raise ValueError("calibration method percentile needs the percentile (backend.percentile)")
        self.collectors: dict[str, MaxCollector | HistogramCollector] = {}
        self._pool = ThreadPoolExecutor(worker_count())
        if self.method != "minmax":
            # numba loads a compiled kernel on its first call (about 0.8 s here): on a worker, while the
            # caller builds its session and runs the first batch, not in the way of the first reduction
            self._pool.submit(_load_kernels)

    def add(self, tensors: Mapping[str, np.ndarray], relus: Mapping[str, str] | None = None) -> None:
        """Reduce one batch. `relus` maps a ReLU's output name to its input's: that tensor is
        collected from the input (onnxruntime need not hand it over)."""
        relus = relus or {}
        for name in [*tensors, *relus]:
            if name not in self.collectors:
                self.collectors[name] = (MaxCollector() if self.method == "minmax"
                                         else HistogramCollector(skip_zeros=self.skip_zeros))
        work = [(self.collectors[name], values, False) for name, values in tensors.items()]
        work += [(self.collectors[relu], tensors[source], True) for relu, source in relus.items()]
        self._reduce(work)

    def _reduce(self, work: list[tuple[MaxCollector | HistogramCollector, np.ndarray, bool]]) -> None:
        """Every tensor of one batch, in pieces over the pool: first the largest magnitudes (which set
        each histogram's grid), then the histograms."""
        pieces = [(index, piece) for index, (_, values, _) in enumerate(work) for piece in chunks(values)]
        tops = [0.0] * len(work)
        for (index, _), top in zip(pieces, self._pool.map(lambda item: largest_magnitude(item[1], work[item[0]][2]),
                                                          pieces)):
            tops[index] = max(tops[index], top)
        binning = set()
        for index, (collector, values, _) in enumerate(work):
            if not values.size:
                continue
            if isinstance(collector, MaxCollector):
                collector.observe(tops[index])
            elif collector.observe(tops[index], values.size):
                binning.add(index)
        to_bin = [(index, piece) for index, piece in pieces if index in binning]
        for (index, _), binned in zip(to_bin, self._pool.map(
                lambda item: work[item[0]][0].binned(item[1], work[item[0]][2]), to_bin)):
            work[index][0].merge(*binned)

    def _shutdown(self) -> None:
        self._pool.shutdown()

    def amax(self) -> dict[str, float]:
        try:
            return dict(zip(self.collectors, self._pool.map(self._amax, self.collectors.values())))
        finally:
            self._shutdown()

    def maxima(self) -> dict[str, float]:
        """Each tensor's largest magnitude seen: what decides whether it fits fp16."""
        return {name: c.compute() if isinstance(c, MaxCollector) else c.top for name, c in self.collectors.items()}

    def candidates(self) -> dict[str, dict[str, float]]:
        """{method: {tensor: amax}} for each of METHODS, from the one pass (method `auto`)."""
        if self.percentile is None:
            raise ValueError("the percentile candidate needs the percentile (backend.percentile)")
        try:
            histograms = list(self.collectors.values())
            return {method: dict(zip(self.collectors, self._pool.map(lambda c, m=method: self._amax_by(c, m),
                                                                     histograms)))
                    for method in METHODS}
        finally:
            self._shutdown()

    def histograms(self) -> dict[str, HistogramCollector]:
        """The collectors themselves (method `auto`), the threads let go."""
        self._shutdown()
        return dict(self.collectors)

    def _amax_by(self, collector: HistogramCollector, method: str) -> float:
        if method == "minmax":
            return collector.top
        if method == "entropy":
            return entropy_amax(collector.hist, collector.width or 0.0)
        return percentile_amax(collector.hist, collector.width or 0.0, self.percentile)

    def _amax(self, collector: MaxCollector | HistogramCollector) -> float:
        if isinstance(collector, MaxCollector):
            return collector.compute()
        return self._amax_by(collector, self.method)


# --------------------------------------------------------------------------- the model's tensors

def derivable_relus(model: onnx.ModelProto) -> dict[str, str]:
    """{ReLU output: its input} for ReLUs whose input is itself a calibration tensor."""
    names = set(calibration_tensor_names(model))
    outputs = {o.name for o in model.graph.output}
    return {node.output[0]: node.input[0] for node in model.graph.node
            if node.op_type == "Relu" and node.input[0] in names and node.output[0] not in outputs}


def with_all_outputs(model: onnx.ModelProto, skip: Iterable[str] = ()) -> onnx.ModelProto:
    """A copy of the model that also outputs every intermediate tensor (but those in `skip`)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output} | set(skip)
    for name in calibration_tensor_names(model):
        if name not in existing and name not in {i.name for i in probe.graph.input}:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    return probe


# Each batch runs first, every tensor into one set of buffers, and is then reduced on every core. Past this
# size it runs as its two halves, into the same buffers: onnxruntime's own working memory is then half a
# batch's (at TAO's ResNet-18 on 1248x384, about 2 GiB a batch of 8, 0.55 GiB less, whose first touch cost
# 0.6-0.9 s on a 2-core VM). Halves change nothing in the histograms: the batch is reduced whole either way.
# Reducing one batch while onnxruntime ran the next (a second set of buffers, or one half while the other
# ran) was no faster on 2, 4 or 16 cores, where the two fight for the same cores (bench/README.md).
HALVES_BYTES = 512 << 20


def collect_ranges(model_path: str | Path, batches: Iterable[np.ndarray], method: str,
                   percentile: float | None = None, progress=None, skip_zeros: bool = True,
                   maxima: dict[str, float] | None = None) -> dict[str, float]:
    """amax of every calibration tensor of the model over the batches (streamed); each tensor's largest
    magnitude goes into `maxima` where one is given. `percentile`: backend.percentile, for method
    percentile."""
    if method == AUTO:
        raise ValueError("calibration method auto has several answers: collect_candidates gives them")
    calibrator, names = _collect(model_path, batches, method, percentile, progress, skip_zeros, maxima)
    amax = calibrator.amax()
    return {name: amax[name] for name in names if name in amax}


def collect_candidates(model_path: str | Path, batches: Iterable[np.ndarray], percentile: float,
                       progress=None, skip_zeros: bool = True,
                       maxima: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """{method: {tensor: amax}} for every method of METHODS, from one pass over the batches."""
    calibrator, names = _collect(model_path, batches, AUTO, percentile, progress, skip_zeros, maxima)
    return {method: {name: amax[name] for name in names if name in amax}
            for method, amax in calibrator.candidates().items()}


def collect_histograms(model_path: str | Path, batches: Iterable[np.ndarray],
                       skip_zeros: bool = True) -> dict[str, HistogramCollector]:
    """Each calibration tensor's histogram of |x| (and exact maximum) over the batches."""
    calibrator, _ = _collect(model_path, batches, AUTO, None, None, skip_zeros, None)
    return calibrator.histograms()


def clipped_share(collector: HistogramCollector, amax: float) -> float:
    """The share of the collected values above amax (counting only whole bins above it: a lower bound)."""
    total = int(collector.hist.sum())
    if not total or not collector.width:
        return 0.0
    return float(collector.hist[int(amax / collector.width) + 1:].sum() / total)


def _collect(model_path, batches, method, percentile, progress, skip_zeros, maxima) -> tuple[Calibrator, list[str]]:
    """The calibrator after one pass over the batches, and the model's calibration tensors in order."""
    model = onnx.load(str(model_path))
    names = calibration_tensor_names(model)
    relus = derivable_relus(model)  # collected from their inputs in the same pass
    session = _all_tensors_session(model, relus)
    whole = _AllTensors(session, model, names[0])
    calibrator = Calibrator(method, percentile, skip_zeros)
    for batch in batches:
        values = whole.run(np.ascontiguousarray(batch, dtype=np.float32))
        # reduced before onnxruntime writes the next batch into the same buffers
        calibrator.add({name: values[name] for name in names if name not in relus}, relus)
        if progress is not None:
            progress.update(1)
    if maxima is not None:
        maxima.update(calibrator.maxima())
    return calibrator, names


def _all_tensors_session(model: onnx.ModelProto, skip: Iterable[str]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The tensors go straight into our buffers; onnxruntime's memory pattern would plan a second block
    # as large as all of them besides (measured: 2.6x one batch's activations at peak instead of 1.4x).
    options.enable_mem_pattern = False
    options.intra_op_num_threads = worker_count()
    # asleep between runs, not spinning: the statistics' threads reduce each batch as soon as onnxruntime
    # has run it, and threads left spinning would take their cores (spinning did not make onnxruntime's own
    # runs faster: bench/README.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(with_all_outputs(model, skip).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _tensor_shapes(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> dict[str, list[int]]:
    """Every tensor's shape for a concrete input shape, by ONNX shape inference."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for dim, size in zip(fixed.graph.input[0].type.tensor_type.shape.dim, input_shape):
        dim.Clear()
        dim.dim_value = size
    del fixed.graph.value_info[:]
    for output in fixed.graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True).graph
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*inferred.value_info, *inferred.output]}


class _AllTensors:
    """Runs the model and returns every tensor, written by onnxruntime straight into buffers that
    are reused from batch to batch (three times faster than letting it allocate and copy them)."""

    def __init__(self, session, model: onnx.ModelProto, input_name: str):
        self.session, self.model, self.input_name = session, model, input_name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.binding, self.buffers, self.batch_shape = self.session.io_binding(), {}, None
        self._halves: list[_AllTensors] | None = None
        self.dynamic_batch = not isinstance(session.get_inputs()[0].shape[0], int)  # else: no halves

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers one batch fills."""
        return sum(buffer.nbytes for buffer in self.buffers.values())

    def _bind(self, buffers: dict[str, np.ndarray], batch_shape: tuple[int, ...]) -> None:
        self.buffers, self.batch_shape = buffers, batch_shape
        for name, buffer in buffers.items():
            self.binding.bind_output(name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)

    def _output_shapes(self, batch_shape: tuple[int, ...]) -> dict[str, list[int]]:
        """Every output's shape for this batch: onnxruntime's, where only the batch size is open (it knows
        them already: ONNX shape inference of the model again costs 0.15 s at TAO's ResNet-18)."""
        batch_dim = self.session.get_inputs()[0].shape[0]
        shapes = {}
        for output in self.session.get_outputs():
            first, *rest = output.shape
            if not all(isinstance(size, int) for size in rest) or first not in (batch_dim, batch_shape[0]):
                return _tensor_shapes(self.model, batch_shape)
            shapes[output.name] = [batch_shape[0], *rest]
        return shapes

    def halves(self) -> list["_AllTensors"]:
        """Two runners for the first and the second half of this one's batch rows, writing into the
        same buffers (rows are contiguous): no memory of their own."""
        if self._halves is None:
            middle = self.batch_shape[0] // 2
            self._halves = []
            for start, stop in ((0, middle), (middle, self.batch_shape[0])):
                half = _AllTensors(self.session, self.model, self.input_name)
                half._bind({name: buffer[start:stop] for name, buffer in self.buffers.items()},
                           (stop - start, *self.batch_shape[1:]))
                self._halves.append(half)
        return self._halves

    def bind_for(self, batch_shape: tuple[int, ...]) -> None:
        """Buffers for batches of this shape (new ones only for a new shape)."""
        if batch_shape != self.batch_shape:  # first batch, or a batch of another size
            shapes = self._output_shapes(batch_shape)
            self._halves = None  # they view the buffers being replaced
            self._bind(_prefaulted_buffers({name: shapes[name] for name in self.outputs}), batch_shape)

    def values(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor of the batch last run in these buffers, the input included."""
        return {**self.buffers, self.input_name: batch}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor of the batch: run whole, or past HALVES_BYTES as its two halves into these buffers."""
        self.bind_for(batch.shape)
        if self.nbytes <= HALVES_BYTES or len(batch) < 2 or not self.dynamic_batch:
            return self(batch)
        middle = len(batch) // 2
        for half, rows in zip(self.halves(), (batch[:middle], batch[middle:])):
            half(rows)
        return self.values(batch)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.bind_for(batch.shape)
        self.binding.bind_cpu_input(self.input_name, batch)
        self.session.run_with_iobinding(self.binding)
        return self.values(batch)


def _prefaulted_buffers(shapes: Mapping[str, list[int]]) -> dict[str, np.ndarray]:
    """float32 arrays of these shapes in one anonymous mapping of small pages, written once on every
    allowed core before onnxruntime fills them.
    Why not np.empty: numpy asks for huge pages, and the kernel may then compact memory to find them on
    first touch, in one thread: 0.13-2.6 s for TAO's ResNet-18 at 1248x384 (1.1 GiB) on the same machine
    from run to run. Small pages cost a steady 0.25 s here, and no measurable time later."""
    import mmap

    sizes = {name: -(-4 * int(np.prod(shape)) // 64) * 64 for name, shape in shapes.items()}  # 64-byte aligned
    memory = mmap.mmap(-1, max(sum(sizes.values()), 1))
    if hasattr(memory, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    buffers, offset = {}, 0
    for name, shape in shapes.items():
        buffers[name] = np.frombuffer(memory, np.float32, int(np.prod(shape)), offset).reshape(shape)
        offset += sizes[name]
    flat = np.frombuffer(memory, np.uint8)
    with ThreadPoolExecutor(worker_count()) as pool:
        list(pool.map(lambda start: flat[start:start + (64 << 20)].fill(0), range(0, flat.size, 64 << 20)))
    return buffers
