"""The deployable ONNX: what TensorRT 10/11 build from. Explicit INT8 by TensorRT's Q/DQ rules, strongly typed
fp16, the lint that checks both, and the onnxruntime engine that is the deployable ONNX optimized for the CPU."""
from __future__ import annotations

import shutil
import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from helpers.models import engine_request, tiny_export, tiny_images
from stages.detectnet_v2.inference import OnnxRunner
from stages.formats.calibration_cache import read_cache, write_cache
from stages.quantization.export_folder import write_for_export
from stages.quantization.fp16 import FP16_DATA_MAX, strongly_typed_fp16
from stages.quantization.graph_index import residual_inputs
from stages.quantization.int8_rewrite import explicit_int8
from stages.quantization.lint import lint, quantized_convolutions
from stages.open_backend.engines import build_engine
from stages.quantization.calibrate import collect_ranges
from tensor_compare import cosine


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("deployable"))


images = tiny_images


@pytest.fixture(scope="module")
def statistics(exported):
    maxima = {}
    amax = collect_ranges(exported / "model.onnx", (images(seed) for seed in range(3)), "minmax", maxima=maxima, percentile=None, skip_zeros=True)
    return amax, maxima


def scales_of(amax):
    return {name: value / 127.0 for name, value in amax.items()}


def model(exported):
    return onnx.load(exported / "model.onnx")


def nodes(m, op_type):
    return [n for n in m.graph.node if n.op_type == op_type]


def producers(m):
    return {o: n for n in m.graph.node for o in n.output}


# --------------------------------------------------------------------------- int8: TensorRT's rules

@pytest.mark.parametrize("high_precision", ["fp16", "fp32"])
def test_the_int8_model_passes_the_lint(exported, statistics, high_precision):
    amax, maxima = statistics
    deployable = explicit_int8(model(exported), scales_of(amax), high_precision, maxima)
    assert lint(deployable.model, "int8") == []
    assert len(deployable.quantized) == len(nodes(model(exported), "Conv"))


def test_activation_scales_are_the_caches_bit_for_bit(exported, statistics, tmp_path):
    write_cache(tmp_path / "cache.bin", statistics[0], "minmax", 8601)
    _, scales = read_cache(tmp_path / "cache.bin")
    deployable = explicit_int8(model(exported), scales, "fp32")
    initializers = {i.name: i for i in deployable.model.graph.initializer}
    quantizers = nodes(deployable.model, "QuantizeLinear")
    assert quantizers
    for q in quantizers:
        scale = float(numpy_helper.to_array(initializers[q.input[1]]))
        assert struct.pack(">f", scale) == struct.pack(">f", scales[q.input[0]]), q.input[0]


def test_zero_points_are_int8_zeros_written_out(exported, statistics):
    deployable = explicit_int8(model(exported), scales_of(statistics[0]), "fp16", statistics[1])
    initializers = {i.name: i for i in deployable.model.graph.initializer}
    for node in [*nodes(deployable.model, "QuantizeLinear"), *nodes(deployable.model, "DequantizeLinear")]:
        zero = initializers[node.input[2]]
        assert zero.data_type == TensorProto.INT8 and not numpy_helper.to_array(zero).any(), node.name


def test_weights_are_int8_per_output_channel_and_biases_stay_float(exported, statistics):
    source = {i.name: numpy_helper.to_array(i) for i in model(exported).graph.initializer}
    deployable = explicit_int8(model(exported), scales_of(statistics[0]), "fp32")
    m = deployable.model
    initializers = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    made_by = producers(m)
    for conv in nodes(m, "Conv"):
        weight_dq = made_by[conv.input[1]]
        assert weight_dq.op_type == "DequantizeLinear"
        assert [a.i for a in weight_dq.attribute if a.name == "axis"] == [0]
        values, scale = initializers[weight_dq.input[0]], initializers[weight_dq.input[1]]
        original = source[weight_dq.input[0].removesuffix("_int8")]
        assert values.dtype == np.int8 and np.abs(values).max() <= 127
        assert scale.shape == (original.shape[0],)
        np.testing.assert_allclose(scale, np.abs(original).reshape(len(scale), -1).max(axis=1) / 127, rtol=1e-6)
        error = np.abs(values * scale.reshape(-1, 1, 1, 1) - original)
        assert (error <= scale.reshape(-1, 1, 1, 1) / 2 * (1 + 1e-5)).all()  # rounding to the nearest step
        assert conv.input[2] in initializers and initializers[conv.input[2]].dtype == np.float32  # bias: float


def test_no_qdq_on_the_networks_outputs(exported, statistics):
    m = explicit_int8(model(exported), scales_of(statistics[0]), "fp16", statistics[1]).model
    made_by = producers(m)
    for output in m.graph.output:
        source = made_by[output.name]
        if source.op_type == "Cast":  # fp16 inside, fp32 out
            source = made_by[source.input[0]]
        assert source.op_type not in ("QuantizeLinear", "DequantizeLinear"), output.name


