"""The TAO backends against fake TAO executables placed on PATH by the test: the commands they run,
the files they keep, nothing partial on failure, and a key that appears nowhere."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, SMALL_SAMPLE, make_project, run
from stages.spec import Spec, path_values
from stages.tao_backend.runners import DockerRunner, LauncherRunner, RunnerError, load_key
from stages.tao_backend.argv import Secret

KEY = "tao-KEY-0123456789-abcdef"


@pytest.fixture
def fake_bin(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    source = (ROOT / "tests" / "fake_tao.py").read_text()
    for name in ("detectnet_v2", "tao-converter", "tao", "docker"):
        (folder / name).write_text(f"#!{sys.executable}\n{source}")
        (folder / name).chmod(0o755)
    return folder


def project_for(tmp_path, backend, extra=()):
    project = make_project(tmp_path / "project", SMALL_SAMPLE + [f"backend={backend}", "export=int8", *extra])
    # TAO reads TFRecords: give the spec's tfrecords globs something to match
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["spec"]["references"]["/workspace/tao-experiments/data/tfrecords"] = "tfrecords"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for fold in ("kitti_trainval", "kitti_val"):
        (project / "tfrecords" / fold).mkdir(parents=True)
        (project / "tfrecords" / fold / "shard-00000-of-00001").write_bytes(b"records")
    return project


def env_for(fake_bin, tmp_path, **more):
    return {"PATH": f"{fake_bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "FAKE_TAO_RECORD": str(tmp_path / "record.jsonl"), "TAO_KEY": KEY, **more}


def records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]


def stage(project, name, env, check=True):
    return run([sys.executable, "-m", f"stages.{name}", "--params", "params.yaml"], project, check=check, env=env)


def test_tao_backend_runs_the_documented_commands(tmp_path, fake_bin):
    project = project_for(tmp_path, "tao")
    env = env_for(fake_bin, tmp_path)
    for name in ("sample", "calibration_tensorfile", "export", "convert"):
        stage(project, name, env)
    calls = records(tmp_path)
    assert [c["tool"] for c in calls] == ["detectnet_v2", "detectnet_v2", "tao-converter"]
    # TAO writes into a temp dir beside the output, moved into place only on success
    calibration = calls[0]["argv"]
    assert calibration[0:2] == ["calibration_tensorfile", "-e"] and calibration[3] == "-o"
    assert re.fullmatch(rf"{project}/artifacts/\.calibration\.\d+\.\w+\.partial/spec\.txt", calibration[2])
    assert re.fullmatch(rf"{project}/artifacts/\.calibration\.\d+\.\w+\.partial/calibration\.tensor", calibration[4])
    assert calibration[5:] == ["-m", "3"]
    export = calls[1]["argv"]
    assert export[:5] == ["export", "-m", str(project / "models/sample/detectnet_v2.onnx"), "-k", KEY]
    assert re.fullmatch(rf"{project}/artifacts/\.export\.\d+\.\w+\.partial/model\.onnx", export[6])
    assert export[7:9] == ["--data_type", "int8"]
    assert export[export.index("--cal_data_file") + 1] == str(project / "artifacts/calibration/calibration.tensor")
    assert export[export.index("-e") + 1] == str(project / "artifacts/calibration/spec.txt")
    assert "--gen_ds_config" in export
    converter = calls[2]["argv"]
    assert converter[:4] == ["-k", KEY, "-d", "3,64,160"]
    assert converter[converter.index("-c") + 1] == str(project / "artifacts/export/calibration.bin")
    assert converter[converter.index("-p") + 1] == "input_1,1x3x64x160,8x3x64x160,8x3x64x160"
    assert converter[-1] == str(project / "artifacts/export/model.onnx")
    # what TAO wrote is in place, its log kept, the key replaced in the DeepStream config
    assert (project / "artifacts/engine/model.engine").read_bytes() == b"fake engine"
    assert "tlt-model-key=YOUR_TAO_KEY" in (project / "artifacts/export/nvinfer_config.txt").read_text()
    assert "[TAO] running detectnet_v2 export" in (project / "artifacts/export/tao.log").read_text()
    assert json.loads((project / "metrics/convert.json").read_text())["engine"] == "tensorrt"


def test_failing_tao_leaves_nothing_partial_and_shows_its_error(tmp_path, fake_bin):
    project = project_for(tmp_path, "tao")
    env = env_for(fake_bin, tmp_path)
    stage(project, "sample", env)
    stage(project, "calibration_tensorfile", env)
    result = stage(project, "export", {**env, "FAKE_TAO_FAIL": "detectnet_v2 export"}, check=False)
    assert result.returncode == 1
    assert "CUDA out of memory" in result.stderr and "detectnet_v2 failed (exit 1)" in result.stderr
    artifacts = project / "artifacts"
    assert not (artifacts / "export").exists()
    assert not [p for p in artifacts.iterdir() if p.name.startswith(".")], "a temp dir was left behind"


def test_missing_tao_names_the_executable_and_the_other_backends(tmp_path):
    project = project_for(tmp_path, "tao")
    # not even the venv's bin: nvidia-tao-deploy installs a `detectnet_v2` entry point there
    env = {"PATH": "/usr/bin:/bin", "TAO_KEY": KEY}
    stage(project, "sample", env)
    result = stage(project, "calibration_tensorfile", env, check=False)
    assert result.returncode == 1
    assert "needs the executable 'detectnet_v2'" in result.stderr
    assert "backend=open" in result.stderr and "backend=tao_docker" in result.stderr
    assert not (project / "artifacts" / "calibration").exists()


def test_missing_key_is_a_clear_error_only_where_a_key_is_needed(tmp_path, fake_bin):
    project = project_for(tmp_path, "tao")
    env = {k: v for k, v in env_for(fake_bin, tmp_path).items() if k != "TAO_KEY"}
    env_without_key = {**{k: v for k, v in os.environ.items() if k != "TAO_KEY"}, **env}
    stage(project, "sample", env_without_key)
    stage(project, "calibration_tensorfile", env_without_key)  # takes no key
    result = run([sys.executable, "-m", "stages.export", "--params", "params.yaml"], project, check=False,
                 env=env_without_key)
    assert result.returncode == 1
    assert "the TAO key is missing" in result.stderr and "TAO_KEY" in result.stderr
    assert "\n\n" not in result.stderr.strip()
    assert sorted(p.name for p in (project / "artifacts").iterdir()) == ["calibration"]  # nothing else made


def test_launcher_translates_host_paths_into_its_mounts(tmp_path, fake_bin):
    project = project_for(tmp_path, "tao_launcher")
    env = env_for(fake_bin, tmp_path)
    for name in ("sample", "calibration_tensorfile"):
        stage(project, name, env)
    [call] = records(tmp_path)
    assert call["argv"][:2] == ["detectnet_v2", "calibration_tensorfile"]
    assert call["mounts"]["Mounts"] == [{"source": str(project), "destination": "/workspace/project"}]
    assert call["mounts"]["DockerOptions"] == {"shm_size": "16G"}
    spec_arg = call["argv"][call["argv"].index("-e") + 1]
    assert re.fullmatch(r"/workspace/project/artifacts/\.calibration\.\d+\.\w+\.partial/spec\.container\.txt", spec_arg)
    container_spec = Spec.load(project / "artifacts/calibration/spec.container.txt")
    assert all(pv.value.startswith("/workspace/project/") for pv in path_values(container_spec))
    assert (project / "artifacts/calibration/calibration.tensor").is_file()


def test_docker_passes_the_key_by_name_and_expands_it_inside(tmp_path, fake_bin):
    project = project_for(tmp_path, "tao_docker")
    env = env_for(fake_bin, tmp_path)
    for name in ("sample", "calibration_tensorfile", "export"):
        stage(project, name, env)
    calls = records(tmp_path)
    docker_calls = [c for c in calls if c["tool"] == "docker"]
    export_call = docker_calls[-1]["argv"]
    assert KEY not in " ".join(export_call), "the key is on the host's process list"
    assert export_call[export_call.index("-e") + 1] == "TAO_KEY"
    assert f"{project}:/workspace/project" in export_call and "--gpus" in export_call
    assert export_call[export_call.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    inside = [c for c in calls if c["tool"] == "detectnet_v2"][-1]["argv"]
    assert inside[inside.index("-k") + 1] == KEY  # expanded inside the container
    assert (project / "artifacts/export/model.onnx").is_file()


@pytest.mark.parametrize("backend", ["open", "tao", "tao_launcher", "tao_docker"])
@pytest.mark.parametrize("source", ["env", "file"])
def test_the_key_appears_nowhere_after_a_full_run(tmp_path, fake_bin, backend, source):
    project = project_for(tmp_path, backend)
    env = env_for(fake_bin, tmp_path)
    if source == "file":
        key_file = tmp_path / "secrets" / "tao.key"
        key_file.parent.mkdir()
        key_file.write_text(KEY + "\n")
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["backend"]["key_file"] = str(key_file)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env.pop("TAO_KEY")
        env["TAO_KEY"] = ""
    result = run(["dvc", "repro"], project, env=env)
    printed = result.stdout + result.stderr
    assert KEY not in printed
    leaks = [str(p.relative_to(project)) for p in project.rglob("*")
             if p.is_file() and ".git" not in p.parts and KEY.encode() in p.read_bytes()]
    assert leaks == []
    assert (project / "dvc.lock").is_file() and (project / "metrics/convert.json").is_file()


def test_key_from_a_file_wins_and_an_empty_file_is_refused(tmp_path):
    (tmp_path / "k").write_text("abc\n")
    assert load_key(OmegaConf.create({"key_file": str(tmp_path / "k"), "key_env": "NOPE"})) == Secret("abc")
    (tmp_path / "empty").write_text("")
    with pytest.raises(RunnerError, match="is empty"):
        load_key(OmegaConf.create({"key_file": str(tmp_path / "empty")}))


def test_paths_outside_every_mount_are_refused(tmp_path):
    runner = LauncherRunner(OmegaConf.create({"mounts": [{"source": str(tmp_path / "data"), "destination": "/d"}]}))
    assert runner.path(tmp_path / "data" / "x y" / "z.png") == "/d/x y/z.png"
    with pytest.raises(RunnerError, match="is not under any mount"):
        runner.path(tmp_path / "elsewhere")


def test_longest_mount_wins(tmp_path):
    mounts = [{"source": str(tmp_path), "destination": "/w"}, {"source": str(tmp_path / "data"), "destination": "/d"}]
    runner = DockerRunner(OmegaConf.create({"mounts": mounts, "image": "img"}))
    assert runner.path(tmp_path / "data" / "a") == "/d/a"
    assert runner.path(tmp_path / "data2" / "a") == "/w/data2/a"
