"""Every tensor of a model on real batches, from onnxruntime: the model with every calibration tensor as an
output (a ReLU's left out where its input is one: it is collected from that input), run with each output
written by onnxruntime straight into buffers reused from batch to batch (faster than letting it allocate and
copy them: bench/README.md, "Measurements behind the code"). How it uses the machine is the caller's
Schedule, not module state.

A tensor's buffer holds its values, not always in NCHW order: where onnxruntime keeps a convolution's output
in channel blocks, the buffer has them as it keeps them (unreordered()). For statistics that do not depend
on order (histograms, maxima), which is all that reads them."""
from __future__ import annotations

import mmap
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx

from ..formats.calibration_cache import calibration_tensor_names
from .deployable import copy_of
from .histograms import CHUNK_ELEMENTS

# Each batch runs first, every tensor into one set of buffers, and is then reduced on every core. Past this
# size it runs as its two halves, into the same buffers: onnxruntime's own working memory is then half a
# batch's (bench/README.md, "Measurements behind the code").
# Halves change nothing in the histograms: the batch is reduced whole either way. Reducing one batch while
# onnxruntime ran the next was no faster on 2, 4 or 16 cores, where the two fight for the same cores.
HALVES_BYTES = 512 << 20

# MLAS's widest channel block (AVX-512; AVX2's is 8): a tensor whose channels are a multiple of it is blocked
# without padding, so its blocked values are its values
WIDEST_BLOCK = 16


@dataclass(frozen=True)
class Schedule:
    """How a calibration pass uses the machine: `workers` threads for onnxruntime and for the reduction (one
    after the other, never together); a batch past `halves_bytes` of tensors runs as its two halves; a tensor
    is reduced in pieces of `chunk_elements`. None changes a range: only time and memory."""
    workers: int
    halves_bytes: int = HALVES_BYTES
    chunk_elements: int = CHUNK_ELEMENTS


def derivable_relus(model: onnx.ModelProto) -> dict[str, str]:
    """{ReLU output: its input} for ReLUs whose input is itself a calibration tensor."""
    names = set(calibration_tensor_names(model))
    outputs = {o.name for o in model.graph.output}
    return {node.output[0]: node.input[0] for node in model.graph.node
            if node.op_type == "Relu" and node.input[0] in names and node.output[0] not in outputs}


def with_all_outputs(model: onnx.ModelProto, skip: Iterable[str] = ()) -> onnx.ModelProto:
    """A copy of the model that also outputs every intermediate tensor (but those in `skip`)."""
    probe = copy_of(model)
    existing = {o.name for o in probe.graph.output} | set(skip)
    for name in calibration_tensor_names(model):
        if name not in existing and name not in {i.name for i in probe.graph.input}:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    return probe


def _session_options(workers: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The tensors go straight into our buffers; onnxruntime's memory pattern would plan a second block
    # as large as all of them besides (bench/README.md, "Measurements behind the code").
    options.enable_mem_pattern = False
    options.intra_op_num_threads = workers
    # asleep between runs, not spinning: the statistics' threads reduce each batch as soon as onnxruntime
    # has run it, and threads left spinning would take their cores (spinning did not make onnxruntime's own
    # runs faster: bench/README.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def all_tensors_session(model: onnx.ModelProto, skip: Iterable[str], workers: int):
    """An onnxruntime session of the model that outputs every calibration tensor but those in `skip`: where
    onnxruntime keeps a convolution's output in channel blocks, the output as it keeps it (unreordered())."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as failures

    probe = with_all_outputs(model, skip).SerializeToString()
    try:
        folder = tempfile.TemporaryDirectory(prefix="calibration-session-")
    except OSError:  # no temporary folder to be had: the reorders stay
        return ort.InferenceSession(probe, _session_options(workers), providers=["CPUExecutionProvider"])
    with folder:
        optimised = Path(folder.name) / "optimised.onnx"
        options = _session_options(workers)
        options.log_severity_level = 3  # not its warning that the graph suits this machine alone: it does
        options.optimized_model_filepath = str(optimised)
        # the weights in a file of their own, which the second session maps: the graph alone goes through
        # Python (42 MiB of TAO's ResNet-18 serialised and parsed twice cost 0.2 s)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
        session = ort.InferenceSession(probe, options, providers=["CPUExecutionProvider"])
        rewritten, taken = unreordered(onnx.load(str(optimised), load_external_data=False))
        if not taken:
            return session
        onnx.save(rewritten, str(optimised))
        options = _session_options(workers)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimised already
        try:
            return ort.InferenceSession(str(optimised), options, providers=["CPUExecutionProvider"])
        except (failures.Fail, failures.InvalidGraph, failures.InvalidArgument, failures.NotImplemented):
            return session  # an onnxruntime that does not take its own graph back: the reorders stay


def unreordered(optimized: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """onnxruntime's optimised graph (x86: convolutions in NCHWc, channels in blocks of 8 or 16) with the
    reorders to NCHW that it adds before each graph output taken out where a block holds no padding: those
    outputs hold the tensor's values in another order. A histogram and a maximum do not depend on the order,
    and the reorders cost a pass over every tensor (bench/README.md, "Measurements behind the code").
    Returns the graph and how many reorders it lost."""
    consumed = {name for node in optimized.graph.node for name in node.input}
    outputs = {output.name for output in optimized.graph.output} - consumed  # reordered for the caller alone
    renamed, kept = {}, []
    for node in optimized.graph.node:
        attributes = {attribute.name: attribute.i for attribute in node.attribute}
        if (node.op_type == "ReorderOutput" and node.domain.startswith("com.microsoft") and node.output[0] in outputs
                and not attributes.get("channels_last", 0) and attributes.get("channels", 1) % WIDEST_BLOCK == 0):
            renamed[node.input[0]] = node.output[0]
        else:
            kept.append(node)
    if not renamed:
        return optimized, 0
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(optimized)  # the graph alone, where its weights are in a file of their own
    del rewritten.graph.node[:]
    for original in kept:
        node = rewritten.graph.node.add()
        node.CopyFrom(original)
        for names in (node.input, node.output):
            for index, name in enumerate(names):
                names[index] = renamed.get(name, name)
    return rewritten, len(renamed)


def _tensor_shapes(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> dict[str, list[int]]:
    """Every tensor's shape for a concrete input shape, by ONNX shape inference."""
    fixed = copy_of(model)
    for dim, size in zip(fixed.graph.input[0].type.tensor_type.shape.dim, input_shape):
        dim.Clear()
        dim.dim_value = size
    del fixed.graph.value_info[:]
    for output in fixed.graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True).graph
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*inferred.value_info, *inferred.output]}