def test_a_residual_add_reads_its_residual_input_through_qdq_and_its_convolution_directly(exported, statistics):
    original = model(exported)
    residual = residual_inputs(original)
    # the sample's six blocks: the identity shortcut (a block's input) or the projection shortcut's convolution
    assert len(residual) == 6 and set(residual.values()) >= {"block_1a_relu/Relu", "block_1a_conv_shortcut/BiasAdd"}
    m = explicit_int8(original, scales_of(statistics[0]), "fp32").model
    made_by = producers(m)
    for add in (n for n in m.graph.node if n.name in residual):
        kinds = {made_by[i].op_type for i in add.input}
        assert kinds == {"DequantizeLinear", "Conv"}, (add.name, kinds)
        dequantized = next(i for i in add.input if made_by[i].op_type == "DequantizeLinear")
        assert made_by[made_by[dequantized].input[0]].input[0] == residual[add.name]


def test_a_convolution_whose_input_has_no_scale_stays_out_of_int8_and_is_named(exported, statistics):
    amax = statistics[0]
    deployable = explicit_int8(model(exported), {"input_1": amax["input_1"] / 127}, "fp32")
    assert deployable.quantized == ["conv1"]
    assert "block_1a_conv_1" in deployable.without_scale
    assert quantized_convolutions(deployable.model) == ["conv1"]
    assert lint(deployable.model, "int8") == []


@pytest.mark.parametrize("opset, high_precision, expected", [(11, "fp16", 19), (12, "fp16", 19), (12, "fp32", 13)])
def test_taos_opsets_are_raised_for_per_channel_and_fp16_qdq(exported, statistics, tmp_path, opset, high_precision,
                                                            expected):
    older = model(exported)
    older.opset_import[0].version = opset
    deployable = explicit_int8(older, scales_of(statistics[0]), high_precision, statistics[1])
    assert deployable.opset == expected and deployable.per_channel
    assert lint(deployable.model, "int8") == []


def test_a_graph_that_cannot_be_upgraded_gets_per_tensor_weights_and_says_so(exported, statistics, monkeypatch):
    # onnx's version converter lacks adapters for some ops; no small DetectNet_v2 graph lacks one, so the
    # converter is made to fail as it does there (onnx raises from its C++ adapter lookup)
    from onnx import version_converter

    from stages.quantization.export_folder import described

    def no_adapter(model, target):
        raise RuntimeError("adapter_lookup: Assertion `false` failed: No Adapter For Current Version $11 for Foo")
    monkeypatch.setattr(version_converter, "convert_version", no_adapter)
    older = model(exported)
    older.opset_import[0].version = 11
    deployable = explicit_int8(older, scales_of(statistics[0]), "fp16", statistics[1])
    assert not deployable.per_channel and deployable.opset == 11
    assert lint(deployable.model, "int8") == []
    said = "\n".join(described(deployable, "int8", True))
    assert "could not be raised to 19" in said and "No Adapter" in said and "quantized per tensor" in said
    reference = OnnxRunner(_saved(older, monkeypatch))(images(5))
    for got, want in zip(_run(deployable.model, images(5), monkeypatch), reference):
        assert cosine(got, want) >= 0.99  # per-tensor weights: coarser, the same detector


def _saved(m, monkeypatch, name="m.onnx"):
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    onnx.save(m, folder / name)
    return folder / name


def _run(m, batch, monkeypatch=None):
    return OnnxRunner(_saved(m, monkeypatch))(batch)


# --------------------------------------------------------------------------- the lint can fail

