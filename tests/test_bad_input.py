"""The bad-input catalogue: each case runs a real stage entry point on a project that has already
been built, and checks the one-paragraph error that names the culprit, the non-zero exit, and that
no output was created or changed."""
from __future__ import annotations

import hashlib
import os
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.commands import run
from helpers.paths import ROOT
from helpers.projects import set_params
from fake_trtexec import install as install_trtexec
from stages.formats.tensorfile import describe
from stages.pipeline.layout import CALIBRATION_CACHE, ENGINE_DIR, RESOLVED_SPEC, TENSORFILE

OUTPUTS = ("artifacts", "data", "models", "metrics")


@pytest.fixture
def project(project_copy):
    return project_copy


def snapshot(project):
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in OUTPUTS for p in sorted((project / top).rglob("*")) if p.is_file()}


def fails(project, stage, *expected, preexec_fn=None, env=None):
    before = snapshot(project)
    result = run([sys.executable, "-m", f"stages.{stage}", "--params", "params.yaml"], project, check=False,
                 preexec_fn=preexec_fn, env=env)
    assert result.returncode != 0, result.stdout + result.stderr
    message = result.stderr.strip()
    assert "Traceback" not in message, message
    assert "\n\n" not in message, "the error is one paragraph"
    for text in expected:
        assert text in message, message
    assert snapshot(project) == before, "an output was created or changed"
    return message


def test_syntax_error_in_the_code_names_the_file_and_line(project):
    with (project / "stages/open_backend/engines.py").open("a") as source:
        source.write("\ndef broken(:\n")
    lines = (project / "stages/open_backend/engines.py").read_text().count("\n")
    fails(project, "code", f"stages/open_backend/engines.py:{lines}: invalid syntax", "its imports cannot be read")


def test_malformed_spec(project):
    (project / "bad_spec.txt").write_text("dataset_config {\n  data_sources {\n    image_directory_path: \n")
    set_params(project, dataset__spec="bad_spec.txt")
    fails(project, "calibration_tensorfile", "bad_spec.txt:4:1", "expected a value for field 'image_directory_path'")


def test_missing_spec(project):
    set_params(project, dataset__spec="specs/nope.txt")
    fails(project, "calibration_tensorfile", "cannot read spec", "specs/nope.txt")


def test_override_of_a_field_path_that_does_not_exist(project):
    set_params(project, spec__set={"training_config": {"batch_size_per_gpuu": 4}})
    fails(project, "calibration_tensorfile", "field path 'training_config.batch_size_per_gpuu' does not exist",
          "batch_size_per_gpu")


def test_reference_mapped_to_a_path_that_does_not_exist(project):
    set_params(project, dataset__references={"/workspace/tao-experiments/data": "data/moved",
                                          "/workspace/tao-experiments/detectnet_v2": "models/sample"})
    fails(project, "calibration_tensorfile", "dataset_config.data_sources[0].image_directory_path",
          "'data/moved/training': no such directory")


def test_spec_still_pointing_at_an_unmapped_container_path(project):
    set_params(project, dataset__references={"/workspace/tao-experiments/data": "data/sample"})
    fails(project, "calibration_tensorfile", "model_config.pretrained_model_file",
          "still under the container prefix '/workspace'")


def test_empty_image_directory(project):
    for split in ("training", "validation"):
        (project / "empty" / split).mkdir(parents=True)
    set_params(project, dataset__references={"/workspace/tao-experiments/data": "empty",
                                          "/workspace/tao-experiments/detectnet_v2": "models/sample"})
    fails(project, "calibration_tensorfile", f"image directory {project}/empty/training holds no .png images")