class AllTensors:
    """Runs the model (an all_tensors_session) and returns every tensor's values (in onnxruntime's order: see
    the module), written by onnxruntime into buffers reused from batch to batch: valid until the next run. A
    batch past `halves_bytes` of tensors runs as its two halves into the same buffers (never for a model with
    a fixed batch size)."""

    def __init__(self, session, model: onnx.ModelProto, input_name: str, halves_bytes: int):
        self.session, self.model, self.input_name = session, model, input_name
        self.halves_bytes = halves_bytes
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.binding, self.buffers, self.batch_shape = self.session.io_binding(), {}, None
        self._halves: list[AllTensors] | None = None
        self.dynamic_batch = not isinstance(session.get_inputs()[0].shape[0], int)  # else: no halves
        self.runs_in_halves = 0  # batches run as two halves

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
        them already; ONNX shape inference of the whole model again is the fallback)."""
        batch_dim = self.session.get_inputs()[0].shape[0]
        shapes = {}
        for output in self.session.get_outputs():
            first, *rest = output.shape
            if not all(isinstance(size, int) for size in rest) or first not in (batch_dim, batch_shape[0]):
                return _tensor_shapes(self.model, batch_shape)
            shapes[output.name] = [batch_shape[0], *rest]
        return shapes

    def _halves_of(self) -> list["AllTensors"]:
        """Two runners for the first and the second half of this one's batch rows, writing into the
        same buffers (rows are contiguous): no memory of their own."""
        if self._halves is None:
            middle = self.batch_shape[0] // 2
            self._halves = []
            for start, stop in ((0, middle), (middle, self.batch_shape[0])):
                half = AllTensors(self.session, self.model, self.input_name, self.halves_bytes)
                half._bind({name: buffer[start:stop] for name, buffer in self.buffers.items()},
                           (stop - start, *self.batch_shape[1:]))
                self._halves.append(half)
        return self._halves

    def bind_for(self, batch_shape: tuple[int, ...]) -> None:
        """Buffers for batches of this shape (new ones only for a new shape)."""
        if batch_shape != self.batch_shape:  # first batch, or a batch of another size
            shapes = self._output_shapes(batch_shape)
            self._halves = None  # they view the buffers being replaced
            self._bind(small_page_buffers({name: shapes[name] for name in self.outputs}), batch_shape)

    def values(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor of the batch last run in these buffers, the input included."""
        return {**self.buffers, self.input_name: batch}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor of the batch: run whole, or past halves_bytes as its two halves into these buffers."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.bind_for(batch.shape)
        if self.nbytes <= self.halves_bytes or len(batch) < 2 or not self.dynamic_batch:
            return self._run_whole(batch)
        middle = len(batch) // 2
        for half, rows in zip(self._halves_of(), (batch[:middle], batch[middle:])):
            half._run_whole(rows)
        self.runs_in_halves += 1
        return self.values(batch)

    def _run_whole(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The batch (float32, contiguous, of this runner's bound shape) run into the buffers."""
        self.binding.bind_cpu_input(self.input_name, batch)
        self.session.run_with_iobinding(self.binding)
        return self.values(batch)


def small_page_buffers(shapes: Mapping[str, list[int]]) -> dict[str, np.ndarray]:
    """float32 arrays of these shapes in one anonymous mapping of small pages, which onnxruntime's first
    writes bring in, on its own threads.
    Why not np.empty: numpy asks for huge pages, and the kernel may then compact memory to find them on
    first touch, in one thread, which varies widely from run to run. Why not written ahead: that is a pass
    over every buffer on top of the same page faults (bench/README.md, "Measurements behind the code")."""
    sizes = {name: -(-4 * int(np.prod(shape)) // 64) * 64 for name, shape in shapes.items()}  # 64-byte aligned
    memory = mmap.mmap(-1, max(sum(sizes.values()), 1))
    if hasattr(memory, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    buffers, offset = {}, 0
    for name, shape in shapes.items():
        buffers[name] = np.frombuffer(memory, np.float32, int(np.prod(shape)), offset).reshape(shape)
        offset += sizes[name]
    return buffers
