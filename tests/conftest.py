"""Shared fixtures: NVIDIA's tutorial specs from ../shared, and TAO's own spec messages; and the `project`
mark on every test that builds a whole project (`make test-fast` runs the others)."""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import sys
import types
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check behaviour, not speed: no per-example deadline on a busy 2-core CI machine.
settings.register_profile("project", deadline=None, derandomize=False)
settings.load_profile("project")

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


# --------------------------------------------------------------------------- a tiny exported model

def tiny_export(folder: Path) -> Path:
    """The sample's graph at 96x48 (base width 8, random heads) exported as the export stage does, in
    `folder` (sample.onnx, model.onnx); returns the folder."""
    from stages import bundled_sample
    from stages.formats.onnx_model import export_model

    bundled_sample.build_model(folder / "sample.onnx", 96, 48, base_width=8, seed=1)
    export_model(folder / "sample.onnx", folder / "model.onnx", expected_chw=(3, 48, 96))
    return folder


@functools.lru_cache(maxsize=None)
def _composed_convert():
    from stages.pipeline import config
    return config.load([]).convert


def engine_request(export_dir: Path, data_type: str, output: Path, **changes):
    """The engine request the convert stage makes with conf/'s values, with `changes`."""
    from stages.open_backend.engine_request import EngineRequest
    return dataclasses.replace(EngineRequest.of(_composed_convert(), export_dir, data_type, output, None), **changes)


