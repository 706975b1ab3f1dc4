"""The verdict on the data users have, through real DVC: an edited spec or label folder is checked again
before any output is deleted, a class the labels never name stops the run, the two labels.txt agree, and a
dataset the size of NVIDIA's LPDNet (24 training, 16 validation images, 1 class, a TAO-shaped model at
640x480) gets an int8 engine that passes with the defaults."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import pytest

from helpers.commands import run
from helpers.projects import SMALL_SAMPLE, make_project
from stages.pipeline.layout import TRITON_DIR

MINE = """\
# @package _global_
dataset:
  root: data/mine
  spec: data/mine/spec.txt
  references:
    /workspace/tao-experiments/data: data/mine
    /workspace/tao-experiments/detectnet_v2: models/mine
model:
  root: models/mine
  file: models/mine/detectnet_v2.onnx
"""


@pytest.fixture(scope="module")
def mine(tmp_path_factory):
    """The small sample, built, then copied to data/mine and models/mine as a user's own data, with an
    experiment that points at them, run once (it passes)."""
    project = make_project(tmp_path_factory.mktemp("mine") / "project", SMALL_SAMPLE)
    run(["dvc", "repro", "-q"], project)
    shutil.copytree(project / "data/sample", project / "data/mine")
    shutil.copytree(project / "models/sample", project / "models/mine")
    (project / "conf/experiment/mine.yaml").write_text(MINE)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "my data"], project)
    run(["dvc", "exp", "run", "-S", "experiment=mine"], project)
    return project


@pytest.fixture
def own(mine, tmp_path):
    return shutil.copytree(mine, tmp_path / "project", symlinks=True)


def outputs(project) -> dict[str, bytes]:
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted((project / "artifacts").rglob("*"))
            if p.is_file() and "code" not in p.parts}


def refused(project, *expected: str) -> str:
    """`dvc exp run -S experiment=mine` exits non-zero at validate, naming the fault, with every output kept."""
    before = outputs(project)
    result = run(["dvc", "exp", "run", "-S", "experiment=mine"], project, check=False)
    assert result.returncode != 0, result.stderr
    [message] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    for text in expected:
        assert text in message, message
    assert "Running stage 'calibration_tensorfile'" not in result.stdout
    assert outputs(project) == before, "an output was deleted or changed"
    return message


def test_a_spec_edited_after_a_good_run_is_checked_again_before_any_output_is_deleted(own):
    spec = own / "data/mine/spec.txt"
    text = spec.read_text()
    car, pedestrian = 'name: "car"', 'name: "pedestrian"'
    first, third = text.index(car), text.index(pedestrian)
    swapped = text[:first] + pedestrian + text[first + len(car):third] + car + text[third + len(pedestrian):]
    assert swapped != text and swapped.count('name: "car"') == text.count('name: "car"')
    spec.write_text(swapped)
    refused(own, "dataset.classes is ['car', 'cyclist', 'pedestrian'], but the spec data/mine/spec.txt trains "
                 "cost_function_config.target_classes ['pedestrian', 'cyclist', 'car']")


def test_a_spec_edited_to_another_input_size_than_the_models_is_refused_naming_both(own):
    spec = own / "data/mine/spec.txt"
    text = spec.read_text()
    assert "output_image_width: 160" in text
    spec.write_text(text.replace("output_image_width: 160", "output_image_width: 320"))
    refused(own, "model.file models/mine/detectnet_v2.onnx takes input (C,H,W)=(3, 64, 160), but the spec "
                 "data/mine/spec.txt preprocesses images to (3, 64, 320)")


def test_a_class_the_validation_labels_never_name_stops_the_run_naming_it_the_folder_and_what_they_hold(own):
    labels = own / "data/mine/validation/label_2"
    for label in labels.glob("*.txt"):
        label.write_text(label.read_text().replace("Pedestrian ", "person ").replace("pedestrian ", "person "))
    refused(own, "the spec trains pedestrian, but the validation labels in data/mine/validation/label_2 "
                           "hold no object of it (they hold: ", "person ")


def test_a_validation_set_with_no_labelled_object_at_all_stops_the_run(own):
    for label in (own / "data/mine/validation/label_2").glob("*.txt"):
        label.write_text("")
    refused(own, "the validation labels in data/mine/validation/label_2 hold no object at all (8 label file(s))")


def test_evaluate_run_by_hand_refuses_the_same_labels_and_says_once_what_it_ignores(own):
    labels = own / "data/mine/validation/label_2"
    for label in labels.glob("*.txt"):
        label.write_text(label.read_text() + "DontCare -1 -1 -10 1 1 5 5 -1 -1 -1 -1000 -1000 -1000 -10\n")
    result = run([sys.executable, "-m", "stages.evaluate", "--params", "params.yaml"], own)
    ignored = [line for line in result.stderr.splitlines() if "classes the spec does not train" in line]
    assert len(ignored) == 1 and "DontCare 8" in ignored[0]
    for label in labels.glob("*.txt"):
        label.write_text(label.read_text().replace("Car ", "auto ").replace("car ", "auto "))
    result = run([sys.executable, "-m", "stages.evaluate", "--params", "params.yaml"], own, check=False)
    assert result.returncode == 1 and "the spec trains car, but the validation labels in data/mine/validation/" \
                                      "label_2 hold no object of it" in result.stderr


def test_deepstreams_and_tritons_labels_txt_are_the_same_classes_in_the_same_order(mine):
    deepstream = (mine / "artifacts/export/labels.txt").read_text()
    triton = next((mine / TRITON_DIR).rglob("labels.txt")).read_text()
    assert deepstream == triton == "car\ncyclist\npedestrian\n"


def test_the_evaluation_reports_the_interval_the_agreement_and_the_objects(mine):
    report = json.loads((mine / "metrics/evaluate.json").read_text())
    assert report["mAP_drop_interval"] == [0.0, 0.0] and report["gate"] == "off"  # SMALL_SAMPLE: no gate
    assert report["agreement"]["F1"] == 1.0  # the fp32 engine agrees with itself
    assert report["agreement"]["calibration"]["images"] == 24  # every training image: SMALL_SAMPLE has 24
    assert sum(report["objects"].values()) > 0


def test_a_dataset_the_size_of_lpdnets_gets_an_int8_engine_that_passes_with_the_defaults(tmp_path):
    """24 training and 16 validation images, 1 class, a TAO 5-shaped model at 640x480: auto selects on all 24
    (the default asks for 32) by agreement with fp32, and the gate, which cannot resolve 0.02 on these labels,
    decides by the agreement."""
    import tao_family

    member = dataclasses.replace(tao_family.TAO5, name="lpd_sized", train_images=24, val_images=16,
                                 calibration_method="auto")
    project = make_project(tmp_path / "project", [o for o in SMALL_SAMPLE if o.split("=")[0] not in
                                                  ("calibration.selection_images", "evaluate.max_map_drop")])
    tao_family.write_member(project, member)
    experiment = project / "conf/experiment/lpd_sized.yaml"
    experiment.write_text(experiment.read_text().replace("evaluate: {max_map_drop: 0.02, on_gate_failure: record}\n",
                                                         ""))  # the defaults: 0.02, stop, inconclusive fails
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "an LPDNet-sized model"], project)
    result = run(["dvc", "exp", "run", "-S", "experiment=lpd_sized", "-S", "export=int8"], project)
    assert "calibration.selection_images is 32, but the spec's training images hold 24 (outside the validation " \
           "set): auto selects on all 24" in result.stderr
    calibration = json.loads((project / "metrics/export.json").read_text())["calibration"]
    assert calibration["images"] == 24 == calibration["images_available"]
    chosen = calibration["chosen"]
    tied = [m for m, score in calibration["selection_mAP"].items() if m != "fp32" and
            score == calibration["selection_mAP"][chosen]]
    assert all(calibration["selection_agreement"][chosen] >= calibration["selection_agreement"][m] for m in tied)
    report = json.loads((project / "metrics/evaluate.json").read_text())
    assert report["gate"] == "pass" and report["mAP_drop"] <= 0.02 and report["agreement"]["F1"] >= 0.95
