"""The gate's evidence and verdict: the agreement of the engine's boxes with fp32's (no labels), the paired
bootstrap interval of the mAP drop, and the verdict from both against evaluate.max_map_drop."""
from __future__ import annotations

import numpy as np
import pytest

from stages.detectnet_v2 import bootstrap
from stages.detectnet_v2.agreement import agreement, matched_boxes
from stages.detectnet_v2.kitti_metric import BoxFilter, ClassTally, average_precision
from stages.detectnet_v2.postprocessing import Detections
from stages.detectnet_v2.verdict import Evidence, judge, resolution_words


def boxes(*rows, confidence=0.9):
    array = np.array(rows, float).reshape(-1, 4)
    return Detections(array, np.full(len(array), confidence))


# ----------------------------------------------------------------- agreement

def test_identical_detections_agree_fully():
    found = boxes([0, 0, 10, 10], [20, 20, 40, 40])
    report = agreement([{"car": found}], [{"car": found}], ["car"]).report()
    assert report["F1"] == report["precision"] == report["recall"] == 1.0
    assert report["boxes"] == {"engine": 2, "fp32": 2, "matched": 2}


def test_an_engine_that_finds_nothing_has_recall_and_f1_zero():
    report = agreement([{"car": Detections.none()}], [{"car": boxes([0, 0, 10, 10])}], ["car"]).report()
    assert report["recall"] == 0.0 and report["F1"] == 0.0


def test_boxes_match_at_iou_one_half_and_not_below():
    reference = boxes([0, 0, 10, 10])
    assert matched_boxes(boxes([0, 0, 10, 5]), reference).matched == 1  # IoU 0.5
    assert matched_boxes(boxes([0, 0, 10, 4.9]), reference).matched == 0
    assert matched_boxes(boxes([0, 0, 10, 10], [0, 0, 10, 10]), reference).matched == 1  # each fp32 box once


def test_every_pairs_iou_at_once_is_each_pairs_own_arithmetic_to_the_bit():
    from stages.detectnet_v2.kitti_metric import iou

    rng = np.random.default_rng(4)
    boxes, others = rng.uniform(0, 50, (7, 4)), rng.uniform(0, 50, (5, 4))
    boxes[:, 2:] += boxes[:, :2]
    others[:, 2:] += others[:, :2]

    def one(a, b):  # the pair alone, in Python floats (IEEE doubles, as numpy's)
        intersection = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
        return intersection / union if union > 0 else 0.0
    assert iou(boxes, others).tolist() == [[one(a, b) for b in others.tolist()] for a in boxes.tolist()]


def test_boxes_under_the_metrics_confidence_floor_do_not_count():
    counts = matched_boxes(boxes([0, 0, 10, 10], confidence=0.005), boxes([0, 0, 10, 10]))
    assert (counts.engine, counts.reference, counts.matched) == (0, 1, 0)


def test_a_class_neither_model_finds_agrees_and_images_rank_by_unmatched_boxes():
    one, two = boxes([0, 0, 10, 10]), boxes([0, 0, 10, 10], [50, 50, 60, 60])
    result = agreement([{"car": one}, {"car": one}, {"car": one}], [{"car": one}, {"car": two}, {"car": Detections.none()}],
                       ["car"])
    assert result.per_image == [0, 1, 1] and result.most_disagreeing(5) == [1, 2]
    assert agreement([{"car": Detections.none()}], [{"car": Detections.none()}], ["car"]).f1 == 1.0


# ----------------------------------------------------------------- the bootstrap

def random_tally(seed: int, images: int = 20, found: float = 1.0) -> ClassTally:
    """A class over `images` images: up to 3 objects each, detected with noise when found, and a false box."""
    rng = np.random.default_rng(seed)
    tally = ClassTally()
    for _ in range(images):
        corners = rng.uniform(0, 100, (rng.integers(0, 4), 2))
        truth = np.hstack([corners, corners + 20])
        detected = truth[rng.uniform(size=len(truth)) < found]
        predicted = np.vstack([detected + rng.normal(0, 2, detected.shape), rng.uniform(0, 100, (1, 4)) + [0, 0, 30, 30]])
        tally.add_image(truth, np.zeros(len(truth), bool), predicted, rng.uniform(0.05, 1, len(predicted)), 0.5,
                        BoxFilter())
    return tally


