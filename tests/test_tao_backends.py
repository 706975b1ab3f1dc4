"""The TAO backends against fake TAO executables placed on PATH by the test, and against the TAO
launcher's own code (real_launcher.py): the commands they run, the files they keep, nothing partial
on failure, and a key that appears nowhere."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import onnx
import pytest
import yaml
from omegaconf import OmegaConf

from fake_trtexec import install as install_trtexec
from helpers.commands import run
from helpers.projects import project_for, set_params
from helpers.tao import KEY, env_for, records, secrets_in
from stages.spec import Spec, path_values
from stages.tao_backend.runners import LAUNCHER_DOCKER_OPTIONS, DockerRunner, LauncherRunner, RunnerError, load_key
from stages.tao_backend.argv import Secret
from stages.pipeline.layout import (CALIBRATION_CACHE, CONVERT_REPORT, DEEPSTREAM_CONFIG, EXPORTED_MODEL,
                                    PLATFORM_FILE, RESOLVED_SPEC, TENSORFILE, deployable_model, engine_file)

REAL_LAUNCHER = pytest.mark.skipif(
    importlib.util.find_spec("nvidia_tao_cli") is None,
    reason="nvidia-tao (the TAO launcher's code) is not installed: make setup installs it")


def backend_of(name: str, **values) -> OmegaConf:
    """conf/backend/<name>.yaml as the pipeline composes it, with `values` in place of its own."""
    from stages.pipeline.config import compose
    backend = compose([f"backend={name}"]).backend
    OmegaConf.set_struct(backend, False)  # Hydra's composition is closed; a user's params.yaml is not
    return OmegaConf.merge(backend, values)


def stage(project, name, env, check=True):
    return run([sys.executable, "-m", f"stages.{name}", "--params", "params.yaml"], project, check=check, env=env)


def test_tao_backend_runs_the_documented_commands(tmp_path, fake_bin):
    project = project_for(tmp_path, "tao")
    env = env_for(fake_bin, tmp_path)
    for name in ("sample", "calibration_tensorfile", "export", "platform", "convert"):
        stage(project, name, env)
    calls = records(tmp_path)
    assert [c["tool"] for c in calls] == ["detectnet_v2", "detectnet_v2", "tao-converter"]
    # TAO writes into a temp dir beside the output, moved into place only on success
    calibration = calls[0]["argv"]
    assert calibration[0:2] == ["calibration_tensorfile", "-e"] and calibration[3] == "-o"
    assert re.fullmatch(rf"{project}/artifacts/\.spec\.\d+\.\w+\.partial/spec\.txt", calibration[2])
    assert re.fullmatch(rf"{project}/artifacts/\.calibration\.\d+\.\w+\.partial/calibration\.tensor", calibration[4])
    assert calibration[5:] == ["-m", "3"]
    export = calls[1]["argv"]
    assert export[:5] == ["export", "-m", str(project / "models/sample/detectnet_v2.onnx"), "-k", KEY]
    assert re.fullmatch(rf"{project}/artifacts/\.export\.\d+\.\w+\.partial/model\.onnx", export[6])
    assert export[7:9] == ["--data_type", "int8"]
    assert export[export.index("--cal_data_file") + 1] == str(project / TENSORFILE)
    assert export[export.index("-e") + 1] == str(project / RESOLVED_SPEC)
    assert "--gen_ds_config" in export
    converter = calls[2]["argv"]
    assert converter[:4] == ["-k", KEY, "-d", "3,64,160"]
    assert converter[converter.index("-c") + 1] == str(project / CALIBRATION_CACHE)
    assert converter[converter.index("-p") + 1] == "input_1,1x3x64x160,8x3x64x160,8x3x64x160"
    assert converter[-1] == str(project / EXPORTED_MODEL)
    # what TAO wrote is in place, its log kept, the key replaced in the DeepStream config
    assert (project / engine_file("tao", "tensorrt")).read_bytes() == b"fake engine"
    nvinfer = (project / DEEPSTREAM_CONFIG).read_text()
    assert "tlt-model-key=YOUR_TAO_KEY" in nvinfer
    assert "cluster-mode=1" in nvinfer and "[class-attrs-2]" in nvinfer  # the spec's DBSCAN, added to TAO's file
    # the deployable ONNX of TAO's export and its cache, and DeepStream's config for it
    from stages.quantization.lint import lint
    assert lint(onnx.load(project / deployable_model("int8")), "int8") == []
    explicit = (project / "artifacts/export/nvinfer_config.explicit.txt").read_text()
    assert "onnx-file=model.int8.onnx" in explicit and "strongly-typed=1" in explicit and "cluster-mode=1" in explicit
    assert "[TAO] running detectnet_v2 export" in (project / "artifacts/export/tao.log").read_text()
    assert json.loads((project / CONVERT_REPORT).read_text())["engine"] == "tensorrt"


def failed_export(tmp_path, fake_bin, backend):
    """The project and the result of an export stage whose TAO command fails after writing half its output."""
    project = project_for(tmp_path, backend)
    env = env_for(fake_bin, tmp_path)
    stage(project, "sample", env)
    stage(project, "calibration_tensorfile", env)
    return project, stage(project, "export", {**env, "FAKE_TAO_FAIL": "detectnet_v2 export"}, check=False)


def test_failing_tao_leaves_nothing_partial_and_shows_its_error(tmp_path, fake_bin):
    project, result = failed_export(tmp_path, fake_bin, "tao")
    assert result.returncode == 1
    assert "CUDA out of memory" in result.stderr and "detectnet_v2 failed (exit 1)" in result.stderr
    artifacts = project / "artifacts"
    assert not (artifacts / "export").exists()
    assert not [p for p in artifacts.iterdir() if p.name.startswith(".")], "a temp dir was left behind"


def test_missing_tao_names_the_executable_and_the_other_backends(tmp_path):
    project = project_for(tmp_path, "tao")
    # the venv's bin included: TAO's reference code installed by make setup puts no command there
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin", "TAO_KEY": KEY}
    stage(project, "sample", env)
    result = stage(project, "calibration_tensorfile", env, check=False)
    assert result.returncode == 1
    assert "needs the executable 'detectnet_v2'" in result.stderr
    assert "backend=open" in result.stderr and "backend=tao_docker" in result.stderr
    assert not (project / "artifacts" / "calibration").exists()


@pytest.mark.parametrize("backend, executable", [("tao", "detectnet_v2"), ("tao_launcher", "tao"),
                                                 ("tao_docker", "docker")])
def test_a_missing_tool_is_reported_before_a_missing_key(tmp_path, fake_bin, backend, executable):
    """Run by hand with neither TAO nor its key: the first thing to fix is said first."""
    project = project_for(tmp_path, backend)
    env = {k: v for k, v in env_for(fake_bin, tmp_path).items() if k != "TAO_KEY"}
    stage(project, "sample", env)
    stage(project, "calibration_tensorfile", env)  # with the tools: it takes no key
    without = {**{k: v for k, v in os.environ.items() if k != "TAO_KEY"},
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"}
    result = run([sys.executable, "-m", "stages.export", "--params", "params.yaml"], project, check=False, env=without)
    assert result.returncode == 1
    assert f"backend={backend} needs the executable '{executable}', which is not on PATH" in result.stderr
    assert "TAO key" not in result.stderr


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
    assert sorted(p.name for p in (project / "artifacts").iterdir()) == ["calibration", "spec"]  # nothing else made


@REAL_LAUNCHER
def test_launcher_translates_host_paths_into_its_mounts(tmp_path, fake_bin):
    project = project_for(tmp_path, "tao_launcher")
    env = env_for(fake_bin, tmp_path)
    for name in ("sample", "calibration_tensorfile"):
        stage(project, name, env)
    launcher, container, exec_call = records(tmp_path)
    assert launcher["argv"][:3] == ["model", "detectnet_v2", "calibration_tensorfile"]
    assert launcher["mounts"]["Mounts"] == [{"source": str(project), "destination": "/workspace/project"}]
    # as the launcher starts its container: our mounts, as our user, without a TTY (DVC gives none)
    assert container["volumes"] == {str(project): {"bind": "/workspace/project", "mode": "rw"}}
    assert container["options"] == {"shm_size": "16G", "tty": False, "user": f"{os.getuid()}:{os.getgid()}"}
    assert exec_call["argv"][:5] == ["exec", "-i", "tao-container", "detectnet_v2", "calibration_tensorfile"]
    spec_arg = exec_call["argv"][exec_call["argv"].index("-e") + 1]
    assert re.fullmatch(r"/workspace/project/artifacts/\.calibration\.\d+\.\w+\.partial/spec\.container\.txt", spec_arg)
    container_spec = Spec.load(project / "artifacts/calibration/spec.container.txt")
    assert all(pv.value.startswith("/workspace/project/") for pv in path_values(container_spec))
    assert (project / TENSORFILE).is_file()


@REAL_LAUNCHER
def test_launcher_gets_the_key_from_its_shell_not_its_command_line(tmp_path, fake_bin):
    project = project_for(tmp_path, "tao_launcher")
    env = env_for(fake_bin, tmp_path)
    for name in ("sample", "calibration_tensorfile", "export"):
        stage(project, name, env)
    launcher = [c for c in records(tmp_path) if c["tool"] == "tao"][-1]["argv"]
    assert launcher[:3] == ["model", "detectnet_v2", "export"]
    assert KEY not in " ".join(launcher) and launcher[launcher.index("-k") + 1] == '"$TAO_KEY"'
    # the launcher's shell expands it into `docker exec`'s arguments, where TAO receives it
    exec_call = [c for c in records(tmp_path) if c["tool"] == "docker"][-1]["argv"]
    assert exec_call[exec_call.index("-k") + 1] == KEY
    assert (project / EXPORTED_MODEL).is_file()


@REAL_LAUNCHER
def test_launcher_passes_paths_its_shell_would_split(tmp_path, fake_bin):
    destination = "/workspace/my $HOME `data` \"quoted\""
    project = project_for(tmp_path, "tao_launcher")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["backend"]["mounts"] = [{"source": ".", "destination": destination}]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = env_for(fake_bin, tmp_path)
    for name in ("sample", "calibration_tensorfile"):
        stage(project, name, env)
    exec_call = [c for c in records(tmp_path) if c["tool"] == "docker"][-1]["argv"]
    assert exec_call[exec_call.index("-o") + 1].startswith(destination + "/artifacts/")
    assert (project / TENSORFILE).is_file()


def test_launcher_refuses_what_its_shell_cannot_take(tmp_path):
    runner = LauncherRunner(backend_of("tao_launcher", mounts=[{"source": str(tmp_path), "destination": "/w"}]))
    with pytest.raises(RunnerError, match=r"cannot pass \"/w/it's\".*single quote.*backend=tao_docker"):
        runner.command(["detectnet_v2", "export", "-m", "/w/it's"])


def test_a_mount_whose_source_does_not_exist_is_refused(tmp_path):
    # docker would create it, empty and owned by root
    runner = DockerRunner(backend_of("tao_docker", mounts=[{"source": str(tmp_path / "nope"), "destination": "/d"}]))
    with pytest.raises(RunnerError, match=r"backend.mounts\[0\].source: .*/nope does not exist"):
        runner.mounts()


def test_launcher_refuses_docker_options_it_does_not_accept(tmp_path):
    backend = backend_of("tao_launcher", mounts=[{"source": str(tmp_path), "destination": "/w"}],
                         docker_options={"gpus": "all"})
    with pytest.raises(RunnerError, match=r"backend.docker_options.gpus is not an option.*shm_size"):
        LauncherRunner(backend).mounts_json()


@REAL_LAUNCHER
def test_a_failure_the_launcher_reports_as_success_fails_the_stage(tmp_path, fake_bin):
    project, result = failed_export(tmp_path, fake_bin, "tao_launcher")
    assert result.returncode == 1
    assert "CUDA out of memory" in result.stderr
    assert "wrote a model.onnx that cannot be read" in result.stderr and "launcher exits 0" in result.stderr
    assert not (project / "artifacts" / "export").exists()


@pytest.mark.parametrize("converter", ["tao-converter", "gen_trt_engine"])
def test_docker_runs_each_step_in_tao_5s_image_for_it(tmp_path, fake_bin, converter):
    """TAO 5: calibration_tensorfile, export and tao-converter in the TF1 image; TAO Deploy's
    gen_trt_engine and evaluate in the deploy image."""
    project = project_for(tmp_path, "tao_docker")
    set_params(project, backend__converter=converter)
    env = env_for(fake_bin, tmp_path)
    for name in ("sample", "calibration_tensorfile", "export", "platform", "convert", "evaluate"):
        stage(project, name, env)
    tf1, deploy = "nvcr.io/nvidia/tao/tao-toolkit:5.0.0-tf1.15.5", "nvcr.io/nvidia/tao/tao-toolkit:5.0.0-deploy"
    ran_in = []
    for call in (c for c in records(tmp_path) if c["tool"] == "docker"):
        argv = call["argv"]
        image = next(a for a in argv if a in (tf1, deploy))
        inner = argv[argv.index(image) + 5:]  # after IMAGE sh -c SCRIPT sh
        ran_in.append((" ".join(inner[:2]) if inner[0] == "detectnet_v2" else inner[0], image))
    convert = ("detectnet_v2 gen_trt_engine", deploy) if converter == "gen_trt_engine" else ("tao-converter", tf1)
    assert ran_in == [("detectnet_v2 calibration_tensorfile", tf1), ("detectnet_v2 export", tf1), convert,
                      ("detectnet_v2 evaluate", deploy)]
    built_by = json.loads((project / PLATFORM_FILE).read_text())["builder"]["image"]
    assert built_by == convert[1]


def test_docker_without_the_image_for_a_step_names_the_key(tmp_path):
    from stages.tao_backend.runners import image_for
    with pytest.raises(RunnerError, match=r"backend.images.deploy is not set.*detectnet_v2 evaluate"):
        image_for(OmegaConf.create({"images": {"tf1": "img"}}), ["detectnet_v2", "evaluate", "-e", "spec"])


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
    assert (project / EXPORTED_MODEL).is_file()


def print_their_environment(folder: Path, record: Path) -> None:
    """Make every tool in `folder` a careless one: it prints its whole environment and its arguments
    before it runs (a verbose wrapper, a debug build), and records whether the key was in its
    environment."""
    real = folder / "real"
    real.mkdir()
    for tool in [p for p in folder.iterdir() if p.is_file()]:
        tool.rename(real / tool.name)
        tool.write_text(f"""#!{sys.executable}
