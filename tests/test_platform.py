"""An engine is valid only on the platform that built it: the `platform` stage records that platform
(builder, version, GPUs), convert and evaluate depend on it, and a fleet sharing one DVC remote keeps
one engine per platform, restoring rather than rebuilding where a platform was seen before."""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from helpers.commands import PROBE, ran, run
from helpers.paths import ROOT
from helpers.projects import project_for, set_params
from helpers.tao import KEY, env_for
from fake_trtexec import install as install_trtexec
from ssh_server import unavailable
from stages.pipeline.layout import CONVERT_REPORT, PLATFORM_FILE, deployable_model, engine_file

FAKE_TENSORRT = ROOT / "tests" / "fake_tensorrt" / "10.3.0"
A100, T4 = "NVIDIA A100-SXM4-40GB, 8.0", "Tesla T4, 7.5"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def params_file(tmp_path, backend="open", engine="onnxruntime", **backend_keys) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"backend": {"name": backend, **backend_keys}, "convert": {"engine": engine}}))
    return path


def probe(tmp_path, params: Path, check=True, **env):
    """`python -m stages.platform --print` on these params, with PATH and PYTHONPATH as given."""
    return run([sys.executable, "-m", "stages.platform", "--params", params, "--print"], ROOT, check=check,
               env={"PYTHONPATH": os.environ.get("PYTHONPATH", ""), **env})


def bin_with_nvidia_smi(fake_bin) -> str:
    """PATH with the fake nvidia-smi first."""
    return f"{fake_bin}{os.pathsep}{os.environ['PATH']}"


def path_without_nvidia_smi() -> str:
    return os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if not (Path(p) / "nvidia-smi").exists())


# --------------------------------------------------------------------------- the probe

def test_an_onnxruntime_engine_depends_on_onnxruntime_and_its_version_only(tmp_path):
    record = json.loads(probe(tmp_path, params_file(tmp_path)).stdout)
    assert record == {"backend": "open", "engine": "onnxruntime",
                      "builder": {"onnxruntime": metadata.version("onnxruntime")}}


def test_the_same_platform_gives_the_same_bytes_and_nothing_that_varies(tmp_path, fake_bin):
    params = params_file(tmp_path, "tao", converter="tao-converter")
    env = {"PATH": bin_with_nvidia_smi(fake_bin)}
    first, second = probe(tmp_path, params, **env).stdout, probe(tmp_path, params, **env).stdout
    assert first == second
    assert socket.gethostname() not in first and str(tmp_path) not in first and str(ROOT) not in first


def test_a_tensorrt_engine_depends_on_tensorrts_version_and_the_gpus(tmp_path, fake_bin):
    record = json.loads(probe(tmp_path, params_file(tmp_path, engine="tensorrt"), PYTHONPATH=str(FAKE_TENSORRT),
                              PATH=bin_with_nvidia_smi(fake_bin), FAKE_GPUS=f"{A100}\n{T4}").stdout)
    assert record == {"backend": "open", "engine": "tensorrt", "builder": {"tensorrt": "10.3.0"},
                      "gpus": [{"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"},
                               {"name": "Tesla T4", "compute_capability": "7.5"}]}


def test_no_nvidia_smi_means_no_gpu_found_and_tensorrt_missing_means_no_version(tmp_path):
    params = params_file(tmp_path, engine="tensorrt")
    record = json.loads(probe(tmp_path, params, PATH=path_without_nvidia_smi()).stdout)
    assert record["gpus"] == [] and record["builder"] == {"tensorrt": None}


@pytest.mark.parametrize("backend, keys, builder", [
    ("tao", {"converter": "tao-converter"}, {"converter": "tao-converter", "tensorrt": None}),
    ("tao_docker", {"converter": "gen_trt_engine", "images": {"tf1": "nvcr.io/nvidia/tao/tao-toolkit:5.0.0-tf1.15.5",
                                                             "deploy": "nvcr.io/nvidia/tao/tao-toolkit:5.0.0-deploy"}},
     {"converter": "gen_trt_engine", "image": "nvcr.io/nvidia/tao/tao-toolkit:5.0.0-deploy"}),  # builds the engine
    ("tao_launcher", {"converter": "tao-converter", "launcher": "tao"}, {"converter": "tao-converter", "launcher": "6.26.3"}),
])
def test_tao_backends_build_tensorrt_engines_named_by_image_or_launcher_and_gpu(tmp_path, fake_bin, backend, keys,
                                                                                 builder):
    if backend == "tao_launcher" and not _has("nvidia-tao"):
        pytest.skip("nvidia-tao (the launcher) is not installed: make setup installs it")
    params = params_file(tmp_path, backend, **keys)
    record = json.loads(probe(tmp_path, params, PATH=bin_with_nvidia_smi(fake_bin), FAKE_GPUS=T4,
                              FAKE_TAO_RECORD=str(tmp_path / "calls.jsonl")).stdout)
    # convert.engine applies to the open backend only: TAO builds TensorRT engines
    assert record == {"backend": backend, "engine": "tensorrt", "builder": builder,
                      "gpus": [{"name": "Tesla T4", "compute_capability": "7.5"}]}