def test_corrupt_image_file(project):
    (project / "data/sample/training/image_2/000005.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    fails(project, "calibration_tensorfile", "cannot read image", "000005.png")


def test_grayscale_image_is_converted_as_tao_does(project):
    path = project / "data/sample/training/image_2/000002.png"
    Image.fromarray(np.full((120, 320), 90, np.uint8), "L").save(path)
    run([sys.executable, "-m", "stages.calibration_tensorfile", "--params", "params.yaml"], project)
    assert describe(project / TENSORFILE)[1] == (8, 3, 64, 160)


def test_model_file_missing(project):
    set_params(project, model__file="models/none.onnx")
    fails(project, "export", "model file", "models/none.onnx does not exist")


def test_model_file_not_onnx(project):
    (project / "models/model.tlt").write_bytes(b"\x00\x01 an encrypted TAO model, not ONNX")
    set_params(project, model__file="models/model.tlt")
    fails(project, "export", "models/model.tlt is not an ONNX model")


def test_model_input_contradicting_the_spec(project):
    set_params(project, spec__set={"training_config": {"batch_size_per_gpu": 8},
                                   "augmentation_config": {"preprocessing": {"output_image_width": 320}}})
    run([sys.executable, "-m", "stages.calibration_tensorfile", "--params", "params.yaml"], project)
    fails(project, "export", "takes input (C,H,W)=(3, 64, 160)", "preprocesses images to (3, 64, 320)")


@pytest.mark.parametrize("key, value, expected", [
    ("export__batch_size", 0, "config key export.batch_size must be a positive integer, got 0"),
    ("calibration__max_batches", -2, "config key calibration.max_batches must be a positive integer, got -2"),
    ("convert__max_batch_size", "eight", "config key convert.max_batch_size"),
    ("export__data_type", "int4", "config key export.data_type is 'int4'"),
    ("backend__image", "nvcr.io/x", "config key backend.image is not read by backend open"),
    ("convert__opt_batch_size", 16, "convert.min_batch_size <= opt_batch_size <= max_batch_size must hold"),
])
def test_invalid_config_values_name_the_key(project, key, value, expected):
    set_params(project, **{key: value})
    fails(project, "export", expected)


def test_spec_batch_size_zero(project):
    set_params(project, spec__set={"training_config": {"batch_size_per_gpu": 0}})
    fails(project, "calibration_tensorfile", "training_config.batch_size_per_gpu is 0")


def test_unknown_group_option_through_dvc(project):
    before = snapshot(project)
    result = run(["dvc", "exp", "run", "-S", "export=int9"], project, check=False)
    assert result.returncode != 0
    assert "export/int9" in result.stdout + result.stderr
    assert snapshot(project) == before


def test_max_batches_beyond_the_data_writes_what_the_data_holds(project):
    set_params(project, calibration__max_batches=100)
    result = run([sys.executable, "-m", "stages.calibration_tensorfile", "--params", "params.yaml"], project)
    assert "calibration.max_batches is 100 but the data holds 3 full batches of 8: writing 3" in result.stderr
    assert describe(project / TENSORFILE)[0] == 3


def test_int8_without_any_calibration_source(project):
    set_params(project, export__cal_source=None)
    fails(project, "export", "export.cal_source", "random data")


def test_int8_with_a_calibration_image_dir_that_does_not_exist(project):
    set_params(project, export__cal_source="image_dir", export__cal_image_dir="data/no_such_dir")
    fails(project, "export", "image directory", "data/no_such_dir does not exist")


def on_tensorrt_10_implicit(project):
    """The project set to build with TensorRT 10's Python API (the stand-in) on the implicit route, which
    reads the calibration cache; the platform probed as `dvc repro` would."""
    set_params(project, convert__engine="tensorrt", convert__quantization="implicit")
    env = {"PYTHONPATH": str(ROOT / "tests" / "fake_tensorrt" / "10.3.0")}
    run([sys.executable, "-m", "stages.platform", "--params", "params.yaml"], project, env=env)
    return env


def test_a_calibration_cache_of_another_model_stops_the_implicit_route(project):
    env = on_tensorrt_10_implicit(project)
    (project / CALIBRATION_CACHE).write_text("TRT-8601-EntropyCalibration2\nblock_7z/Relu: 3c010a14\n")
    fails(project, "convert", "calibration.bin: scales none of the", "calibration cache of another model", env=env)


def test_unparsable_calibration_cache(project):
    env = on_tensorrt_10_implicit(project)
    cache = project / CALIBRATION_CACHE
    lines = cache.read_text().splitlines()
    lines[3] = "this is not a cache line"
    cache.write_text("\n".join(lines) + "\n")
    fails(project, "convert", "calibration.bin:4: expected 'TENSOR_NAME: 8 hex digits'", env=env)


def test_file_size_limit_hit_while_writing(project):
    def limit():  # like `ulimit -f 2048` (KiB): the tensorfile cannot be written whole
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
    fails(project, "calibration_tensorfile", "calibration", "File too large", preexec_fn=limit)


# ----------------------------------------------------------------- evaluate

VALIDATION = "data/sample/validation"


def test_validation_images_without_their_label_directory(project):
    (project / VALIDATION / "label_2").rename(project / "labels_elsewhere")
    fails(project, "evaluate", "validation/label_2 are not a directory", "evaluate.label_dir")


def test_a_label_line_that_is_not_kitti_names_its_file_and_line(project):
    label = project / VALIDATION / "label_2/000003.txt"
    label.write_text(label.read_text() + "car 12 40\n")
    lines = label.read_text().count("\n")
    fails(project, "evaluate", f"000003.txt:{lines}: a KITTI label needs at least 8 fields")


def test_a_validation_image_without_its_label_file(project):
    (project / VALIDATION / "label_2/000005.txt").unlink()
    fails(project, "evaluate", "1 validation image(s)", "have no label file", "000005.png")


def spec_edit(project, old: str, new: str) -> None:
    spec = project / RESOLVED_SPEC
    text = spec.read_text()
    start = text.index("postprocessing_config")
    spec.write_text(text[:start] + text[start:].replace(old, new, 1))


def test_a_clustering_entry_for_a_class_that_is_not_a_target(project):
    spec_edit(project, 'key: "pedestrian"', 'key: "truck"')
    fails(project, "evaluate", "spec.txt:", "is for 'truck', which is not a target class")


def test_a_target_class_without_clustering_and_no_default(project):
    spec_edit(project, 'key: "pedestrian"', 'key: "cyclist"')
    fails(project, "evaluate", "no entry for 'pedestrian' and no 'default' entry")


def test_a_tensorrt_engine_the_open_backend_cannot_run(project):
    engine = project / ENGINE_DIR
    (engine / "model.onnx").rename(engine / "model.engine")
    set_params(project, convert__engine="tensorrt")
    run([sys.executable, "-m", "stages.platform", "--params", "params.yaml"], project)  # as `dvc repro` would
    fails(project, "evaluate", "model.engine is a TensorRT engine", "onnxruntime engines only")


def test_an_engine_directory_without_the_engine_the_config_names(project):
    # nothing guesses the file from what lies in artifacts/engine: convert.engine names it
    engine = project / ENGINE_DIR
    (engine / "model.onnx").rename(engine / "model.engine")
    fails(project, "evaluate", "artifacts/engine/model.onnx does not exist", "run the convert stage first")


def test_a_tensorrt_engine_asked_for_where_tensorrt_is_missing(project):
    import importlib.util
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    set_params(project, convert__engine="tensorrt")
    run([sys.executable, "-m", "stages.platform", "--params", "params.yaml"], project)  # as `dvc repro` would
    fails(project, "convert", "convert.engine is tensorrt, but TensorRT cannot build here",
          "-S convert.engine=onnxruntime")


def test_trtexec_asked_for_where_none_is_on_path(project, tmp_path):
    set_params(project, convert__engine="trtexec")
    env = {"PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                   if not (Path(p) / "trtexec").exists())}
    run([sys.executable, "-m", "stages.platform", "--params", "params.yaml"], project, env=env)
    fails(project, "convert", "convert.engine is trtexec, but no trtexec is on PATH", "-S convert.engine=tensorrt",
          env=env)


def test_implicit_quantization_on_tensorrt_11_names_the_version_and_the_explicit_route(project, tmp_path):
    set_params(project, convert__engine="trtexec", convert__quantization="implicit")
    install_trtexec(tmp_path / "bin", "11.4.0")
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    run([sys.executable, "-m", "stages.platform", "--params", "params.yaml"], project, env=env)
    fails(project, "convert", "TensorRT 11.4.0 removed implicit quantization", "-S convert.quantization=explicit",
          env=env)


# ----------------------------------------------------------------- the same under `dvc exp run`: nothing lost

@pytest.fixture(scope="module")
def committed(built_project, tmp_path_factory):
    """The built project with its dvc.lock committed: the baseline `dvc exp run` starts from."""
    import shutil
    project = tmp_path_factory.mktemp("committed") / "project"
    shutil.copytree(built_project, project, symlinks=True)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "built"], project)
    return project


