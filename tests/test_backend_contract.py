"""Every backend keeps one contract per step (pipeline/backends.py): `run(request) -> report`, a request
dataclass in and a report dataclass out, the same types for the open backend and the TAO runners."""
from __future__ import annotations

import importlib
import inspect
import typing

import pytest

from stages.pipeline import backends

CONTRACT = {
    "calibration_tensorfile": (backends.TensorfileRequest, backends.TensorfileReport),
    "export": (backends.ExportRequest, backends.ExportReport),
    "convert": (backends.ConvertRequest, backends.ConvertReport),
    "evaluate": (backends.EvaluateRequest, backends.EvaluateReport),
}


@pytest.mark.parametrize("package", sorted(set(backends.STEP_PACKAGES.values())))
@pytest.mark.parametrize("step", CONTRACT)
def test_each_backends_step_takes_the_steps_request_and_gives_its_report(package, step):
    run = importlib.import_module(f"stages.{package}.{step}").run
    hints = typing.get_type_hints(run)
    request, report = CONTRACT[step]
    assert list(inspect.signature(run).parameters) == ["request"]
    assert (hints["request"], hints["return"]) == (request, report)


def test_a_convert_report_has_one_shape_whether_or_not_the_engine_ran_here():
    built = backends.ConvertReport("int8", "tensorrt", 1234)
    assert built.as_dict() == {"precision": "int8", "engine": "tensorrt", "verified": False, "engine_size_bytes": 1234}
    verified = backends.ConvertReport("fp32", "onnxruntime", 99, {"images": 16, "latency_ms": {"batch_1": 1.0}})
    assert list(verified.as_dict()) == ["precision", "engine", "images", "latency_ms", "engine_size_bytes"]
    portable = backends.ConvertReport("fp16", "tensorrt_rtx", 7, runs_on_compute_capabilities=("8.6", "12.x"))
    assert portable.as_dict()["runs_on_compute_capabilities"] == ["8.6", "12.x"]