import json, os, sys
for name, value in sorted(os.environ.items()):
    print(f"{{name}}={{value}}", file=sys.stderr)
print("argv:", *sys.argv, file=sys.stderr)
with open({str(record)!r}, "a") as handle:
    handle.write(json.dumps({{"tool": {tool.name!r}, "argv": sys.argv[1:],
                             "key_in_env": any({KEY!r} in v for v in os.environ.values())}}) + "\\n")
os.execv({str(real / tool.name)!r}, [{str(real / tool.name)!r}, *sys.argv[1:]])
""")
        tool.chmod(0o755)


def takes_the_key(call: dict) -> bool:
    """The steps that take the key: TAO's export, tao-converter (as the launcher and docker run them too)."""
    words = [call["tool"], *call["argv"]]
    return "export" in words or "tao-converter" in words or "converter" in words


# the open backend reads no key, and no backend.key_file (the validate stage refuses one there); its one
# external builder, trtexec, stands for every tool it may run
@pytest.mark.parametrize("backend, source", [
    ("open", "env"),
    *((backend, source) for backend in ("tao", "tao_docker") for source in ("env", "file")),
    *(pytest.param("tao_launcher", source, marks=REAL_LAUNCHER) for source in ("env", "file"))])
def test_the_key_reaches_only_the_steps_that_take_it_and_no_file(tmp_path, fake_bin, backend, source):
    extra = ["convert.engine=trtexec"] if backend == "open" else []
    project = project_for(tmp_path, backend, extra)
    if backend == "open":
        install_trtexec(fake_bin, "11.4.0")
    print_their_environment(fake_bin, tmp_path / "environments.jsonl")
    env = env_for(fake_bin, tmp_path, FAKE_TRTEXEC_RECORD=str(tmp_path / "trtexec.jsonl"))
    if source == "file":
        key_file = tmp_path / "secrets" / "tao.key"
        key_file.parent.mkdir()
        key_file.write_text(KEY + "\n")
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["backend"]["key_file"] = str(key_file)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env["TAO_KEY"] = ""  # the file's key only
    # the open backend's TensorRT engine cannot be evaluated on this CPU: its steps end at convert
    result = run(["dvc", "repro", *(["convert"] if backend == "open" else [])], project, env=env)
    calls = [json.loads(line) for line in (tmp_path / "environments.jsonl").read_text().splitlines()]
    others = [c for c in calls if not takes_the_key(c)]
    assert others and all(not c["key_in_env"] for c in others), [c for c in others if c["key_in_env"]]
    if backend == "tao":  # it takes the key on the command line (-k), not from the environment
        assert not any(c["key_in_env"] for c in calls)
    elif backend != "open":  # by name: `docker run -e TAO_KEY`, the launcher's shell's "$TAO_KEY"
        assert any(c["key_in_env"] for c in calls if takes_the_key(c))
    printed = result.stdout + result.stderr
    assert "FAKE_TAO_RECORD=" in printed  # the tools did print their environment
    assert KEY not in printed
    assert secrets_in(project, [KEY.encode()]) == []
    assert (project / CONVERT_REPORT).is_file() and ("trtexec" in {c["tool"] for c in calls}) == (backend == "open")


