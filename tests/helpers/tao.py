"""TAO for the tests: the key the stand-ins take, what they were run with, where a secret leaked, and TAO's
own spec messages."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest


KEY = "tao-KEY-0123456789-abcdef"


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


def secrets_in(project: Path, secrets: list[bytes], allowed=(".dvc/config.local",)) -> list[str]:
    """Where a secret (the TAO key, a remote's key file path, its contents, a passphrase) lies in a
    project: any file (outputs, logs, params.yaml, dvc.lock, DVC's cache and temp files) and its git
    history. `allowed`: the git-ignored file whose job is to hold credentials."""
    import subprocess
    found = [p.relative_to(project).as_posix() for p in sorted(project.rglob("*"))
             if p.is_file() and ".git" not in p.parts and p.relative_to(project).as_posix() not in allowed
             and any(secret in p.read_bytes() for secret in secrets)]
    history = subprocess.run(["git", "log", "-p", "--all"], cwd=project, capture_output=True).stdout
    if any(secret in history for secret in secrets):
        found.append("(git history)")
    return found


def env_for(fake_bin, tmp_path, **more):
    import os
    return {"PATH": f"{fake_bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "FAKE_TAO_RECORD": str(tmp_path / "record.jsonl"), "TAO_KEY": KEY, **more}


def records(tmp_path):
    """What the fake TAO tools were run with, in order."""
    import json
    return [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
