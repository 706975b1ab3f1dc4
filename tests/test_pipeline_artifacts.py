"""What the open backend leaves behind after a real run (small sample, export=int8)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from google.protobuf import text_format

from helpers.paths import ROOT
from helpers.tao import tao_message_for
from stages.formats.calibration_cache import CALIBRATOR_NAMES, calibration_tensor_names, read_cache
from stages.spec import Spec, path_values
from stages.formats.tensorfile import describe, read_batches
from stages.pipeline.layout import (CALIBRATION_CACHE, DEEPSTREAM_CONFIG, EXPORTED_MODEL, EXPORT_DIR,
                                    EXPORT_REPORT, RESOLVED_SPEC, TENSORFILE, deployable_model, engine_file)


def test_tensorfile_reads_back_with_taos_own_reader(built_project):
    tensorfile_module = pytest.importorskip("nvidia_tao_deploy.engine.tensorfile",
                                            reason="nvidia-tao-deploy is not installed")
    path = built_project / TENSORFILE
    ours = list(read_batches(path))
    reader = tensorfile_module.TensorFile(str(path), "r")
    theirs = []
    while (batch := reader.read()) is not None:
        theirs.append(batch)
    assert len(theirs) == len(ours) == 3
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert theirs[0].shape == (8, 3, 64, 160) and theirs[0].dtype == np.float32


def test_tensorfile_holds_preprocessed_images(built_project):
    count, shape = describe(built_project / TENSORFILE)
    assert (count, shape) == (3, (8, 3, 64, 160))
    batch = next(read_batches(built_project / TENSORFILE))
    assert 0.0 <= batch.min() and batch.max() <= 1.0 and batch.std() > 0.05


def test_resolved_spec_has_no_container_paths_and_parses_as_tao(built_project):
    text = (built_project / RESOLVED_SPEC).read_text()
    values = [pv.value for pv in path_values(Spec(text))]
    assert values and not any(v.startswith("/workspace") for v in values)
    assert "batch_size_per_gpu: 8" in text
    pytest.importorskip("nvidia_tao_deploy", reason="nvidia-tao-deploy is not installed")
    text_format.Merge(text, tao_message_for(text))


def test_exported_model_has_tao_names_and_a_dynamic_batch(built_project):
    model = onnx.load(built_project / EXPORTED_MODEL)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input_1"]
    assert {o.name for o in model.graph.output} == {"output_cov/Sigmoid", "output_bbox/BiasAdd"}
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "N"


def test_calibration_cache_covers_every_tensor_tensorrt_needs(built_project):
    header, scales = read_cache(built_project / CALIBRATION_CACHE)
    chosen = json.loads((built_project / EXPORT_REPORT).read_text())["calibration"]["chosen"]
    assert header == f"TRT-8601-{CALIBRATOR_NAMES[chosen]}"  # the method auto kept (the gate is off: no layer left out)
    model = onnx.load(built_project / EXPORTED_MODEL)
    assert list(scales) == calibration_tensor_names(model)
    assert all(0 < s < float("inf") for s in scales.values())
    assert scales["input_1"] <= 1 / 127  # images scaled to [0, 1]: amax at most 1


def test_deepstream_config_has_the_fields_and_a_key_placeholder(built_project):
    config = (built_project / DEEPSTREAM_CONFIG).read_text().splitlines()
    for line in ["net-scale-factor=0.00392156862745098", "offsets=0;0;0", "infer-dims=3;64;160",
                 "network-type=0", "num-detected-classes=3", "model-color-format=0", "uff-input-order=0",
                 "output-blob-names=output_cov/Sigmoid;output_bbox/BiasAdd", "uff-input-blob-name=input_1",
                 "tlt-model-key=YOUR_TAO_KEY", "int8-calib-file=calibration.bin"]:
        assert line in config
    assert (built_project / "artifacts/export/labels.txt").read_text() == "car\ncyclist\npedestrian\n"


def deepstream_keys() -> dict[str, set[str]]:
    """{group: keys} nvinfer reads (tests/deepstream_keys.txt, from DeepStream's property parser)."""
    keys, group = {}, None
    for line in (ROOT / "tests" / "deepstream_keys.txt").read_text().splitlines():
        if line.startswith("["):
            group = line.strip("[]")
        elif line and not line.startswith("#"):
            keys.setdefault(group, set()).update(line.split())
    return keys


@pytest.mark.parametrize("name", ["nvinfer_config.txt", "nvinfer_config.explicit.txt"])
def test_deepstream_reads_every_key_of_each_config(built_project, name):
    import configparser

    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str
    config.read(built_project / EXPORT_DIR / name)
    known = deepstream_keys()
    for section in config.sections():
        group = "class-attrs" if section.startswith("class-attrs-") else section
        assert set(config[section]) <= known[group], (section, set(config[section]) - known[group])


def test_the_explicit_deepstream_config_names_the_deployable_onnx_strongly_typed(built_project):
    config = (built_project / "artifacts/export/nvinfer_config.explicit.txt").read_text().splitlines()
    assert {"onnx-file=model.int8.onnx", "strongly-typed=1", "network-mode=0"} <= set(config)
    assert not any(line.startswith("int8-calib-file") for line in config)  # the scales are in the graph


def test_the_samples_deployable_int8_onnx_follows_tensorrts_rules_and_the_log_says_what_it_holds(built_project):
    from stages.quantization.lint import lint

    assert lint(onnx.load(built_project / deployable_model("int8")), "int8") == []
    log = (built_project / "artifacts/export/export.log").read_text()
    assert "model.int8.onnx: explicit INT8 at opset 19: 18 convolutions quantized (per-channel weights)" in log
    assert "model.int8.onnx: what is not INT8 computes in fp16" in log
    # the small sample's tensorfile holds 3 batches, fewer than export.batches asks for: said, not silent
    assert "export.batches asks for 10 calibration batches, but only 3 are in the calibration tensorfile" in log


def test_deepstream_clusters_each_class_as_the_specs_postprocessing_config_says(built_project):
    import configparser

    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str  # DeepStream's keys are case-sensitive (minBoxes)
    config.read(built_project / DEEPSTREAM_CONFIG)
    # the oracle: the spec as TAO's own message reads it
    spec_text = (built_project / RESOLVED_SPEC).read_text()
    spec = text_format.Parse(spec_text, tao_message_for(spec_text))
    classes = [target.name for target in spec.cost_function_config.target_classes]
    clustering = {name: value.clustering_config
                  for name, value in spec.postprocessing_config.target_class_config.items()}
    assert config["property"]["cluster-mode"] == "1"  # DBSCAN, as every class of the sample's spec
    for class_id, name in enumerate(classes):
        attrs, expected = config[f"class-attrs-{class_id}"], clustering[name]
        assert float(attrs["pre-cluster-threshold"]) == pytest.approx(expected.coverage_threshold)
        assert float(attrs["eps"]) == pytest.approx(expected.dbscan_eps)
        assert int(attrs["minBoxes"]) == int(expected.dbscan_min_samples)
        assert float(attrs["dbscan-min-score"]) == pytest.approx(expected.dbscan_confidence_threshold)
        assert int(attrs["detected-min-h"]) == int(expected.minimum_bounding_box_height)


def test_deepstream_writes_nms_and_hybrid_settings_and_names_what_it_cannot_express(tmp_path):
    from stages.formats.deepstream import clustering_lines

    nms = {"algorithm": "nms", "coverage_threshold": 0.2, "nms_iou_threshold": 0.4, "nms_confidence_threshold": 0.3,
           "minimum_bounding_box_height": 6, "dbscan_eps": 0.5, "dbscan_min_samples": 1,
           "dbscan_confidence_threshold": 0.9}
    lines = clustering_lines([nms, {**nms, "algorithm": "dbscan"}])
    assert lines[0] == "cluster-mode=2"
    assert "# classes 1 cluster differently in the spec; DeepStream uses nms for all" in lines
    assert lines[lines.index("[class-attrs-0]"):][:5] == [
        "[class-attrs-0]", "pre-cluster-threshold=0.2", "nms-iou-threshold=0.4", "post-cluster-threshold=0.3",
        "detected-min-h=6"]
    hybrid = clustering_lines([{**nms, "algorithm": "hybrid"}])
    assert hybrid[0] == "cluster-mode=3" and "eps=0.5" in hybrid and "nms-iou-threshold=0.4" in hybrid


def test_int8_engine_matches_the_fp32_model(built_project):
    metrics = json.loads((built_project / "metrics/convert.json").read_text())
    assert metrics["precision"] == "int8" and metrics["engine"] == "onnxruntime"
    assert metrics["images"] == 8
    # the sample model's fitted heads lean on small feature differences, which INT8 blurs: on this tiny
    # model (8 channels, 3 calibration batches) the coverage agrees to 0.9769-0.9770 and the boxes to 0.9992
    # on every CPU code path measured (tests/cpu_paths.py, and an AMD EPYC emulated with qemu-user); the
    # bound lets the int8 error (1 - cosine) double before it fails
    for output in ("output_cov/Sigmoid", "output_bbox/BiasAdd"):
        assert metrics["outputs"][output]["cosine_similarity"] >= 0.95
    timings = json.loads((built_project / "metrics/timings.json").read_text())
    assert set(timings["latency_ms"]) == {"batch_1", "max_batch"} and metrics["max_batch_size"] == 8
    assert "latency_ms" not in metrics  # timings apart from the figures that are the same on every run
    # how long NVIDIA's builder took to check the deployable ONNX: a time, so in the timings, not the export's report
    assert timings["nvidia_builder_build_s"] > 0
    assert "nvidia_builder_build_s" not in json.dumps(json.loads((built_project / EXPORT_REPORT).read_text()))
    assert metrics["engine_size_bytes"] == (built_project / engine_file("open", "onnxruntime")).stat().st_size


def test_int8_engine_carries_the_cache_scales(built_project):
    """The deployable ONNX quantizes the input with the cache's scale (in fp16, as the rest computes in fp16:
    rounded to fp16's 11 bits), and the engine is that graph."""
    _, scales = read_cache(built_project / CALIBRATION_CACHE)
    for path in (deployable_model("int8"), engine_file("open", "onnxruntime")):
        model = onnx.load(built_project / path)
        initial = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        made_by = {o: n for n in model.graph.node for o in n.output}

        def source(tensor):
            while tensor in made_by and made_by[tensor].op_type == "Cast":
                tensor = made_by[tensor].input[0]
            return tensor
        input_scale = [initial[n.input[1]] for n in model.graph.node
                       if n.op_type == "QuantizeLinear" and source(n.input[0]) == "input_1"]
        assert input_scale and np.isclose(float(input_scale[0]), scales["input_1"], rtol=2.0 ** -11), path