@pytest.mark.parametrize("mode", ["sample", "integrate"])
def test_a_resample_of_every_image_once_is_the_metrics_own_ap(mode):
    tally = random_tally(0)
    expected = average_precision(*tally.curve()[:2], mode)
    assert bootstrap.resampled_ap(tally, np.ones((2, 20)), mode) == pytest.approx([expected] * 2, abs=1e-12)


def test_an_image_drawn_twice_counts_as_two_copies_of_it():
    tally = random_tally(1, images=3)
    doubled = ClassTally()
    for index in (0, 0, 1, 2):
        doubled.confidences.append(tally.confidences[index])
        doubled.correct.append(tally.correct[index])
        doubled.image_positives.append(tally.image_positives[index])
    expected = average_precision(*doubled.curve()[:2], "sample")
    assert bootstrap.resampled_ap(tally, np.array([[2.0, 1.0, 1.0]]), "sample")[0] == pytest.approx(expected)


def test_the_same_model_twice_has_the_interval_zero_zero_and_a_seed_makes_it_reproducible():
    tally = random_tally(2)
    assert bootstrap.map_drop_interval({"car": tally}, {"car": tally}, ["car"], "sample") == (0.0, 0.0)
    worse = random_tally(2, found=0.6)
    first = bootstrap.map_drop_interval({"car": tally}, {"car": worse}, ["car"], "sample")
    assert first == bootstrap.map_drop_interval({"car": tally}, {"car": worse}, ["car"], "sample")


def test_an_engine_that_lost_most_objects_has_an_interval_wholly_above_zero():
    reference, engine = random_tally(3, images=40), random_tally(3, images=40, found=0.2)
    low, high = bootstrap.map_drop_interval({"car": reference}, {"car": engine}, ["car"], "sample")
    drop = average_precision(*reference.curve()[:2], "sample") - average_precision(*engine.curve()[:2], "sample")
    assert 0.2 < low <= drop <= high


def one_plate_each(found: list[bool]) -> ClassTally:
    """LPDNet's validation set: one labelled plate an image; the model finds it (a box on it) or not."""
    tally = ClassTally()
    for index, hit in enumerate(found):
        truth = np.array([[100.0, 100.0, 160.0, 130.0]])
        boxes = truth.copy() if hit else np.zeros((0, 4))
        tally.add_image(truth, np.zeros(1, bool), boxes, np.full(len(boxes), 0.5 + index / 100), 0.5, BoxFilter())
    return tally


def test_lpdnets_entropy_engine_finding_nothing_fails_on_the_interval_alone():
    """16 images, fp32 finds 6 of the 16 plates (AP 0.36 as measured on LPDNet), the entropy engine none."""
    reference = one_plate_each([True] * 6 + [False] * 10)
    engine = one_plate_each([False] * 16)
    assert average_precision(*reference.curve()[:2], "sample") == pytest.approx(0.3636, abs=1e-4)
    low, high = bootstrap.map_drop_interval({"plate": reference}, {"plate": engine}, ["plate"], "sample")
    assert 0.02 < low <= 0.3636 <= high
    judged = judge(Evidence(0.3636, 0.3636, (low, high), 0.0, 6, {"plate": 16}), 0.02, 0.9)
    assert judged.gate == "fail" and "too small to resolve" in judged.resolution


# ----------------------------------------------------------------- the verdict

def evidence(drop=0.0, interval=(0.0, 0.0), agreement_f1=1.0, objects=None, reference_map=0.5):
    return Evidence(drop, reference_map, interval, agreement_f1, 400, objects or {"car": 200})