def test_the_launcher_recorded_is_the_one_on_path_asked_for_its_version(tmp_path, fake_bin):
    """Not the launcher package the tests import: with no `tao` on PATH there is no launcher version."""
    params = params_file(tmp_path, "tao_launcher", converter="tao-converter", launcher="tao")
    bare = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    record = json.loads(probe(tmp_path, params, PATH=bare).stdout)
    assert record["builder"] == {"converter": "tao-converter", "launcher": None}
    calls = tmp_path / "calls.jsonl"
    with_tao = json.loads(probe(tmp_path, params, PATH=bin_with_nvidia_smi(fake_bin), FAKE_GPUS=T4,
                                FAKE_TAO_RECORD=str(calls)).stdout)
    assert with_tao["builder"]["launcher"] == metadata.version("nvidia-tao")  # what `tao info` printed
    assert [json.loads(line)["argv"] for line in calls.read_text().splitlines()] == [["info"]]


def _has(distribution: str) -> bool:
    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_a_broken_nvidia_smi_is_a_clear_error_and_writes_nothing(tmp_path, fake_bin):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "stages", project / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    params_file(project, "tao", converter="tao-converter")
    result = run([sys.executable, "-m", "stages.platform", "--params", "params.yaml"], project, check=False,
                 env={"PATH": bin_with_nvidia_smi(fake_bin), "FAKE_NVIDIA_SMI_FAIL": "1"})
    assert result.returncode == 1
    assert "nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader` exited 9" in result.stderr
    assert "couldn't communicate with the NVIDIA driver" in result.stderr
    assert not (project / "artifacts").exists()


def test_a_query_runs_without_the_key_variable_in_its_environment(tmp_path):
    """A launcher whose `tao info` prints the key variable and fails: it had none to print."""
    launcher = tmp_path / "bin" / "tao"
    launcher.parent.mkdir()
    launcher.write_text(f"#!{sys.executable}\nimport os\nprint(os.environ.get('MY_KEY', 'no key here'))\n"
                        "raise SystemExit(3)\n")
    launcher.chmod(0o755)
    params = params_file(tmp_path, "tao_launcher", converter="tao-converter", launcher=str(launcher), key_env="MY_KEY")
    result = probe(tmp_path, params, check=False, MY_KEY=KEY, PATH=f"{launcher.parent}{os.pathsep}{os.environ['PATH']}")
    assert result.returncode == 1 and "info` exited 3 (no key here)" in result.stderr


def test_a_query_that_prints_the_key_is_quoted_masked(tmp_path):
    launcher = tmp_path / "bin" / "tao"
    launcher.parent.mkdir()
    launcher.write_text(f"#!{sys.executable}\nprint('decrypting with {KEY}')\nraise SystemExit(3)\n")
    launcher.chmod(0o755)
    params = params_file(tmp_path, "tao_launcher", converter="tao-converter", launcher=str(launcher), key_env="MY_KEY")
    result = probe(tmp_path, params, check=False, MY_KEY=KEY, PATH=f"{launcher.parent}{os.pathsep}{os.environ['PATH']}")
    assert result.returncode == 1 and "(decrypting with ***)" in result.stderr and KEY not in result.stderr


def test_an_unknown_backend_names_the_key(tmp_path):
    result = probe(tmp_path, params_file(tmp_path, "tao_cloud"), check=False)
    assert result.returncode == 2
    expected = "config key backend.name is 'tao_cloud'; expected one of open, tao, tao_launcher, tao_docker"
    assert expected in result.stderr


