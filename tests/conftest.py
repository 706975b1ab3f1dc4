"""Shared fixtures: NVIDIA's tutorial specs from ../shared, and TAO's own spec messages."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_SPECS = ROOT.parent / "shared" / "specs"


def shared_spec_files() -> list[Path]:
    return sorted(SHARED_SPECS.glob("*.txt")) if SHARED_SPECS.is_dir() else []


@pytest.fixture(params=shared_spec_files() or [None], ids=lambda p: p.stem if p else "no-shared")
def shared_spec(request) -> Path:
    if request.param is None:
        pytest.skip(f"../shared/specs is absent ({SHARED_SPECS}): NVIDIA's tutorial specs are not here")
    return request.param


def tao_message_for(spec_text: str):
    """An empty TAO message of the type TAO loads this spec into (as TAO's own tools pick it)."""
    proto = pytest.importorskip(
        "nvidia_tao_deploy.cv.detectnet_v2.proto.experiment_pb2",
        reason="nvidia-tao-deploy is not installed (make setup installs it with --no-deps)")
    package = "nvidia_tao_deploy.cv.detectnet_v2.proto"
    if "inferencer_config" in spec_text:
        return importlib.import_module(f"{package}.inference_pb2").Inference()
    if "kitti_config" in spec_text or "coco_config" in spec_text:
        return importlib.import_module(f"{package}.dataset_export_config_pb2").DatasetExportConfig()
    return proto.Experiment()


@pytest.fixture
def python() -> str:
    return sys.executable
