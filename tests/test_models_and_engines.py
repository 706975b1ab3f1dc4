"""The sample model, TAO-style export, and engines built from the exported model."""
from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from stages import bundled_sample
from stages.detectnet_v2.inference import OnnxRunner
from stages.formats.calibration_cache import CalibrationCacheError, write_cache
from stages.formats.onnx_model import ModelError, export_model
from stages.open_backend.engines import EngineRequest, build_engine, cosine, tensorrt_available
from stages.open_backend.int8_calibration import collect_ranges


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("engines")
    bundled_sample.build_model(folder / "sample.onnx", 96, 48, base_width=8, seed=1)
    export_model(folder / "sample.onnx", folder / "model.onnx", expected_chw=(3, 48, 96))
    return folder


def images(seed=0, n=4):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 1, 96, dtype=np.float32)[None, None, None, :]
    return np.clip(base + rng.normal(0, 0.1, (n, 3, 48, 96)).astype(np.float32), 0, 1)


def test_sample_model_has_detectnet_v2_outputs_with_sensible_statistics(exported):
    session = ort.InferenceSession(str(exported / "sample.onnx"))
    cov, bbox = session.run(["output_cov/Sigmoid", "output_bbox/BiasAdd"], {"input_1": images(n=1)})
    assert cov.shape == (1, 3, 3, 6) and bbox.shape == (1, 12, 3, 6)
    assert 0.05 < cov.mean() < 0.95 and cov.std() > 1e-3
    assert np.isfinite(bbox).all() and bbox.std() > 1e-3


def test_sample_model_is_deterministic(tmp_path):
    bundled_sample.build_model(tmp_path / "a.onnx", 32, 32, base_width=4, seed=9)
    bundled_sample.build_model(tmp_path / "b.onnx", 32, 32, base_width=4, seed=9)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_export_gives_a_dynamic_batch(exported):
    session = ort.InferenceSession(str(exported / "model.onnx"))
    cov, _ = session.run(None, {"input_1": images(n=3)})
    assert cov.shape[0] == 3


def test_export_renames_other_tensor_names_to_taos(tmp_path, exported):
    model = onnx.load(exported / "sample.onnx")
    renames = {"input_1": "images", "output_cov/Sigmoid": "coverage", "output_bbox/BiasAdd": "boxes"}
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*model.graph.input, *model.graph.output]:
        value.name = renames.get(value.name, value.name)
    onnx.save(model, tmp_path / "other.onnx")
    result = export_model(tmp_path / "other.onnx", tmp_path / "out.onnx", "images",
                          {"output_cov/Sigmoid": "coverage", "output_bbox/BiasAdd": "boxes"})
    assert [i.name for i in result.graph.input] == ["input_1"]
    assert {o.name for o in result.graph.output} == {"output_cov/Sigmoid", "output_bbox/BiasAdd"}


def test_missing_model_is_named(tmp_path):
    with pytest.raises(ModelError, match=f"{tmp_path / 'nope.onnx'} does not exist"):
        export_model(tmp_path / "nope.onnx", tmp_path / "out.onnx")


def test_non_onnx_model_is_named(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"this is a tlt file, not onnx")
    with pytest.raises(ModelError, match="is not an ONNX model"):
        export_model(tmp_path / "model.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_model_input_that_contradicts_the_spec_is_named(exported, tmp_path):
    with pytest.raises(ModelError, match=r"takes input \(C,H,W\)=\(3, 48, 96\), but train.txt preprocesses "
                                         r"images to \(3, 384, 1248\)"):
        export_model(exported / "sample.onnx", tmp_path / "out.onnx", expected_chw=(3, 384, 1248),
                     spec_name="train.txt")


def run_engine(path, batch):
    return OnnxRunner(path)(batch)


@pytest.mark.parametrize("data_type", ["fp32", "fp16"])
def test_float_engines_match_the_model(exported, tmp_path, data_type):
    engine = tmp_path / f"{data_type}.onnx"
    assert build_engine(EngineRequest(exported / "model.onnx", data_type, engine)) == "onnxruntime"
    for got, want in zip(run_engine(engine, images()), run_engine(exported / "model.onnx", images())):
        assert cosine(got, want) > 0.9999


def test_int8_engine_uses_the_cache(exported, tmp_path):
    amax = collect_ranges(exported / "model.onnx", (images(seed) for seed in range(3)), "entropy")
    write_cache(tmp_path / "good.bin", amax)
    write_cache(tmp_path / "coarse.bin", {k: v * 40 for k, v in amax.items()})
    good, coarse = tmp_path / "good.onnx", tmp_path / "coarse.onnx"
    build_engine(EngineRequest(exported / "model.onnx", "int8", good, tmp_path / "good.bin"))
    build_engine(EngineRequest(exported / "model.onnx", "int8", coarse, tmp_path / "coarse.bin"))
    reference = run_engine(exported / "model.onnx", images(9))
    good_out, coarse_out = run_engine(good, images(9)), run_engine(coarse, images(9))
    assert all(cosine(g, r) >= 0.99 for g, r in zip(good_out, reference))
    # scales 40x too coarse must hurt: the engine really quantizes with the cache's numbers
    assert max(np.abs(c - r).max() for c, r in zip(coarse_out, reference)) > \
        3 * max(np.abs(g - r).max() for g, r in zip(good_out, reference))


def at_opset(source, dest, opset: int):
    """The model as TAO 4 (opset 11) or TAO 5 (opset 12) export it: its ops (Conv, Relu, Add, Mul, pools,
    Concat, Sigmoid) mean the same at those opsets."""
    model = onnx.load(source)
    model.opset_import[0].version = opset
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, dest)
    return dest