def test_the_probe_starts_without_heavy_imports():
    # DVC runs it on every `dvc repro`: no config schema machinery, no inference runtime
    probe_imports = ("import json, sys, stages.platform\n"
                     "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
                     "('omegaconf', 'hydra', 'numpy', 'onnxruntime', 'onnx', 'tensorrt'))))")
    assert json.loads(run([sys.executable, "-c", probe_imports], ROOT).stdout) == []


def test_help_says_what_the_record_holds():
    result = run([sys.executable, "-m", "stages.platform", "--help"], ROOT)
    assert PLATFORM_FILE in result.stdout and "always_changed" in result.stdout
    assert "--params" in result.stdout and "--print" in result.stdout


# --------------------------------------------------------------------------- in the pipeline

def test_the_engines_metrics_name_its_platform(built_project):
    metrics = json.loads((built_project / "metrics/convert.json").read_text())
    assert metrics["platform"] == f"onnxruntime engine by onnxruntime {metadata.version('onnxruntime')} on the CPU"
    assert json.loads((built_project / PLATFORM_FILE).read_text())["engine"] == "onnxruntime"


def test_the_probe_runs_on_every_repro_and_an_unchanged_platform_reruns_nothing(project_copy):
    before = (project_copy / PLATFORM_FILE).read_bytes()
    again = run(["dvc", "repro"], project_copy)
    assert f"Running stage '{PROBE}'" in again.stdout
    assert ran(again.stdout) == []
    assert (project_copy / PLATFORM_FILE).read_bytes() == before


def test_a_stage_run_by_hand_refuses_another_platforms_record(project_copy):
    record = project_copy / PLATFORM_FILE
    record.chmod(0o644)  # DVC checks outputs out read-only when it links them from its cache
    record.write_text(json.dumps({"backend": "open", "engine": "onnxruntime", "builder": {"onnxruntime": "0.1.0"}}))
    before = (project_copy / CONVERT_REPORT).read_bytes()
    for stage in ("convert", "evaluate"):
        result = run([sys.executable, "-m", f"stages.{stage}", "--params", "params.yaml"], project_copy, check=False)
        assert result.returncode == 1, stage
        assert ("platform.json describes a onnxruntime engine by onnxruntime 0.1.0 on the CPU, but this machine has "
                f"a onnxruntime engine by onnxruntime {metadata.version('onnxruntime')}") in result.stderr
    assert (project_copy / CONVERT_REPORT).read_bytes() == before


def test_tensorrt_asked_for_where_it_is_missing_fails_convert_with_the_platform_named(project_copy):
    set_params(project_copy, convert__engine="tensorrt")
    result = run(["dvc", "repro"], project_copy, check=False, env={"PATH": f"{Path(sys.executable).parent}"
                                                                           f"{os.pathsep}{path_without_nvidia_smi()}"})
    assert result.returncode != 0
    assert "convert.engine is tensorrt, but TensorRT cannot build here" in result.stdout + result.stderr
    record = json.loads((project_copy / PLATFORM_FILE).read_text())
    assert record == {"backend": "open", "engine": "tensorrt", "builder": {"tensorrt": None}, "gpus": []}