@pytest.fixture
def repo(committed, tmp_path):
    import shutil
    copy = tmp_path / "project"
    shutil.copytree(committed, copy, symlinks=True)
    return copy


def refused_by_dvc(project, overrides, *expected):
    """`dvc exp run -S ...` exits non-zero with the paragraph naming the fault, before DVC deleted any
    output: every output is where it was, and `dvc status` lists nothing deleted."""
    import json
    before = snapshot(project)
    result = run(["dvc", "exp", "run", *(a for o in overrides for a in ("-S", o))], project, check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [message] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    for text in expected:
        assert text in message, message
    assert snapshot(project) == before, "an output was deleted or changed"
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    changed_outs = [change["changed outs"] for entries in status.values() for change in entries
                    if isinstance(change, dict) and "changed outs" in change]
    assert changed_outs == [], status
    return message


def test_after_a_refused_experiment_git_checkout_of_params_yaml_is_the_way_back(repo):
    # the docs' advice (how-to/compare-experiments.md): DVC leaves the failed values in params.yaml, and `dvc status` shows them
    import json
    refused_by_dvc(repo, ["convert.max_batch_size=-2"], "convert.max_batch_size must be a positive integer")
    assert "max_batch_size: -2" in (repo / "params.yaml").read_text()
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    assert status["validate"][0]["changed deps"]["params.yaml"] == {"convert": "modified"}, status
    run(["git", "checkout", "params.yaml"], repo)
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    assert status.get("validate") == ["always changed"], status  # no changed dependency any more


@pytest.mark.parametrize("override, expected", [
    ("convert.max_batch_size=-2", "config key convert.max_batch_size must be a positive integer, got -2"),
    ("+convert.max_batchsize=4", "config key convert.max_batchsize: Key 'max_batchsize' not in 'ConvertSection'; "
                                 "did you mean `max_batch_size`?"),
    ("convert.opt_batch_size=16", "convert.min_batch_size <= opt_batch_size <= max_batch_size must hold"),
    ("+backend.image=x", "config key backend.image is not read by backend open"),
    ("model.file=models/mine.onnx", "config key model.file names models/mine.onnx, which does not exist"),
    ("dataset.classes=[car,cyclist]", "dataset.classes is ['car', 'cyclist'], but the spec data/sample/spec.txt "
                                      "trains cost_function_config.target_classes ['car', 'cyclist', 'pedestrian']"),
])
def test_a_bad_parameter_stops_dvc_before_any_output_is_deleted(repo, override, expected):
    refused_by_dvc(repo, [override], expected)


def test_an_experiment_file_whose_package_header_is_not_its_first_line(repo):
    # as the README's example once was: Hydra reads `# @package` only before any other line, so the
    # file is composed under `experiment:`, a key no stage reads
    (repo / "conf/experiment/mine.yaml").write_text("# conf/experiment/mine.yaml\n# @package _global_\n"
                                                    "export:\n  batch_size: 4\n")
    refused_by_dvc(repo, ["experiment=mine"], "config key experiment",
                   "`# @package _global_` is its first line")


def test_a_model_with_other_classes_than_the_spec_is_refused_with_both_sides(repo):
    from stages import bundled_sample
    bundled_sample.build_model(repo / "models/two_classes.onnx", 160, 64, 2, 8)
    refused_by_dvc(repo, ["model.file=models/two_classes.onnx"],
                   "model.file models/two_classes.onnx has 2 coverage channels, but the spec data/sample/spec.txt "
                   "has 3 classes ['car', 'cyclist', 'pedestrian']")