def per_channel_dequantizers(engine) -> int:
    return sum(1 for n in onnx.load(engine).graph.node
               if n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute))


@pytest.mark.parametrize("opset", [11, 12])
def test_an_int8_engine_of_a_tao_opset_is_valid_and_the_same_as_at_opset_13(exported, tmp_path, opset, caplog):
    """Per-channel weight scales need QDQ nodes of opset 13; an older export is upgraded first (before,
    onnxruntime refused the engine: "Unrecognized attribute: axis for operator DequantizeLinear")."""
    amax = collect_ranges(exported / "model.onnx", (images(seed) for seed in range(2)), "entropy")
    write_cache(tmp_path / "cache.bin", amax)
    older = at_opset(exported / "model.onnx", tmp_path / f"opset{opset}.onnx", opset)
    caplog.set_level("INFO")
    build_engine(EngineRequest(older, "int8", tmp_path / "older.onnx", tmp_path / "cache.bin"))
    build_engine(EngineRequest(exported / "model.onnx", "int8", tmp_path / "current.onnx", tmp_path / "cache.bin"))
    assert f"the model's opset {opset} upgraded to 13, for per-channel weight scales" in caplog.text
    assert per_channel_dequantizers(tmp_path / "older.onnx") > 0
    for got, want in zip(run_engine(tmp_path / "older.onnx", images(5)), run_engine(tmp_path / "current.onnx",
                                                                                    images(5))):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_a_graph_the_converter_cannot_upgrade_gets_per_tensor_weights_and_says_so(exported, tmp_path, caplog,
                                                                                 monkeypatch):
    # onnx's version converter lacks adapters for some ops; no small DetectNet_v2 graph lacks one, so
    # the converter is made to fail as it does there (onnx raises from its C++ adapter lookup)
    from onnx import version_converter

    def no_adapter(model, target):
        raise RuntimeError("adapter_lookup: Assertion `false` failed: No Adapter For Current Version $11 for Foo")
    monkeypatch.setattr(version_converter, "convert_version", no_adapter)
    amax = collect_ranges(exported / "model.onnx", (images(seed) for seed in range(2)), "entropy")
    write_cache(tmp_path / "cache.bin", amax)
    older = at_opset(exported / "model.onnx", tmp_path / "opset11.onnx", 11)
    build_engine(EngineRequest(older, "int8", tmp_path / "engine.onnx", tmp_path / "cache.bin"))
    assert "cannot be upgraded to 13" in caplog.text and "quantized per tensor" in caplog.text
    assert per_channel_dequantizers(tmp_path / "engine.onnx") == 0
    for got, want in zip(run_engine(tmp_path / "engine.onnx", images(5)), run_engine(older, images(5))):
        assert cosine(got, want) >= 0.99, cosine(got, want)  # per-tensor weights: coarser, the same detector


def test_int8_engine_keeps_convolutions_without_a_range_in_float(exported, tmp_path):
    amax = collect_ranges(exported / "model.onnx", (images(seed) for seed in range(2)), "entropy")
    write_cache(tmp_path / "partial.bin", {"input_1": amax["input_1"]})  # only the first conv's input
    engine = tmp_path / "partial.onnx"
    build_engine(EngineRequest(exported / "model.onnx", "int8", engine, tmp_path / "partial.bin"))
    quantized = [n for n in onnx.load(engine).graph.node if n.op_type in ("QLinearConv", "QuantizeLinear")]
    assert quantized
    for got, want in zip(run_engine(engine, images()), run_engine(exported / "model.onnx", images())):
        assert cosine(got, want) > 0.999


