"""The evaluate stage through its real entry point and real DVC: mAP per class of the engine and of the
fp32 model as DVC metrics with stable keys, the gate, and TAO's own evaluation for the TAO backends."""
from __future__ import annotations

import json
import sys

import pytest
import yaml

from helpers.commands import run
from helpers.paths import ROOT
from helpers.projects import project_for, set_params
from helpers.tao import env_for, records
from stages import bundled_sample
from stages.pipeline.layout import (ENGINE_DIR, EVALUATE_METRICS_FILE, EVALUATE_REPORT, EVALUATION_DIR,
                                    EXPORTED_MODEL, EXPORT_REPORT, RESOLVED_SPEC, engine_file)


def stage(project, name, check=True, env=None):
    return run([sys.executable, "-m", f"stages.{name}", "--params", "params.yaml"], project, check=check, env=env)


def metrics(project) -> dict:
    return json.loads((project / EVALUATE_REPORT).read_text())


def test_the_metrics_have_stable_keys_whatever_the_params(built_project):
    found = metrics(built_project)
    assert set(found) == {"engine", "reference", "mAP_drop", "mAP_drop_interval", "gate", "gate_reason", "resolution",
                          "agreement", "images", "objects"}
    assert set(found["agreement"]) == {"F1", "validation", "calibration"}
    assert set(found["agreement"]["validation"]["per_class"]) == set(found["objects"]) == set(bundled_sample.CLASSES)
    assert set(found["engine"]) == {"precision", "mAP", "AP"} and set(found["reference"]) == {"mAP", "AP"}
    assert list(found["engine"]["AP"]) == list(found["reference"]["AP"]) == list(bundled_sample.CLASSES)


def test_the_metrics_say_what_was_evaluated(built_project):
    found = metrics(built_project)
    assert found["engine"]["precision"] == "int8" and found["images"] == 8  # SMALL_SAMPLE's validation set
    for side in ("engine", "reference"):
        aps = found[side]["AP"].values()
        assert all(0 <= ap <= 1 for ap in aps)
        assert found[side]["mAP"] == pytest.approx(sum(aps) / len(aps), abs=1e-6)
    assert found["mAP_drop"] == pytest.approx(found["reference"]["mAP"] - found["engine"]["mAP"], abs=2e-6)


def test_dvc_shows_the_evaluation_as_metrics(built_project):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], built_project).stdout)
    text = json.dumps(shown)
    assert EVALUATE_METRICS_FILE in text and "mAP_drop" in text and '"gate"' in text