def test_key_from_a_file_wins_and_an_empty_file_is_refused(tmp_path):
    (tmp_path / "k").write_text("abc\n")
    assert load_key(backend_of("tao", key_file=str(tmp_path / "k"), key_env="NOPE")) == Secret("abc")
    (tmp_path / "empty").write_text("")
    with pytest.raises(RunnerError, match="is empty"):
        load_key(backend_of("tao", key_file=str(tmp_path / "empty")))


def test_paths_outside_every_mount_are_refused(tmp_path):
    (tmp_path / "data").mkdir()
    runner = LauncherRunner(backend_of("tao_launcher", mounts=[{"source": str(tmp_path / "data"), "destination": "/d"}]))
    assert runner.path(tmp_path / "data" / "x y" / "z.png") == "/d/x y/z.png"
    with pytest.raises(RunnerError, match="is not under any mount"):
        runner.path(tmp_path / "elsewhere")


def test_longest_mount_wins(tmp_path):
    (tmp_path / "data").mkdir()
    mounts = [{"source": str(tmp_path), "destination": "/w"}, {"source": str(tmp_path / "data"), "destination": "/d"}]
    runner = DockerRunner(backend_of("tao_docker", mounts=mounts))
    assert runner.path(tmp_path / "data" / "a") == "/d/a"
    assert runner.path(tmp_path / "data2" / "a") == "/w/data2/a"


