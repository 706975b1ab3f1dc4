"""How many threads the stages' work runs on: one count (backend.workers, or the cores this process may
use) for decoding, calibration, post-processing and onnxruntime; a parallel evaluation is the serial one."""
from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from helpers.paths import ROOT
from stages import bundled_sample
from stages.compute import workers
from stages.compute.workers import allowed_cores, worker_count
from stages.detectnet_v2.evaluation import evaluate, evaluation_setup, validation_set
from stages.detectnet_v2.inference import OnnxRunner
from stages.pipeline.config import load
from stages.pipeline.errors import ConfigError
from stages.spec import Spec

WIDTH, HEIGHT = 160, 64


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    """12 labelled images and a model with random heads: boxes in most cells, clusters in every image."""
    folder = tmp_path_factory.mktemp("workers")
    bundled_sample.write_dataset(folder, {"validation": 12}, seed=5, size=(320, 120))
    bundled_sample.write_spec(folder / "spec.txt", WIDTH, HEIGHT, 4)
    bundled_sample.build_model(folder / "model.onnx", WIDTH, HEIGHT, base_width=4, seed=3, batch="N")
    model = onnx.load(folder / "model.onnx")  # heads that see objects of about 20 pixels in most cells
    for output, shift in (("output_cov/BiasAdd", 1.5), ("output_bbox/BiasAdd", 0.6)):
        [head] = [n for n in model.graph.node if n.op_type == "Conv" and n.output[0] == output]
        bias = next(i for i in model.graph.initializer if i.name == head.input[2])
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + shift, bias.name))
    onnx.save(model, folder / "model.onnx")
    setup = evaluation_setup(Spec.load(folder / "spec.txt"), WIDTH, HEIGHT)
    samples = validation_set(folder / "validation/image_2", folder / "validation/label_2")
    return setup, samples, OnnxRunner(folder / "model.onnx")


def test_a_parallel_evaluation_finds_the_serial_detections_in_the_same_order(validation):
    setup, samples, model = validation
    serial = evaluate({"model": model}, samples, setup, 4, workers=1)["model"]
    parallel = evaluate({"model": model}, samples, setup, 4, workers=2)["model"]
    found = sum(len(d[name].confidences) for d in serial.detections for name in setup.classes)
    assert found > 12  # something to compare
    assert len(parallel.detections) == len(serial.detections) == len(samples)
    for mine, theirs in zip(parallel.detections, serial.detections):
        for name in setup.classes:
            assert np.array_equal(mine[name].boxes, theirs[name].boxes)
            assert np.array_equal(mine[name].confidences, theirs[name].confidences)


def test_a_parallel_evaluation_gives_the_serial_average_precisions_to_the_last_digit(validation):
    setup, samples, model = validation
    models = {"model": model, "again": model}  # two models in flight at once, as evaluate runs engine and reference
    serial = {n: e.average_precisions() for n, e in evaluate(models, samples, setup, 4, workers=1).items()}
    parallel = {n: e.average_precisions() for n, e in evaluate(models, samples, setup, 4, workers=2).items()}
    assert parallel == serial and serial["model"] == serial["again"]


def test_by_default_every_core_the_process_may_use():
    assert worker_count() == worker_count(None) == allowed_cores() >= 1


def test_the_cores_are_those_the_process_may_run_on_not_the_hosts():
    """taskset, a container's cpuset and a batch scheduler set the affinity: one core allowed, one worker."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from stages.compute.workers import worker_count; print(worker_count())")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "1"


def test_more_workers_than_allowed_cores_are_clamped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="stages.workers"):
        assert worker_count(allowed_cores() + 7) == allowed_cores()
    assert f"backend.workers is {allowed_cores() + 7}, but this process may use {allowed_cores()} cores" in caplog.text


def test_one_worker_is_one_worker():
    assert worker_count(1) == 1


@pytest.mark.parametrize("requested", [0, -2, True, 1.5])
def test_a_count_below_one_or_not_a_count_is_refused(requested):
    with pytest.raises(ValueError, match=r"backend.workers is .*: give 1 or more threads, or null"):
        worker_count(requested)


@pytest.mark.parametrize("override", ["backend.workers=0", "backend.workers=-1"])
def test_the_config_refuses_workers_below_one_naming_the_key(override):
    with pytest.raises(ConfigError, match=r"config key backend.workers must be 1 or more .*; got -?\d"):
        load([override])


def test_onnxruntime_runs_on_the_configured_count_not_the_hosts_physical_cores(validation, monkeypatch):
    monkeypatch.setattr(workers, "_configured", 1)
    setup, samples, model = validation
    session = OnnxRunner(model.session._model_path).session
    assert session.get_session_options().intra_op_num_threads == 1