def test_trtexec_builds_the_engine_under_dvc_and_triton_serves_its_plan(project_copy, tmp_path):
    install_trtexec(tmp_path / "bin", "11.4.0")
    set_params(project_copy, convert__engine="trtexec")
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{path_without_nvidia_smi()}"}
    run(["dvc", "repro", "triton"], project_copy, env=env)  # evaluate runs where the engine's GPU is
    record = json.loads((project_copy / PLATFORM_FILE).read_text())
    assert record == {"backend": "open", "engine": "tensorrt", "builder": {"trtexec": "11.4.0"}, "gpus": []}
    engine = json.loads((project_copy / engine_file("open", "trtexec")).read_text())
    assert engine["version"] == "11.4.0" and engine["options"]["--onnx"].endswith(deployable_model("int8"))
    assert "&&&& PASSED" in (project_copy / "artifacts/engine/trtexec.log").read_text()
    config = (project_copy / "artifacts/triton/detectnet_v2/config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config


def test_a_failed_trtexec_leaves_the_previous_engine(project_copy, tmp_path):
    install_trtexec(tmp_path / "bin", "11.4.0")
    set_params(project_copy, convert__engine="trtexec")
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{path_without_nvidia_smi()}"}
    run(["dvc", "repro", "convert"], project_copy, env=env)
    before = (project_copy / engine_file("open", "trtexec")).read_bytes()
    result = run(["dvc", "repro", "-f", "convert"], project_copy, check=False, env={**env, "FAKE_TRTEXEC_FAIL": "1"})
    assert result.returncode != 0 and "trtexec failed (exit 1)" in result.stderr
    assert (project_copy / engine_file("open", "trtexec")).read_bytes() == before


def test_the_trtexec_on_path_names_the_tensorrt_version_of_the_record(tmp_path):
    install_trtexec(tmp_path / "bin", "10.3.0")
    record = json.loads(probe(tmp_path, params_file(tmp_path, engine="trtexec"),
                              PATH=f"{tmp_path / 'bin'}{os.pathsep}{path_without_nvidia_smi()}").stdout)
    assert record["builder"] == {"trtexec": "10.3.0"}


# --------------------------------------------------------------------------- a fleet sharing one remote

# The same story runs over a real SSH server in test_ssh_remote (with exp push/pull and the credential
# audit); this local-directory version is the one that runs where no sshd can be started.
@pytest.mark.skipif(unavailable() is None, reason="test_ssh_remote runs this fleet over a real SSH server")
def test_a_fleet_keeps_one_engine_per_platform_and_rebuilds_only_where_a_platform_is_new(tmp_path, fake_bin):
    # platform A (an A100) builds everything and shares it, the run-cache included
    first = project_for(tmp_path, "tao")
    run(["dvc", "remote", "add", "-d", "shared", tmp_path / "remote"], first)
    run([*GIT, "add", "-A"], first)
    run([*GIT, "commit", "-qm", "a TAO project with a shared remote"], first)
    on_a100 = env_for(fake_bin, tmp_path, FAKE_GPUS=A100, FAKE_TAO_RECORD=str(tmp_path / "first.jsonl"))
    assert ran(run(["dvc", "repro"], first, env=on_a100).stdout) == [
        "code", "sample", "calibration_tensorfile", "export", "convert", "evaluate", "metrics", "triton"]
    run([*GIT, "add", "-A"], first)
    run([*GIT, "commit", "-qm", "built on an A100"], first)
    run(["dvc", "push", "--run-cache"], first)
    a100_engine = (first / engine_file("tao", "tensorrt")).read_bytes()
    assert a100_engine == f"fake engine built on {A100}".encode()

    # platform B (a T4) pulls: only the engine, its evaluation and its Triton repository are built again
    second = tmp_path / "second"
    run(["git", "clone", "-q", first, second], tmp_path)
    run(["dvc", "pull", "--run-cache"], second)
    on_t4 = env_for(fake_bin, tmp_path, FAKE_GPUS=T4, FAKE_TAO_RECORD=str(tmp_path / "second.jsonl"))
    assert ran(run(["dvc", "repro", "--pull"], second, env=on_t4).stdout) == ["convert", "evaluate", "metrics",
                                                                                "triton"]
    assert [call["argv"][0] for call in records_in(tmp_path / "second.jsonl")] == ["-k", "evaluate"]
    assert (second / engine_file("tao", "tensorrt")).read_bytes() == f"fake engine built on {T4}".encode()
    assert "Tesla T4 (7.5)" in json.loads((second / "metrics/convert.json").read_text())["platform"]
    run([*GIT, "add", "-A"], second)
    run([*GIT, "commit", "-qm", "built on a T4"], second)
    run(["dvc", "push", "--run-cache"], second)

    # a third machine, an A100 again, clones the T4's commit: DVC restores the A100's engine from the
    # run-cache instead of building it (`--pull` fetches the outputs a run-cache entry names)
    third = tmp_path / "third"
    run(["git", "clone", "-q", second, third], tmp_path)
    run(["dvc", "pull", "--run-cache"], third)
    again = run(["dvc", "repro", "--pull"], third, env={**on_a100, "FAKE_TAO_RECORD": str(tmp_path / "third.jsonl")})
    assert ran(again.stdout) == []
    for stage in ("convert", "evaluate", "metrics", "triton"):  # metrics: the run-cache keeps its copy
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in again.stdout
    assert (third / "artifacts/triton/detectnet_v2/1/model.plan").read_bytes() == a100_engine
    assert not (tmp_path / "third.jsonl").exists(), "a TAO tool ran"
    assert (third / engine_file("tao", "tensorrt")).read_bytes() == a100_engine
    assert "NVIDIA A100-SXM4-40GB (8.0)" in json.loads((third / "metrics/convert.json").read_text())["platform"]
    assert KEY not in again.stdout + again.stderr


def records_in(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
