"""The bundled sample: a complete DetectNet_v2 spec as TAO parses it, and a model that really detects,
measured by TAO Deploy's own post-processing and KITTI metric."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format

from stages import bundled_sample
from stages.bundled_sample.fit import coverage_targets
from stages.detectnet_v2.grid import encode_box
from stages.formats.kitti_labels import LabelError, read_labels
from stages.pipeline.config import compose
from tao_oracle import tao_evaluate, tao_modules

CLASSES = bundled_sample.CLASSES


def sample_spec(tmp_path: Path, width: int = 624, height: int = 192):
    Experiment = tao_modules()[0]
    path = tmp_path / "spec.txt"
    bundled_sample.write_spec(path, width, height, batch_size=8)
    return text_format.Merge(path.read_text(), Experiment())


def test_the_sample_spec_names_each_class_with_its_cov_and_bbox_objectives(tmp_path):
    spec = sample_spec(tmp_path)
    targets = spec.cost_function_config.target_classes
    assert [t.name for t in targets] == list(CLASSES)
    assert all([o.name for o in t.objectives] == ["cov", "bbox"] for t in targets)


def test_the_sample_spec_clusters_every_class_with_dbscan(tmp_path):
    spec = sample_spec(tmp_path)
    configs = spec.postprocessing_config.target_class_config
    assert sorted(configs) == sorted(CLASSES)
    for name in CLASSES:
        clustering = configs[name].clustering_config
        assert clustering.clustering_algorithm == clustering.DBSCAN
        assert 0 < clustering.coverage_threshold < 1 and 0 < clustering.dbscan_eps < 1
        assert clustering.dbscan_min_samples >= 1 and clustering.minimum_bounding_box_height > 0
        assert clustering.dbscan_confidence_threshold > 0


def test_the_sample_spec_evaluates_as_tao_deploys_evaluator_does(tmp_path):
    # TAO Deploy's KITTIMetric matches at IoU 0.5 for every class, 11-point AP, on every box
    evaluation = sample_spec(tmp_path).evaluation_config
    assert dict(evaluation.minimum_detection_ground_truth_overlap) == {name: 0.5 for name in CLASSES}
    assert evaluation.average_precision_mode == evaluation.SAMPLE
    boxes = evaluation.evaluation_box_config
    assert sorted(boxes) == sorted(CLASSES)
    for name in CLASSES:
        assert boxes[name].minimum_height == 0 and boxes[name].minimum_width == 0
        assert boxes[name].maximum_height >= 9999 and boxes[name].maximum_width >= 9999


def test_the_sample_spec_rasterizes_every_class(tmp_path):
    rasterizer = sample_spec(tmp_path).bbox_rasterizer_config.target_class_config
    assert sorted(rasterizer) == sorted(CLASSES)
    assert all(0 < rasterizer[name].cov_radius_x <= 1 for name in CLASSES)


def test_the_box_encoding_is_what_taos_decoder_reads_back():
    _, BboxHandler, _, _ = tao_modules()
    rows, columns = 12, 39
    box = (100.25, 40.5, 180.75, 120.0)
    encoded = encode_box(box, rows, columns)[None].astype(np.float64)  # (1, 4, rows, columns)
    handler = BboxHandler(frame_height=192, frame_width=624, target_classes=["car"], classwise_cluster_params={})
    decoded = handler.abs_bbox_converter(encoded.transpose(0, 1, 3, 2).copy()).transpose(0, 1, 3, 2)
    assert np.allclose(decoded, np.array(box)[None, :, None, None], atol=1e-9)


def test_coverage_covers_the_central_region_of_a_box_and_at_least_one_cell_each_way():
    cov, bbox = coverage_targets([(0, (160.0, 32.0, 320.0, 160.0)), (2, (400.0, 100.0, 404.0, 104.0))],
                                 3, 12, 39, [0.4, 1.0, 1.0])
    rows, columns = np.nonzero(cov[0])
    # centre (240, 96); half-extent max(0.4 * 160 / 2, 16) = 32 in x, max(0.4 * 128 / 2, 16) = 25.6 in y
    assert sorted(set(columns * 16 + 0.5)) == [208.5, 224.5, 240.5, 256.5]
    assert sorted(set(rows * 16 + 0.5)) == [80.5, 96.5, 112.5]
    assert np.count_nonzero(cov[2]) >= 1 and np.count_nonzero(cov[1]) == 0  # a tiny box still gets a cell
    assert np.allclose(bbox[0:4][:, cov[0] > 0], encode_box((160.0, 32.0, 320.0, 160.0), 12, 39)[:, cov[0] > 0])
    assert np.all(bbox[4:8] == 0)


def test_a_box_in_front_takes_the_cells_it_shares_with_one_behind():
    behind, front = (0, (100.0, 50.0, 300.0, 150.0)), (0, (180.0, 60.0, 260.0, 140.0))
    _, bbox = coverage_targets([behind, front], 1, 12, 39, [1.0])
    assert np.allclose(bbox[:, 6, 13], encode_box(front[1], 12, 39)[:, 6, 13])


def test_a_kitti_label_with_too_few_fields_is_refused_with_its_file_and_line(tmp_path):
    label = tmp_path / "000001.txt"
    label.write_text("car 0.00 0 0.00 1 2 3 4 0 0 0 0 0 0 0\ncar 0.00 0\n")
    with pytest.raises(LabelError, match=r"000001.txt:2: a KITTI label needs at least 8 fields"):
        read_labels(label)


def test_a_kitti_label_reads_its_class_and_box(tmp_path):
    label = tmp_path / "000001.txt"
    label.write_text("Car 0.50 1 -1.5 10.0 20.0 30.5 40.0 1 2 3 4 5 6 7\n\n")
    [car] = read_labels(label)
    assert (car.kind, car.truncated, car.occluded, car.box) == ("Car", 0.5, 1, (10.0, 20.0, 30.5, 40.0))


def test_the_fitted_model_is_the_same_bytes_for_the_same_seed(tmp_path):
    bundled_sample.write_dataset(tmp_path / "data", {"training": 16}, seed=3, size=(320, 120))
    digests = []
    for name in ("a.onnx", "b.onnx"):
        bundled_sample.fit_model(tmp_path / name, tmp_path / "data/training", CLASSES, 160, 64, base_width=4, seed=1)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_the_fitted_model_has_taos_interface(tmp_path):
    bundled_sample.write_dataset(tmp_path / "data", {"training": 8}, seed=3, size=(320, 120))
    bundled_sample.fit_model(tmp_path / "m.onnx", tmp_path / "data/training", CLASSES, 160, 64, base_width=4)
    graph = onnx.load(tmp_path / "m.onnx").graph

    def dims(value):
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in graph.input] == [("input_1", [1, 3, 64, 160])]
    assert [(o.name, dims(o)) for o in graph.output] == [("output_cov/Sigmoid", [1, 3, 4, 10]),
                                                         ("output_bbox/BiasAdd", [1, 12, 4, 10])]


# ----------------------------------------------------------------- the sample as `make repro` makes it

@pytest.fixture(scope="module")
def full_sample(tmp_path_factory) -> Path:
    s = compose().sample  # the sample conf/ describes
    root = tmp_path_factory.mktemp("sample")
    bundled_sample.write_dataset(root / "data", {"training": s.train_images, "validation": s.val_images}, s.seed,
                                 (s.image_width, s.image_height))
    bundled_sample.write_spec(root / "data/spec.txt", s.input_width, s.input_height, batch_size=8)
    bundled_sample.fit_model(root / "model.onnx", root / "data/training", CLASSES, s.input_width, s.input_height,
                             s.model_width, s.model_seed)
    return root


@pytest.mark.slow
def test_the_sample_model_detects_every_class_as_taos_evaluator_measures_it(full_sample):
    ap = tao_evaluate(full_sample / "model.onnx", full_sample / "data/validation/image_2",
                      full_sample / "data/validation/label_2", (full_sample / "data/spec.txt").read_text())
    assert np.mean(list(ap.values())) >= 0.5, ap
    assert min(ap.values()) >= 0.3, ap


@pytest.mark.slow
def test_a_model_with_random_heads_detects_nothing_by_the_same_measure(full_sample, tmp_path):
    # the measure above can fail: the same backbone without fitted heads scores near zero
    s = compose().sample
    bundled_sample.build_model(tmp_path / "random.onnx", s.input_width, s.input_height, len(CLASSES),
                               s.model_width, s.model_seed, batch="N")
    ap = tao_evaluate(tmp_path / "random.onnx", full_sample / "data/validation/image_2",
                      full_sample / "data/validation/label_2", (full_sample / "data/spec.txt").read_text())
    assert np.mean(list(ap.values())) < 0.1, ap


@pytest.mark.slow
def test_our_evaluation_of_the_sample_model_equals_taos(full_sample):
    # the evaluate stage's evaluator (LANCZOS preprocessing, decoding, DBSCAN, KITTI AP from the spec's
    # evaluation_config) against TAO Deploy's evaluate wiring, on the same model and images
    from stages.detectnet_v2.evaluation import evaluate, evaluation_setup, validation_set
    from stages.detectnet_v2.inference import OnnxRunner
    from stages.spec import Spec

    s = compose().sample
    data = full_sample / "data"
    setup = evaluation_setup(Spec.load(data / "spec.txt"), s.input_width, s.input_height)
    samples = validation_set(data / "validation/image_2", data / "validation/label_2")
    ours = evaluate({"model": OnnxRunner(full_sample / "model.onnx")}, samples, setup, 8)["model"]
    theirs = tao_evaluate(full_sample / "model.onnx", data / "validation/image_2", data / "validation/label_2",
                          (data / "spec.txt").read_text())
    assert ours.average_precisions() == pytest.approx(theirs, abs=1e-6)