def test_the_same_detections_pass_with_the_interval_zero_zero():
    assert judge(evidence(), 0.02, 0.9).gate == "pass"


def test_a_drop_clearly_inside_the_limit_on_every_resample_passes_whatever_the_agreement():
    assert judge(evidence(0.005, (-0.004, 0.012), agreement_f1=0.5), 0.02, 0.9).gate == "pass"


def test_an_interval_wholly_above_the_limit_fails_whatever_the_agreement():
    judged = judge(evidence(0.36, (0.18, 0.55), agreement_f1=0.99), 0.02, 0.9)
    assert judged.gate == "fail" and "wholly above evaluate.max_map_drop 0.02" in judged.reason


def test_an_interval_across_the_limit_passes_when_the_drop_is_within_and_the_boxes_agree():
    # the LPDNet-sized model's minmax engine: 16 images cannot resolve 0.02, 155 fp32 boxes agree at 0.958
    judged = judge(evidence(-0.014, (-0.073, 0.074), agreement_f1=0.958), 0.02, 0.9)
    assert judged.gate == "pass" and "the labels cannot tell" in judged.reason and "F1 0.958" in judged.reason


def test_an_interval_across_the_limit_fails_when_the_drop_is_above_and_the_boxes_disagree():
    # the TAO 4-shaped model's int8 engine: 0.092 lost on 16 images, interval [-0.021, 0.136], F1 0.873
    judged = judge(evidence(0.092, (-0.021, 0.136), agreement_f1=0.873), 0.02, 0.9)
    assert judged.gate == "fail" and "the drop is above it and" in judged.reason
    assert "below evaluate.min_agreement 0.9" in judged.reason


@pytest.mark.parametrize("drop, interval, agreement_f1", [
    (0.088, (0.002, 0.097), 0.940),  # the TAO 5-shaped model's entropy engine on 96 images: one 11-point step
    (0.031, (-0.022, 0.061), 0.966),  # the sample's auto int8 engine
    (0.012, (-0.036, 0.052), 0.71),
], ids=["one-recall-step", "drop-above", "disagreeing"])
def test_an_interval_across_the_limit_is_inconclusive_where_the_drop_and_the_agreement_differ(drop, interval,
                                                                                             agreement_f1):
    judged = judge(evidence(drop, interval, agreement_f1=agreement_f1), 0.02, 0.9)
    assert judged.gate == "inconclusive" and "labelled objects would narrow the interval" in judged.reason


def test_a_pass_never_has_a_drop_above_the_limit():
    for drop in np.linspace(-0.1, 0.2, 31):
        for width in (0.0, 0.01, 0.05, 0.2):
            for agreement_f1 in (0.0, 0.5, 0.89, 0.9, 1.0):
                judged = judge(evidence(drop, (drop - width, drop + width), agreement_f1=agreement_f1), 0.02, 0.9)
                assert judged.gate != "pass" or drop <= 0.02


def test_a_reference_that_finds_nothing_labelled_cannot_pass():
    judged = judge(evidence(reference_map=0.0), 0.02, 0.9)
    assert judged.gate == "inconclusive" and "mAP 0" in judged.reason


def test_no_limit_is_off_and_aps_alone_decide_by_the_point_drop():
    assert judge(evidence(0.5), None, 0.95).gate == "off"
    only_aps = Evidence(0.01, 0.5, None, None, 0, {"car": 200})
    assert judge(only_aps, 0.02, 0.9).gate == "pass" and "no interval" in judge(only_aps, 0.02, 0.9).reason


def test_sixteen_objects_of_one_class_cannot_resolve_a_limit_of_two_hundredths():
    words = resolution_words({"license_plate": 16}, 0.02)
    assert "16 labelled license_plate object(s)" in words and "about 0.062" in words
    assert "about 50 objects of each class would resolve it" in words
    assert resolution_words({"car": 40, "cyclist": 40, "pedestrian": 43}, 0.02) is None  # the sample's 32 images