def test_the_lint_refuses_onnxruntimes_qdq_quantizer_output(exported, statistics, tmp_path):
    """onnxruntime's quantizer (its defaults) writes int32 bias DequantizeLinear nodes and Q/DQ on both inputs
    of a residual Add: what TensorRT is not to be given."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input_1": images(seed)} for seed in range(2)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(exported / "model.onnx"), str(tmp_path / "ort.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True)
    problems = "\n".join(lint(onnx.load(tmp_path / "ort.onnx"), "int8"))
    assert "bias comes through a DequantizeLinear" in problems and "zero point of type INT32, not INT8" in problems
    assert "block_1b_add: Q/DQ between the convolution it fuses with and the Add" in problems


def test_the_lint_refuses_qdq_between_a_convolution_and_its_residual_add(exported, statistics):
    """As a quantizer that puts Q/DQ on every Add input would: on the side TensorRT fuses with the convolution."""
    scales = scales_of(statistics[0])
    m = explicit_int8(model(exported), scales, "fp32").model
    add = next(n for n in m.graph.node if n.name == "block_1b_add")
    fused = next(i for i in add.input if producers(m)[i].op_type == "Conv")
    m.graph.initializer.extend([numpy_helper.from_array(np.float32(scales[fused]), "s"),
                                numpy_helper.from_array(np.int8(0), "z")])
    position = list(m.graph.node).index(add)
    m.graph.node.insert(position, onnx.helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="bad_dq"))
    m.graph.node.insert(position, onnx.helper.make_node("QuantizeLinear", [fused, "s", "z"], ["q"], name="bad_q"))
    add.input[list(add.input).index(fused)] = "dq"
    assert any(p.startswith("block_1b_add: Q/DQ between the convolution it fuses with and the Add") for p in lint(m, "int8"))


def test_the_lint_refuses_qdq_on_an_output_and_a_missing_zero_point(exported, statistics):
    m = explicit_int8(model(exported), scales_of(statistics[0]), "fp32").model
    first_q = nodes(m, "QuantizeLinear")[0]
    del first_q.input[2]
    output = m.graph.output[1].name
    made_by = producers(m)
    made_by[output].output[0] = "raw"
    m.graph.initializer.extend([numpy_helper.from_array(np.float32(0.1), "o_s"),
                                numpy_helper.from_array(np.int8(0), "o_z")])
    m.graph.node.extend([onnx.helper.make_node("QuantizeLinear", ["raw", "o_s", "o_z"], ["o_q"], name="out_q"),
                         onnx.helper.make_node("DequantizeLinear", ["o_q", "o_s", "o_z"], [output], name="out_dq")])
    problems = "\n".join(lint(m, "int8"))
    assert f"{first_q.name}: no zero point" in problems
    assert f"out_dq: Q/DQ on the network's output {output}" in problems


# --------------------------------------------------------------------------- fp16

def test_the_fp16_model_is_fp16_inside_with_fp32_inputs_and_outputs(exported, statistics):
    deployable = strongly_typed_fp16(model(exported), statistics[1])
    assert lint(deployable.model, "fp16") == []
    assert deployable.kept_fp32 == {}
    inferred = onnx.shape_inference.infer_shapes(deployable.model).graph
    convs = [v for v in inferred.value_info if v.name.endswith("/BiasAdd")]
    assert convs and all(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in convs)


def test_a_node_whose_values_pass_fp16s_headroom_stays_fp32_and_is_named(exported):
    # images 2000x brighter: the first convolution's input and output reach past FP16_DATA_MAX
    maxima = {}
    collect_ranges(exported / "model.onnx", (images(seed, gain=2000.0) for seed in range(2)), "minmax", maxima=maxima, percentile=None, skip_zeros=True)
    assert maxima["input_1"] > FP16_DATA_MAX
    deployable = strongly_typed_fp16(model(exported), maxima)
    assert "conv1" in deployable.kept_fp32 and deployable.kept_fp32["conv1"] > FP16_DATA_MAX
    conv1 = next(n for n in deployable.model.graph.node if n.name == "conv1")
    initializers = {i.name: i for i in deployable.model.graph.initializer}
    assert initializers[conv1.input[1]].data_type == TensorProto.FLOAT
    assert lint(deployable.model, "fp16") == []
    from stages.quantization.export_folder import described
    said = "\n".join(described(deployable, "fp16", True))
    assert f"nodes stay fp32, their values reach past {FP16_DATA_MAX:g} on the calibration images: conv1 (" in said


# --------------------------------------------------------------------------- the onnxruntime engine is the deployable

def test_export_folder_gets_the_deployable_of_its_precision(exported, statistics, tmp_path):
    for data_type, name in (("int8", "model.int8.onnx"), ("fp16", "model.fp16.onnx")):
        folder = tmp_path / data_type
        folder.mkdir()
        shutil.copyfile(exported / "model.onnx", folder / "model.onnx")
        write_cache(folder / "calibration.bin", statistics[0], "minmax", 8601)
        assert write_for_export(folder, data_type, "fp16", statistics[1]) is not None
        assert lint(onnx.load(folder / name), data_type) == []
    assert write_for_export(tmp_path / "int8", "fp32", "fp16") is None  # model.onnx is fp32's deployable


@pytest.mark.parametrize("high_precision", ["fp32", "fp16"])
def test_the_onnxruntime_engine_computes_what_the_deployable_onnx_computes(exported, statistics, tmp_path,
                                                                           high_precision):
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copyfile(exported / "model.onnx", folder / "model.onnx")
    write_cache(folder / "calibration.bin", statistics[0], "minmax", 8601)
    write_for_export(folder, "int8", high_precision, statistics[1])
    build_engine(engine_request(folder, "int8", tmp_path / "engine.onnx"))
    batch = images(11)
    engine = OnnxRunner(tmp_path / "engine.onnx")(batch)
    deployable = _run_unoptimized(folder / "model.int8.onnx", batch)
    for got, want in zip(engine, deployable):
        largest = float(np.abs(want).max())
        if high_precision == "fp32":
            # the same float graph; onnxruntime's rewrites (Q/DQ to uint8, fusions) change only rounding
            assert float(np.abs(got - want).max()) <= 1e-5 * largest
        else:
            # fp16 tensors: onnxruntime's CPU kernels compute fp16 nodes in fp32 between casts, and its
            # fusions move where the rounding to fp16 happens. Each rounding costs at most 2^-11 of a value;
            # 32 of them bounds what the ~30 layers can add up to.
            assert float(np.abs(got - want).max()) <= 32 * 2.0 ** -11 * largest


def _run_unoptimized(path, batch):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["output_cov/Sigmoid", "output_bbox/BiasAdd"], {"input_1": batch})
