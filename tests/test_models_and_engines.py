"""The sample model, TAO-style export, and engines built from the exported model."""
from __future__ import annotations

import re
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from helpers.models import engine_request, tiny_export, tiny_images
from stages import bundled_sample
from stages.detectnet_v2.inference import OnnxRunner
from stages.formats.calibration_cache import write_cache
from stages.quantization.export_folder import write_for_export
from stages.formats.onnx_model import ModelError, export_model
from stages.open_backend.engines import build_engine
from stages.quantization.calibrate import collect_ranges
from tensor_compare import cosine


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("engines"))


images = tiny_images


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


def test_a_model_with_other_names_is_refused_naming_the_config_keys_that_exist(tmp_path, exported):
    from stages.pipeline.schema import ModelSection

    model = onnx.load(exported / "sample.onnx")
    model.graph.output[0].name = "scores"
    for node in model.graph.node:
        node.output[:] = ["scores" if n == "output_cov/Sigmoid" else n for n in node.output]
    onnx.save(model, tmp_path / "other.onnx")
    with pytest.raises(ModelError) as refused:
        export_model(tmp_path / "other.onnx", tmp_path / "out.onnx")
    named = re.findall(r"model\.(\w+)", str(refused.value))
    assert named == ["input_name", "cov_output", "bbox_output"]
    assert set(named) <= set(ModelSection.__dataclass_fields__)  # keys a user can set


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


def test_a_runner_told_not_to_spin_lets_its_threads_sleep_between_runs(exported):
    """A server's engine does not spin: its threads would burn the cores the decoding processes need."""
    options = OnnxRunner(exported / "model.onnx", spinning=False).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = OnnxRunner(exported / "model.onnx").session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):  # onnxruntime's default: spinning
        default.get_session_config_entry("session.intra_op.allow_spinning")


def export_folder(exported, folder, data_type, amax=None, high_precision="fp16", model=None):
    """An export folder as the export stage leaves it: model.onnx, for int8 the cache of `amax`, and the
    deployable ONNX of the precision."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model or exported / "model.onnx", folder / "model.onnx")
    if data_type == "int8":
        write_cache(folder / "calibration.bin", amax, "entropy", 8601)
    write_for_export(folder, data_type, high_precision, amax)
    return folder


def ranges(exported, seeds=range(3), method="entropy"):
    return collect_ranges(exported / "model.onnx", (images(seed) for seed in seeds), method, percentile=99.99, skip_zeros=True)


@pytest.mark.parametrize("data_type", ["fp32", "fp16"])
def test_float_engines_match_the_model(exported, tmp_path, data_type):
    folder = export_folder(exported, tmp_path / "export", data_type, ranges(exported, method="minmax"))
    engine = tmp_path / f"{data_type}.onnx"
    build_engine(engine_request(folder, data_type, engine))
    for got, want in zip(run_engine(engine, images()), run_engine(exported / "model.onnx", images())):
        assert cosine(got, want) > 0.9999


def test_int8_engine_uses_the_cache(exported, tmp_path):
    amax = ranges(exported)
    good = export_folder(exported, tmp_path / "good", "int8", amax)
    coarse = export_folder(exported, tmp_path / "coarse", "int8", {k: v * 40 for k, v in amax.items()})
    build_engine(engine_request(good, "int8", tmp_path / "good.onnx"))
    build_engine(engine_request(coarse, "int8", tmp_path / "coarse.onnx"))
    reference = run_engine(exported / "model.onnx", images(9))
    good_out, coarse_out = run_engine(tmp_path / "good.onnx", images(9)), run_engine(tmp_path / "coarse.onnx", images(9))
    assert all(cosine(g, r) >= 0.99 for g, r in zip(good_out, reference))
    # scales 40x too coarse must hurt: the engine really quantizes with the cache's numbers
    assert max(np.abs(c - r).max() for c, r in zip(coarse_out, reference)) > \
        3 * max(np.abs(g - r).max() for g, r in zip(good_out, reference))


def test_int8_without_its_deployable_onnx_is_an_error_naming_the_file(exported, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copyfile(exported / "model.onnx", folder / "model.onnx")
    with pytest.raises(ValueError, match=f"{folder / 'model.int8.onnx'} does not exist: run the export stage with "
                                         "export=int8 first"):
        build_engine(engine_request(folder, "int8", tmp_path / "e.onnx"))


def test_the_implicit_route_is_tensorrts_not_onnxruntimes(exported, tmp_path):
    folder = export_folder(exported, tmp_path / "export", "fp32")
    with pytest.raises(ValueError, match="convert.quantization is implicit, TensorRT's route"):
        build_engine(engine_request(folder, "fp32", tmp_path / "e.onnx", quantization="implicit"))
    assert not (tmp_path / "e.onnx").exists()


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