@REAL_LAUNCHER
@pytest.mark.parametrize("argv", [["detectnet_v2", "calibration_tensorfile"], ["detectnet_v2", "export"],
                                  ["tao-converter", "-k"], ["detectnet_v2", "gen_trt_engine"],
                                  ["detectnet_v2", "evaluate"]])
def test_every_command_we_send_is_a_task_the_launcher_routes(tmp_path, argv):
    from nvidia_tao_cli.components.instance_handler.local_instance import LocalInstance
    from nvidia_tao_cli.components.instance_handler.utils import get_config_file

    task_map, _ = LocalInstance.parse_launcher_config(LocalInstance.load_config(get_config_file()))
    command, _ = LauncherRunner(backend_of("tao_launcher")).command(argv)
    group, task = command[1:3]
    assert task in task_map[group]


@REAL_LAUNCHER
def test_we_accept_exactly_the_docker_options_the_launcher_accepts():
    from nvidia_tao_cli.components.docker_handler.docker_handler import VALID_DOCKER_ARGS

    assert list(LAUNCHER_DOCKER_OPTIONS) == VALID_DOCKER_ARGS


def test_an_etlt_is_checked_by_its_framing(tmp_path):
    from stages.tao_backend.export import read_etlt

    name = b"input_1"
    (tmp_path / "good.etlt").write_bytes(len(name).to_bytes(4, "little") + name + b"encrypted model")
    read_etlt(tmp_path / "good.etlt")
    (tmp_path / "cut.etlt").write_bytes(len(name).to_bytes(4, "little") + name[:3])
    with pytest.raises(ValueError, match="cannot hold the 7-byte input name"):
        read_etlt(tmp_path / "cut.etlt")


