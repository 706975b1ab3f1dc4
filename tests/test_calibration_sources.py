"""The three calibration sources of TAO export, and the validation set, through the real stages."""
from __future__ import annotations

import json

import sys

import onnx
import pytest

from helpers.commands import run
from helpers.projects import set_params
from stages.formats.calibration_cache import CALIBRATOR_NAMES, calibration_tensor_names, read_cache
from stages.formats.tensorfile import describe, read_batches
from stages.pipeline.layout import CALIBRATION_CACHE, EXPORTED_MODEL, EXPORT_REPORT, TENSORFILE


@pytest.fixture
def project(project_copy):
    return project_copy


def stage(project, name):
    return run([sys.executable, "-m", f"stages.{name}", "--params", "params.yaml"], project)


def tensors(project) -> int:
    """Tensors TensorRT would calibrate in the exported model: its input and every node output."""
    return len(calibration_tensor_names(onnx.load(project / EXPORTED_MODEL)))


def test_cache_from_an_image_directory(project):
    set_params(project, export__cal_source="image_dir", export__cal_image_dir="data/sample/validation/image_2")
    result = stage(project, "export")
    assert f"calibration cache: {tensors(project)} tensors from 1 batches" in result.stderr  # 8 validation images
    header, scales = read_cache(project / CALIBRATION_CACHE)
    chosen = json.loads((project / EXPORT_REPORT).read_text())["calibration"]["chosen"]
    assert header == f"TRT-8601-{CALIBRATOR_NAMES[chosen]}" and "input_1" in scales  # auto's choice


def test_cache_from_the_training_data(project):
    set_params(project, export__cal_source="training_data", export__batches=2)
    result = stage(project, "export")
    assert f"calibration cache: {tensors(project)} tensors from 2 batches" in result.stderr


def test_the_three_sources_give_different_caches(project):
    caches = {}
    image_dir = {"export__cal_image_dir": "data/sample/validation/image_2"}
    for source, extra in [("tensorfile", {}), ("image_dir", image_dir)]:
        set_params(project, export__cal_source=source, **extra)
        stage(project, "export")
        caches[source] = read_cache(project / CALIBRATION_CACHE)[1]
    assert caches["tensorfile"] != caches["image_dir"]


@pytest.mark.parametrize("method, header", [("entropy", "EntropyCalibration2"), ("minmax", "MinMaxCalibration"),
                                            ("percentile", "LegacyCalibration")])
def test_other_calibration_methods(project, method, header):
    set_params(project, backend__calibration_method=method)
    stage(project, "export")
    assert read_cache(project / CALIBRATION_CACHE)[0] == f"TRT-8601-{header}"


def test_tensorfile_from_the_validation_set(project):
    set_params(project, calibration__use_validation_set=True)
    stage(project, "calibration_tensorfile")
    assert describe(project / TENSORFILE) == (1, (8, 3, 64, 160))


def test_validation_set_from_tfrecords_folds_is_a_clear_error(project):
    spec = (project / "data/sample/spec.txt").read_text()
    start = spec.index("  validation_data_source: {")
    end = spec.index("  }\n", start) + 4
    (project / "fold_spec.txt").write_text(spec[:start] + "  validation_fold: 0\n" + spec[end:])
    set_params(project, dataset__spec="fold_spec.txt", calibration__use_validation_set=True)
    result = run([sys.executable, "-m", "stages.calibration_tensorfile", "--params", "params.yaml"], project,
                 check=False)
    assert result.returncode == 1
    assert "a TFRecords validation fold (dataset_config.validation_fold)" in result.stderr
    assert "use a TAO backend" in result.stderr


def test_tensorfile_batches_are_a_seeded_sample(project):
    first = next(read_batches(project / TENSORFILE))
    set_params(project, calibration__seed=1234)
    stage(project, "calibration_tensorfile")
    assert not (next(read_batches(project / TENSORFILE)) == first).all()