def tiny_images(seed: int = 0, n: int = 4, gain: float = 1.0):
    """n images for tiny_export's model: a horizontal ramp with noise, in [0, gain]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = np.linspace(0, 1, 96, dtype=np.float32)[None, None, None, :]
    return (np.clip(base + rng.normal(0, 0.1, (n, 3, 48, 96)).astype(np.float32), 0, 1) * gain).astype(np.float32)


# --------------------------------------------------------------------------- a project in a temp dir

# A tiny pipeline, the gate off. Its model (8 channels, fitted on 24 images) is judged on 8 validation
# images, where one detection more or less moves an AP by 0.02-0.06: its mAPs hang on the last bits of
# the fit and of the int8 calibration, which differ between CPU families. Measured on one machine under
# OpenBLAS's SkylakeX, Haswell and SandyBridge kernels (OPENBLAS_CORETYPE) and on an AMD EPYC, the fp32
# mAP was 0.126-0.147 and the int8 engine's drop from -0.046 to +0.034: both sides of the default gate
# (0.02). So no test here depends on the gate's verdict unless it is about the gate, and those turn it on
# with a case far from the threshold (tests/test_evaluate_stage.py).
SMALL_SAMPLE = ["sample.train_images=24", "sample.val_images=8", "sample.image_width=320",
                "sample.image_height=120", "sample.input_width=160", "sample.input_height=64",
                "sample.model_width=8", "calibration.max_batches=3", "calibration.selection_images=8",
                "convert.verify_images=8",
                "evaluate.max_map_drop=null",
                "triton.pack_environment=false"]  # 150 MiB a repository; test_triton packs one


def run(args, cwd, check=True, env=None, **kw):
    import os
    import subprocess
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "DVC_NO_ANALYTICS": "1", **(env or {})}
    kw.setdefault("capture_output", True)
    kw.setdefault("timeout", 900)  # a hung command fails its test instead of the whole run
    result = subprocess.run([str(a) for a in args], cwd=cwd, text=True, env=full_env, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


# The `platform` and `validate` stages are DVC's always_changed: every `dvc repro` runs them (and `dvc status`
# lists them), and what follows re-runs only when their files change. `ran` and `up_to_date` leave them out;
# tests of the platform and of validate themselves look at them.
PROBE = "platform"
ALWAYS_RUN = (PROBE, "validate")


def ran(output: str) -> list[str]:
    """The stages `dvc repro` / `dvc exp run` printed it ran, in order, besides the two that always run."""
    import re
    return [name for name in re.findall(r"Running stage '([^']+)'", output) if name not in ALWAYS_RUN]


def up_to_date(project: Path, env=None) -> bool:
    """`dvc status` has nothing to report but the two stages that are always changed."""
    import json
    status = json.loads(run(["dvc", "status", "--json"], project, env=env).stdout)
    return status == {name: ["always changed"] for name in ALWAYS_RUN}


def _bake_into_conf(config_yaml: Path, overrides) -> None:
    """Write `key=value` overrides into conf/config.yaml itself, so that `dvc exp run -S ...`
    (which composes conf/ afresh) keeps them. Group choices (`export=int8`) go to the defaults list."""
    import yaml
    data = yaml.safe_load(config_yaml.read_text())
    for item in overrides:
        key, value = item.split("=", 1)
        if "." not in key:
            data["defaults"] = [{key: value} if isinstance(d, dict) and key in d else d for d in data["defaults"]]
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    config_yaml.write_text(yaml.safe_dump(data, sort_keys=False))


def copy_tracked_files(dest: Path, wanted) -> None:
    """Copy this project's git-tracked files whose names `wanted` accepts into dest, as they are now."""
    import shutil
    import subprocess
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if wanted(name) and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def make_project(dest: Path, overrides=SMALL_SAMPLE) -> Path:
    """A copy of this project's tracked files in a fresh git repo, params.yaml composed with overrides."""
    import numba_kernels
    copy_tracked_files(dest, lambda name: not name.startswith(("tests/", "bench/")))
    numba_kernels.copy_into(dest)  # compiled once per session, not once per project
    for stray in ("dvc.lock", *(p.relative_to(dest) for p in (dest / "metrics").glob("*.json"))):
        (dest / stray).unlink(missing_ok=True)  # what this checkout's runs wrote
    _bake_into_conf(dest / "conf" / "config.yaml", overrides)
    run([sys.executable, "-m", "stages.params"], dest)
    run(["git", "init", "-q"], dest)
    # CI machines may have no git identity; dvc exp run commits experiments
    run(["git", "config", "user.name", "pipeline tests"], dest)
    run(["git", "config", "user.email", "tests@example.invalid"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"], dest)
    return dest


@pytest.fixture(scope="session")
def built_project(tmp_path_factory) -> Path:
    """One small project through the whole pipeline with export=int8 (shared; never modify it)."""
    project = make_project(tmp_path_factory.mktemp("built"), SMALL_SAMPLE + ["export=int8"])
    run(["dvc", "repro", "-q"], project)
    return project


@pytest.fixture
def project_copy(built_project, tmp_path) -> Path:
    """A private copy of the built project, for a test that changes it."""
    import shutil
    copy = tmp_path / "project"
    shutil.copytree(built_project, copy, symlinks=True)
    return copy


def set_params(project: Path, **values) -> None:
    """Edit the project's params.yaml: set_params(p, export__cal_source="image_dir") sets export.cal_source."""
    import yaml
    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in values.items():
        node, *parents, leaf = [params, *dotted.split("__")]
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# --------------------------------------------------------------------------- stand-ins for TAO

KEY = "tao-KEY-0123456789-abcdef"


@pytest.fixture
def fake_bin(tmp_path):
    """TAO's executables and nvidia-smi (fake_tao.py), and the TAO launcher's own code, in a folder for PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    source = (ROOT / "tests" / "fake_tao.py").read_text()
    for name in ("detectnet_v2", "tao-converter", "docker", "nvidia-smi"):
        (folder / name).write_text(f"#!{sys.executable}\n{source}")
        (folder / name).chmod(0o755)
    # `tao` is the launcher's own code, with only its docker engine calls replaced
    (folder / "tao").write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                                "from real_launcher import main\nsys.exit(main())\n")
    (folder / "tao").chmod(0o755)
    return folder


def project_for(tmp_path, backend, extra=()):
    """A small int8 project for a TAO backend, with the TFRecords TAO's spec names."""
    project = make_project(tmp_path / "project", SMALL_SAMPLE + [f"backend={backend}", "export=int8", *extra])
    # TAO reads TFRecords: give the spec's tfrecords globs something to match. In conf/, so that
    # `dvc exp run -S ...`, which composes conf/ afresh, keeps it.
    import yaml
    dataset = project / "conf" / "dataset" / "sample.yaml"
    data = yaml.safe_load(dataset.read_text())
    data["references"]["/workspace/tao-experiments/data/tfrecords"] = "tfrecords"
    dataset.write_text(yaml.safe_dump(data, sort_keys=False))
    run([sys.executable, "-m", "stages.params"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "TFRecords for TAO"], project)
    for fold in ("kitti_trainval", "kitti_val"):
        (project / "tfrecords" / fold).mkdir(parents=True)
        (project / "tfrecords" / fold / "shard-00000-of-00001").write_bytes(b"records")
    return project


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


# ----------------------------------------------------------------- the fast loop

# What builds a whole project (a copy of the checkout that dvc runs): a test reaches these through its own
# code, the functions it calls (helpers of its module or of the support modules) or its fixtures. Found
# from the code, not listed by hand, so a new test that builds a project is marked without anyone
# remembering to.
PROJECT_BUILDERS = frozenset({"make_project", "project_for", "copy_tracked_files"})


def _code_names(code: types.CodeType) -> set[str]:
    """The global names a function's code uses, its nested functions and lambdas included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def builds_project(function, seen: set | None = None) -> bool:
    """Whether calling `function` can build a whole project (one of PROJECT_BUILDERS, through any chain of
    the project's test functions)."""
    seen = set() if seen is None else seen
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    names = _code_names(code)
    if names & PROJECT_BUILDERS:
        return True
    found = getattr(function, "__globals__", {})
    return any(builds_project(found[name], seen) for name in names
               if inspect.isfunction(found.get(name)) and Path(found[name].__code__.co_filename).parent == ROOT / "tests")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        fixtures = [definition.func for definitions in item._fixtureinfo.name2fixturedefs.values()
                    for definition in definitions]
        if any(builds_project(function) for function in (item.function, *fixtures)):
            item.add_marker(pytest.mark.project)