def install_engine(project, detects: bool) -> None:
    """Replace the deployed engine with the exported fp32 model itself (detects=True: the same detections,
    a drop of exactly 0) or with that model made blind (its coverage head's bias at -1000: no cell is
    covered, no detection, mAP exactly 0). Either verdict then stands whatever the CPU: the fp32 model's
    own mAP on this set is 0.13-0.15 on the code paths measured (helpers.projects.SMALL_SAMPLE), 6x the gate."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(project / EXPORTED_MODEL)
    if not detects:
        [head] = [n for n in model.graph.node if n.op_type == "Conv" and n.output[0] == "output_cov/BiasAdd"]
        bias = next(i for i in model.graph.initializer if i.name == head.input[2])
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) * 0 - 1000, bias.name))
    onnx.save(model, project / engine_file("open", "onnxruntime"))


def test_an_engine_that_lost_its_accuracy_fails_the_gate_with_the_figures(project_copy):
    install_engine(project_copy, detects=False)
    set_params(project_copy, evaluate__max_map_drop=0.02)
    result = stage(project_copy, "evaluate", check=False)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    found = metrics(project_copy)  # written all the same, so the numbers are visible
    assert found["engine"]["mAP"] == 0 and found["mAP_drop"] == found["reference"]["mAP"] > 0.02
    assert found["gate"] == "fail" and found["agreement"]["F1"] == 0.0  # it finds none of fp32's boxes
    low, high = found["mAP_drop_interval"]
    assert 0.02 < low <= found["mAP_drop"] <= high
    assert message.startswith("error: evaluate: the gate failed: the int8 engine's mAP is ")
    assert f"{found['engine']['mAP']:.4f}" in message and f"{found['reference']['mAP']:.4f}" in message
    assert f"the drop {found['mAP_drop']:.4f} has a 95% interval [{low:.4f}, {high:.4f}], wholly above " \
           "evaluate.max_map_drop 0.02" in message
    assert "changed most" in message and EVALUATE_REPORT in message
    # the advice is what the export's auto calibration measured, not a guess
    calibration = json.loads((project_copy / EXPORT_REPORT).read_text())["calibration"]
    assert f"On {calibration['images']} selection images (fp32 mAP " in message
    assert f"auto kept {calibration['chosen']} with none in higher precision" in message
    for method, f1 in calibration["selection_agreement"].items():
        assert f"{method} agrees {f1:.2f} with fp32" in message


def test_an_engine_that_detects_what_the_model_detects_passes_the_gate(project_copy):
    install_engine(project_copy, detects=True)
    set_params(project_copy, evaluate__max_map_drop=0.02)
    stage(project_copy, "evaluate")
    found = metrics(project_copy)
    assert found["mAP_drop"] == 0 and found["engine"]["AP"] == found["reference"]["AP"]
    assert found["mAP_drop_interval"] == [0.0, 0.0] and found["agreement"]["F1"] == 1.0
    assert found["gate"] == "pass"


def test_the_gate_turned_off_lets_any_drop_pass(project_copy):
    install_engine(project_copy, detects=False)
    set_params(project_copy, evaluate__max_map_drop=None)
    stage(project_copy, "evaluate")
    assert metrics(project_copy)["mAP_drop"] > 0.02 and metrics(project_copy)["gate"] == "off"


def test_a_failed_gate_can_be_recorded_instead_of_stopping_for_a_comparison(project_copy):
    install_engine(project_copy, detects=False)
    set_params(project_copy, evaluate__max_map_drop=0.02, evaluate__on_gate_failure="record")
    result = stage(project_copy, "evaluate")
    found = metrics(project_copy)
    assert found["gate"] == "fail" and found["engine"]["mAP"] == 0 and found["mAP_drop"] > 0.02
    assert "gate fail, recorded (evaluate.on_gate_failure=record)" in result.stderr
    assert "changed most" in result.stderr


def test_the_validation_set_can_be_named_in_the_config(project_copy):
    # the training images, which the model was fitted on: another set, another figure
    set_params(project_copy, evaluate__image_dir="data/sample/training/image_2",
               evaluate__label_dir="data/sample/training/label_2", evaluate__max_map_drop=None)
    stage(project_copy, "evaluate")
    assert metrics(project_copy)["images"] == 24


def test_an_invalid_gate_is_refused_by_config_key(project_copy):
    set_params(project_copy, evaluate__max_map_drop=1.5)
    result = stage(project_copy, "evaluate", check=False)
    assert result.returncode == 2 and "config key evaluate.max_map_drop must be between 0 and 1" in result.stderr


# ----------------------------------------------------------------- the TAO backends

def test_tao_backends_evaluate_the_engine_with_taos_own_command(tmp_path, fake_bin):
    env = env_for(fake_bin, tmp_path)
    project = project_for(tmp_path, "tao")
    for name in ("sample", "calibration_tensorfile", "export", "platform", "convert"):
        stage(project, name, env=env)
    stage(project, "evaluate", env={**env, "FAKE_TAO_AP": json.dumps({"car": 0.9, "cyclist": 0.7})})
    evaluate = [c["argv"] for c in records(tmp_path) if c["argv"][:1] == ["evaluate"]]
    assert len(evaluate) == 1
    argv = evaluate[0]
    assert argv[argv.index("-m") + 1] == str(project / engine_file("tao", "tensorrt"))
    assert argv[argv.index("-i") + 1] == str(project / "data/sample/validation/image_2")
    assert argv[argv.index("-l") + 1] == str(project / "data/sample/validation/label_2")
    assert argv[argv.index("-b") + 1] == "8" and argv[argv.index("-e") + 1].endswith("spec.txt")
    found = metrics(project)
    assert found["engine"]["AP"] == {"car": 0.9, "cyclist": 0.7, "pedestrian": 0.5}  # from TAO's results.json
    assert found["engine"]["precision"] == "int8" and 0 <= found["reference"]["mAP"] <= 1
    assert (project / "artifacts/evaluation/results.json").is_file()


def test_a_tao_evaluation_without_results_fails_clearly(tmp_path, fake_bin):
    env = env_for(fake_bin, tmp_path)
    project = project_for(tmp_path, "tao")
    for name in ("sample", "calibration_tensorfile", "export", "platform", "convert"):
        stage(project, name, env=env)
    result = stage(project, "evaluate", check=False, env={**env, "FAKE_TAO_FAIL": "detectnet_v2 evaluate"})
    assert result.returncode == 1 and "detectnet_v2 failed (exit 1)" in result.stderr
    assert not (project / EVALUATION_DIR).exists() and not (project / EVALUATE_REPORT).exists()


def test_dvc_yaml_runs_evaluate_on_what_it_reads():
    evaluate = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]
    assert "artifacts/params/evaluate.json" in evaluate["deps"] and "params" not in evaluate
    reads = {ENGINE_DIR, EXPORTED_MODEL, RESOLVED_SPEC, "${dataset.root}"}
    assert reads <= set(evaluate["deps"])
