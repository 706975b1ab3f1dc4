"""Decoding, clustering and the KITTI metric against TAO Deploy's own code on the same inputs: its
BboxHandler (DBSCAN, NMS) and its KITTIMetric."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from stages import bundled_sample
from stages.bundled_sample.fit import coverage_targets
from stages.detectnet_v2.kitti_metric import BoxFilter, ClassTally, average_precision, evaluation_config
from stages.detectnet_v2.postprocessing import (Clustering, PostprocessingError, cluster, clustering_config, decode,
                                                to_image_pixels)
from stages.spec import Spec
from tao_oracle import tao_modules

CLASSES = list(bundled_sample.CLASSES)
ROWS, COLUMNS, WIDTH, HEIGHT = 12, 39, 624, 192


def raw_outputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cov (C, rows, columns), bbox (4C, rows, columns)) like a trained model's: DetectNet_v2's targets for
    a few random boxes, with noisy coverages and box extents."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(6):
        w, h = rng.uniform(20, 120), rng.uniform(20, 90)
        x1, y1 = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
        boxes.append((int(rng.integers(3)), (x1, y1, x1 + w, y1 + h)))
    cov, bbox = coverage_targets(boxes, 3, ROWS, COLUMNS, [0.6, 1.0, 1.0])
    cov = np.clip(cov * rng.uniform(0.5, 1.0, cov.shape) + rng.uniform(0, 0.15, cov.shape), 0, 1)
    bbox = bbox + rng.normal(0, 0.08, bbox.shape) * (bbox != 0)
    return cov.astype(np.float32), bbox.astype(np.float32)


def spec_with(clustering: str) -> str:
    configs = "".join(f'''  target_class_config {{ key: "{name}" value {{ clustering_config {{
    {clustering} }} }} }}
''' for name in CLASSES)
    targets = "".join(f'  target_classes {{ name: "{name}" }}\n' for name in CLASSES)
    return f"postprocessing_config {{\n{configs}}}\ncost_function_config {{\n{targets}}}\n"


DBSCAN = ("clustering_algorithm: DBSCAN coverage_threshold: 0.2 dbscan_eps: 0.4 dbscan_min_samples: 1 "
          "minimum_bounding_box_height: 6 dbscan_confidence_threshold: 0.9")
NMS = ("clustering_algorithm: NMS coverage_threshold: 0.2 nms_iou_threshold: 0.4 nms_confidence_threshold: 0.3 "
       "minimum_bounding_box_height: 0")
HYBRID = ("clustering_algorithm: HYBRID coverage_threshold: 0.2 dbscan_eps: 0.4 dbscan_min_samples: 1 "
          "dbscan_confidence_threshold: 0.9 nms_iou_threshold: 0.4 nms_confidence_threshold: 0.3")


def taos_clusters(spec_text: str, cov: np.ndarray, bbox: np.ndarray) -> dict[str, list]:
    Experiment, BboxHandler, build_postprocessing_config, _ = tao_modules()
    spec = text_format.Merge(spec_text, Experiment())
    handler = BboxHandler(frame_height=HEIGHT, frame_width=WIDTH, target_classes=CLASSES,
                          classwise_cluster_params=build_postprocessing_config(spec.postprocessing_config))
    cov_t, bbox_t = cov[None].transpose(0, 1, 3, 2), bbox[None].transpose(0, 1, 3, 2)
    raw = {name: {"cov": cov_t[:, k].copy(), "bbox": bbox_t[:, 4 * k:4 * k + 4].copy()}
           for k, name in enumerate(CLASSES)}
    return {name: found[0] for name, found in handler.cluster_detections(handler.bbox_preprocessing(raw)).items()}


def ours(spec_text: str, cov: np.ndarray, bbox: np.ndarray):
    configs = clustering_config(Spec(spec_text), CLASSES)
    boxes, coverages = decode(cov, bbox)
    return {name: cluster(boxes[k], coverages[k], configs[name]) for k, name in enumerate(CLASSES)}


def assert_same_detections(theirs: dict, mine: dict) -> None:
    for name in CLASSES:
        expected = sorted(((float(d.confidence), *map(float, d.bbox)) for d in theirs[name]), reverse=True)
        got = sorted(((float(c), *map(float, b)) for b, c in zip(mine[name].boxes, mine[name].confidences)),
                     reverse=True)
        assert len(got) == len(expected), name
        assert np.allclose(np.array(got).reshape(-1, 5), np.array(expected).reshape(-1, 5), atol=1e-3), name


@pytest.mark.parametrize("seed", range(6))
def test_dbscan_clusters_as_taos_bbox_handler_does(seed):
    cov, bbox = raw_outputs(seed)
    mine = ours(spec_with(DBSCAN), cov, bbox)
    assert sum(len(d.confidences) for d in mine.values()) > 0
    assert_same_detections(taos_clusters(spec_with(DBSCAN), cov, bbox), mine)


@pytest.mark.parametrize("seed", range(3))
def test_dbscan_where_every_cell_is_a_candidate_clusters_as_taos_does(seed):
    # an untrained head: every cell above the threshold, boxes everywhere (the case the sparse
    # neighbour graph exists for); TAO builds the dense distance matrix
    rng = np.random.default_rng(100 + seed)
    cov = rng.uniform(0.25, 1.0, (3, ROWS, COLUMNS)).astype(np.float32)
    bbox = rng.normal(0.4, 0.3, (12, ROWS, COLUMNS)).astype(np.float32)
    mine = ours(spec_with(DBSCAN), cov, bbox)
    assert sum(len(d.confidences) for d in mine.values()) > 3
    assert_same_detections(taos_clusters(spec_with(DBSCAN), cov, bbox), mine)


@pytest.mark.parametrize("min_samples", [1, 2])
@pytest.mark.parametrize("eps", [0.05, 0.4, 0.95, 1.0, 1.5])
def test_our_dbscan_labels_every_box_as_scikit_learns_dbscan_on_taos_dense_matrix(eps, min_samples):
    """TAO clusters with scikit-learn's DBSCAN on the dense 1 - IoU matrix, the coverages as weights: the
    same labels, numbering included, for boxes of every kind (some inverted: empty, 1 apart from all)."""
    from sklearn.cluster import DBSCAN as SklearnDBSCAN

    from stages.detectnet_v2.postprocessing import _iou_matrix, dbscan_labels

    rng = np.random.default_rng(7)
    corners = rng.uniform(0, 300, (400, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(-5, 60, (400, 2))], axis=1)
    boxes = np.concatenate([boxes, *(boxes[:150] + rng.uniform(-0.5, 0.5, (150, 4)) for _ in range(2))])  # dense spots
    weights = rng.uniform(0.1, 1.0, len(boxes))
    theirs = SklearnDBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(
        1.0 - _iou_matrix(boxes), sample_weight=weights)
    assert (theirs >= 0).sum() > 20  # clusters to compare, not only noise
    assert np.array_equal(dbscan_labels(boxes, weights, eps, min_samples), theirs)


@pytest.fixture
def taos_nms_given_a_copy(monkeypatch):
    """TAO's NMS sorts and decays the coverage array in place, then reads the kept boxes' coverages from
    it by their original index (wrong confidences): hand it a copy, as docs/design.md says ("Evaluation
    against TAO's own code")."""
    tao_modules()
    from nvidia_tao_deploy.cv.detectnet_v2 import utils

    original = utils.get_keep_indices
    monkeypatch.setattr(utils, "get_keep_indices", lambda dets, covs, *a, **k: original(dets, covs.copy(), *a, **k))


@pytest.mark.parametrize("seed", range(6))
def test_nms_keeps_the_boxes_taos_nms_keeps_with_their_own_coverages(seed, taos_nms_given_a_copy):
    cov, bbox = raw_outputs(seed)
    mine = ours(spec_with(NMS), cov, bbox)
    assert sum(len(d.confidences) for d in mine.values()) > 0
    assert_same_detections(taos_clusters(spec_with(NMS), cov, bbox), mine)


@pytest.mark.parametrize("seed", range(3))
def test_hybrid_clusters_as_taos_cluster_bboxes_does(seed, taos_nms_given_a_copy):
    # TAO Deploy's config builder refuses HYBRID (clustering_config.py), but its cluster_bboxes implements
    # it (DBSCAN's kept clusters' raw boxes, then NMS): call that with the spec's values
    from nvidia_tao_deploy.cv.detectnet_v2 import utils

    _, BboxHandler, _, _ = tao_modules()
    cov, bbox = raw_outputs(seed)
    handler = BboxHandler(frame_height=HEIGHT, frame_width=WIDTH, target_classes=CLASSES, classwise_cluster_params={})
    cov_t, bbox_t = cov[None].transpose(0, 1, 3, 2), bbox[None].transpose(0, 1, 3, 2)
    raw = handler.bbox_preprocessing({name: {"cov": cov_t[:, k].copy(), "bbox": bbox_t[:, 4 * k:4 * k + 4].copy()}
                                      for k, name in enumerate(CLASSES)})
    theirs = {name: utils.cluster_bboxes(raw[name], "IOU", 0.4 + 1e-12, 1, 0.2, 0, "aggregate_cov",
                                         (1.0, 1.0, 1.0, 1.0, 1.0, 1.0), "hybrid", 0.9, 0.4, 0.3)[0]
              for name in CLASSES}
    assert_same_detections(theirs, ours(spec_with(HYBRID), cov, bbox))


def test_nms_applies_the_minimum_box_height_which_taos_nms_skips():
    boxes = np.array([[10, 10, 50, 14], [100, 10, 140, 60.0]])
    found = cluster(boxes, np.array([0.9, 0.8]), Clustering(algorithm="nms", minimum_bounding_box_height=8))
    assert found.boxes.tolist() == [[100, 10, 140, 60]]


def test_a_class_without_a_clustering_entry_uses_the_default_one():
    text = spec_with(DBSCAN).replace('key: "pedestrian"', 'key: "default"')
    start = text.index('key: "default"')
    text = text[:start] + text[start:].replace("dbscan_eps: 0.4", "dbscan_eps: 0.35", 1)
    configs = clustering_config(Spec(text), CLASSES)
    assert configs["pedestrian"].dbscan_eps == 0.35 and configs["car"].dbscan_eps == 0.4


def test_a_class_without_a_clustering_entry_and_no_default_is_refused():
    text = spec_with(DBSCAN).replace('key: "pedestrian"', 'key: "car"')
    with pytest.raises(PostprocessingError, match=r"no entry for 'pedestrian' and no 'default' entry"):
        clustering_config(Spec(text), CLASSES)


def test_a_clustering_entry_for_a_class_that_is_not_a_target_is_refused():
    text = spec_with(DBSCAN).replace('key: "pedestrian"', 'key: "truck"')
    with pytest.raises(PostprocessingError, match=r"<spec>:\d+: .*target_class_config\[2\] is for 'truck', which is"):
        clustering_config(Spec(text), CLASSES)


def test_boxes_are_clipped_to_the_input_and_scaled_to_the_original_image():
    found = cluster(np.array([[-10.0, 20, 200, 220]]), np.array([0.9]), Clustering(algorithm="nms"))
    scaled = to_image_pixels(found, (WIDTH, HEIGHT), (1248, 384))
    assert np.allclose(scaled.boxes, [[0, 40, 400, 384]])


# ----------------------------------------------------------------- the KITTI metric

def detections_and_truth(seed: int, images: int = 12):
    """Ground truth (TAO's rows: class, difficult, x1 y1 x2 y2) and detections (class, confidence, box) for
    several images: jittered true boxes, missed ones, difficult ones, and false alarms."""
    rng = np.random.default_rng(seed)
    truth, predictions = [], []
    for _ in range(images):
        rows, found = [], []
        for _ in range(int(rng.integers(0, 7))):
            k = int(rng.integers(1, 4))
            x1, y1 = rng.uniform(0, 500, 2)
            box = np.array([x1, y1, x1 + rng.uniform(10, 150), y1 + rng.uniform(10, 100)])
            rows.append([k, int(rng.random() < 0.2), *box])  # some difficult (occluded)
            if rng.random() < 0.8:
                found.append([k, rng.random(), *(box + rng.normal(0, 6, 4))])
        for _ in range(int(rng.integers(0, 4))):
            x1, y1 = rng.uniform(0, 500, 2)
            found.append([int(rng.integers(1, 4)), rng.random() * 0.8, x1, y1, x1 + 40, y1 + 40])
        truth.append(np.array(rows, float).reshape(-1, 6))
        predictions.append(np.array(found, float).reshape(-1, 6))
    return truth, predictions


def our_aps(truth, predictions, mode: str) -> list[float]:
    aps = []
    for k in range(1, 4):
        tally = ClassTally()
        for rows, found in zip(truth, predictions):
            mine = found[found[:, 0] == k]
            tally.add_image(rows[rows[:, 0] == k, 2:], rows[rows[:, 0] == k, 1] > 0, mine[:, 2:], mine[:, 1],
                            0.5, BoxFilter())
        aps.append(average_precision(*tally.curve()[:2], mode))
    return aps


@pytest.mark.parametrize("mode", ["sample", "integrate"])
@pytest.mark.parametrize("seed", range(8))
def test_average_precision_equals_taos_kitti_metric(seed, mode):
    KITTIMetric = tao_modules()[3]
    truth, predictions = detections_and_truth(seed)
    _, theirs = KITTIMetric(n_classes=4, average_precision_mode=mode)(truth, predictions, verbose=False)
    assert np.allclose(our_aps(truth, predictions, mode), theirs[1:], atol=1e-6, rtol=0)


def test_a_detection_of_an_excluded_ground_truth_box_is_neither_right_nor_wrong():
    tally = ClassTally()
    truth = np.array([[0, 0, 100, 100], [200, 0, 205, 8.0]])  # the second is below the minimum height
    found = np.array([[0, 0, 100, 100], [200, 0, 205, 8.0]])
    tally.add_image(truth, np.zeros(2, bool), found, np.array([0.9, 0.8]), 0.5, BoxFilter(minimum_height=10))
    recall, precision, _ = tally.curve()
    assert tally.positives == 1 and recall.tolist() == [1.0] and precision.tolist() == [1.0]


def test_each_class_matches_at_its_own_overlap():
    truth, found = np.array([[0, 0, 100, 100.0]]), np.array([[0, 0, 100, 60.0]])  # IoU 0.6
    strict, loose = ClassTally(), ClassTally()
    strict.add_image(truth, np.zeros(1, bool), found, np.array([0.9]), 0.7, BoxFilter())
    loose.add_image(truth, np.zeros(1, bool), found, np.array([0.9]), 0.5, BoxFilter())
    assert average_precision(*strict.curve()[:2], "sample") == 0.0
    assert average_precision(*loose.curve()[:2], "sample") == 1.0


def test_the_evaluation_config_is_read_from_the_spec(tmp_path):
    bundled_sample.write_spec(tmp_path / "spec.txt", 624, 192, 8)
    text = (tmp_path / "spec.txt").read_text().replace("precision_mode: SAMPLE", "precision_mode: INTEGRATE")
    config = evaluation_config(Spec(text))
    assert config.mode == "integrate" and config.overlap == {name: 0.5 for name in CLASSES}
    assert config.filter_of("car") == BoxFilter(0, 9999, 0, 9999)


def test_an_occluded_object_is_difficult_neither_found_nor_missed(tmp_path):
    from stages.detectnet_v2.evaluation import Sample, evaluation_setup, truth_of
    bundled_sample.write_spec(tmp_path / "spec.txt", 624, 192, 8)
    setup = evaluation_setup(Spec.load(tmp_path / "spec.txt"), 624, 192)
    (tmp_path / "000000.txt").write_text("car 0.00 0 0 10 10 50 40 0 0 0 0 0 0 0\n"
                                        "car 0.00 2 0 60 10 90 40 0 0 0 0 0 0 0\n"
                                        "van 0.00 0 0 60 10 90 40 0 0 0 0 0 0 0\n")  # van: not mapped
    boxes, difficult = truth_of(Sample(tmp_path / "000000.png", tmp_path / "000000.txt"), setup)["car"]
    assert boxes.tolist() == [[10, 10, 50, 40], [60, 10, 90, 40]] and difficult.tolist() == [False, True]
    tally = ClassTally()
    tally.add_image(boxes, difficult, np.zeros((0, 4)), np.zeros(0), 0.5, BoxFilter())
    assert tally.positives == 1  # the occluded car is not missed