def test_int8_engine_rejects_a_cache_with_foreign_names(exported, tmp_path):
    (tmp_path / "bad.bin").write_text("TRT-8601-EntropyCalibration2\nblock_9z/Relu: 3c010204\n")
    with pytest.raises(CalibrationCacheError, match=r"'block_9z/Relu' \(line 2\)"):
        build_engine(EngineRequest(exported / "model.onnx", "int8", tmp_path / "e.onnx", tmp_path / "bad.bin"))


def test_int8_without_a_cache_is_an_error(exported, tmp_path):
    with pytest.raises(ValueError, match="int8 conversion needs the calibration cache"):
        build_engine(EngineRequest(exported / "model.onnx", "int8", tmp_path / "e.onnx"))


def test_tensorrt_engine_builds_when_tensorrt_and_a_gpu_are_present(exported, tmp_path):
    reason = tensorrt_available()
    if reason:
        pytest.skip(f"TensorRT path not testable here: {reason}")
    engine = tmp_path / "model.engine"
    assert build_engine(EngineRequest(exported / "model.onnx", "fp16", engine, kind="tensorrt")) == "tensorrt"
    assert engine.stat().st_size > 0


def test_tensorrt_asked_for_where_it_is_missing_is_an_error_not_a_fallback(exported, tmp_path):
    reason = tensorrt_available()
    if reason is None:
        pytest.skip("TensorRT is usable here: nothing is missing")
    with pytest.raises(ValueError, match=f"convert.engine is tensorrt, but TensorRT cannot build here: {reason}"):
        build_engine(EngineRequest(exported / "model.onnx", "fp16", tmp_path / "model.engine", kind="tensorrt"))
    assert not (tmp_path / "model.engine").exists()


def detector_with_heads(path, cov_channels: int, bbox_channels: int, stride: int = 16):
    """input_1 (N,3,64,96) -> two convolutions of `stride`, as DetectNet_v2's outputs are named."""
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.ones((c, 3, stride, stride), np.float32) * 0.01, f"w{i}")
               for i, c in enumerate((cov_channels, bbox_channels))]
    nodes = [helper.make_node("Conv", ["input_1", "w0"], ["cov"], strides=[stride] * 2),
             helper.make_node("Sigmoid", ["cov"], ["output_cov/Sigmoid"]),
             helper.make_node("Conv", ["input_1", "w1"], ["output_bbox/BiasAdd"], strides=[stride] * 2)]
    grid = [64 // stride, 96 // stride]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 3, 64, 96])],
                              [helper.make_tensor_value_info("output_cov/Sigmoid", TensorProto.FLOAT, ["N", cov_channels, *grid]),
                               helper.make_tensor_value_info("output_bbox/BiasAdd", TensorProto.FLOAT,
                                                             ["N", bbox_channels, *grid])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("cov, bbox, stride, message", [
    (2, 5, 16, "its output output_bbox/BiasAdd has 5 channels and output_cov/Sigmoid 2: DetectNet_v2 has 4 box "
               "channels per coverage channel"),
    (2, 8, 8, "its output output_cov/Sigmoid has a 8x12 grid, but its 64x96 input gives DetectNet_v2 a 4x6 grid"),
])
def test_a_model_whose_outputs_are_not_detectnet_v2s_is_refused_by_export(tmp_path, cov, bbox, stride, message):
    detector_with_heads(tmp_path / "model.onnx", cov, bbox, stride)
    with pytest.raises(ModelError, match=f"is not a DetectNet_v2 model: {re.escape(message)}"):
        export_model(tmp_path / "model.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_a_model_whose_outputs_are_a_classifiers_is_refused_by_export(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((3 * 64 * 96, 10), np.float32), "w")
    nodes = [helper.make_node("Flatten", ["input_1"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["output_cov/Sigmoid"]),
             helper.make_node("Identity", ["logits"], ["output_bbox/BiasAdd"])]
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("input_1", TensorProto.FLOAT,
                                                                                 ["N", 3, 64, 96])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 10])
                               for name in ("output_cov/Sigmoid", "output_bbox/BiasAdd")], [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "model.onnx")
    with pytest.raises(ModelError, match=re.escape("is not a DetectNet_v2 model: its outputs have shapes "
                                                   "output_cov/Sigmoid (?, 10) and output_bbox/BiasAdd (?, 10)")):
        export_model(tmp_path / "model.onnx", tmp_path / "out.onnx")