def test_a_tao_tool_that_dies_under_dvc_leaves_the_previous_engine_in_place(tmp_path, fake_bin):
    # DVC deletes convert's outputs before running it; the failing stage puts back what dvc.lock records
    project = project_for(tmp_path, "tao")
    env = env_for(fake_bin, tmp_path)
    run(["dvc", "repro"], project, env=env)
    before = {path: (project / path).read_bytes() for path in (engine_file("tao", "tensorrt"),
                                                                CONVERT_REPORT)}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["convert"]["workspace_mib"] = 2048
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], project, env={**env, "FAKE_TAO_FAIL": "tao-converter"}, check=False)
    assert result.returncode != 0 and "tao-converter failed" in result.stderr
    assert "convert: the previous outputs are back in place" in result.stderr
    assert {path: (project / path).read_bytes() for path in before} == before
    status = json.loads(run(["dvc", "status", "--json"], project, env=env).stdout)
    assert [c for entries in status.values() for c in entries if isinstance(c, dict) and "changed outs" in c] == []


NGC_CACHE = "TRT-100300-EntropyCalibration2\ninput_1: 3c010a14\nconv1/BiasAdd: 3d0b7086\nONNXTRT_Broadcast_output: 3c8954aa\n"


@pytest.mark.parametrize("converter, cache_flag", [("tao-converter", "-c"), ("gen_trt_engine", "--cal_cache_file")])
def test_a_given_calibration_cache_goes_to_tao_as_it_is_and_no_image_is_read(tmp_path, fake_bin, converter,
                                                                            cache_flag):
    project = project_for(tmp_path, "tao")
    (project / "models" / "ngc_int8.txt").write_text(NGC_CACHE)
    set_params(project, model__root="models", export__calibration_cache="models/ngc_int8.txt",
               backend__converter=converter)
    env = env_for(fake_bin, tmp_path)
    for name in ("validate", "sample", "calibration_tensorfile", "export", "platform", "convert"):
        stage(project, name, env)
    calls = records(tmp_path)
    assert [c["argv"][0] for c in calls if c["tool"] == "detectnet_v2"][:1] == ["export"]  # no calibration_tensorfile
    assert not (project / TENSORFILE).exists()
    export = calls[0]["argv"]
    assert "--cal_data_file" not in export and "--cal_image_dir" not in export and "--batches" not in export
    assert (project / CALIBRATION_CACHE).read_text() == NGC_CACHE  # bit for bit
    convert = calls[-1]["argv"]
    assert convert[convert.index(cache_flag) + 1] == str(project / CALIBRATION_CACHE)
