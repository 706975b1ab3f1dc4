"""The environment is locked: `make setup` installs exactly the lock, hash-checked, or leaves nothing behind;
a test notices when pyproject.toml (or environment/*.in) and the lock disagree."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers.commands import run
from helpers.projects import make_project
from test_readme import block

ROOT = Path(__file__).resolve().parent.parent
RUNNING = "%d.%d" % sys.version_info[:2]


def load_manage(root: Path = ROOT):
    spec = importlib.util.spec_from_file_location(f"manage_{abs(hash(root))}", root / "environment" / "manage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


manage = load_manage()


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """pyproject.toml and environment/ (its manage.py, inputs and lock) in a temp dir."""
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", copy)
    shutil.copytree(ROOT / "environment", copy / "environment")
    return copy


def edit_dependencies(copy: Path, old: str, new: str) -> None:
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    assert old in text
    pyproject.write_text(text.replace(old, new, 1))


def install(copy: Path, venv: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(copy / "environment" / "manage.py"), "install", "--venv", str(venv)],
                          capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------ the lock and its sources


def test_the_committed_lock_agrees_with_pyproject_and_its_inputs():
    assert manage.disagreements(ROOT) == []


def test_the_lock_covers_cpython_3_11_and_3_12():
    assert {"3.11", "3.12"} <= set(manage.covered_pythons(ROOT))


def test_every_pin_of_the_lock_is_exact_and_hashed():
    for lock in sorted((ROOT / "environment").glob("cpython-*/*.txt")) + [ROOT / "environment" / "uv.txt"]:
        entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text().split("\n", 2)[2])  # past uv's header
        assert entries, lock
        for entry in entries:
            assert re.match(r"^[A-Za-z0-9._\-\[\]]+==\S+ \\\n", entry), f"{lock.name}: not an exact pin: {entry[:60]}"
            assert "--hash=sha256:" in entry, f"{lock.name}: no hash for {entry.split()[0]}"


def test_a_dependency_added_to_pyproject_only_is_reported(project_copy):
    edit_dependencies(project_copy, '"tqdm>=4.66",', '"tqdm>=4.66",\n    "tomli-w>=1",')
    problems = manage.disagreements(project_copy)
    assert len(problems) == len(manage.covered_pythons(project_copy))
    assert all("asks for tomli-w>=1" in problem and "does not pin it" in problem for problem in problems)


def test_a_dependency_pyproject_now_asks_for_but_the_lock_has_only_indirectly_is_reported(project_copy):
    edit_dependencies(project_copy, '"tqdm>=4.66",', '"tqdm>=4.66",\n    "rich>=13",')  # dvc's, locked
    problems = manage.disagreements(project_copy)
    assert problems and all("asks for rich>=13" in p and "only as another package's dependency" in p
                            for p in problems)


def test_a_dependency_removed_from_pyproject_but_still_locked_is_reported(project_copy):
    edit_dependencies(project_copy, '"h5py>=3.10",', "")
    problems = manage.disagreements(project_copy)
    assert problems and all("pins h5py==" in p and "no longer asks for it" in p for p in problems)


def test_a_range_the_locked_version_no_longer_satisfies_is_reported(project_copy):
    edit_dependencies(project_copy, '"numpy>=1.26",', '"numpy>=99",')
    problems = manage.disagreements(project_copy)
    locked = manage.read_lock(manage.lock_dir("3.11", project_copy) / "project.txt")["numpy"]
    assert any(f"pins numpy=={locked}, which pyproject.toml's numpy>=99 does not allow" in p for p in problems)
    assert all("make lock upgrade=numpy" in p for p in problems)


def test_a_test_dependency_is_checked_like_the_others(project_copy):
    edit_dependencies(project_copy, '"pytest>=8.0",', '"pytest>=8.0",\n    "pytest-timeout>=2",')
    assert any("asks for pytest-timeout>=2" in p for p in manage.disagreements(project_copy))


def test_a_tao_reference_version_changed_in_its_input_is_reported(project_copy):
    source = project_copy / "environment" / "tao-reference.in"
    source.write_text(source.read_text().replace("nvidia-tao==6.26.3", "nvidia-tao==6.26.4"))
    problems = manage.disagreements(project_copy)
    assert any("tao-reference.txt pins nvidia-tao==6.26.3, which environment/tao-reference.in's nvidia-tao==6.26.4"
               in p for p in problems)


# ------------------------------------------------------------------ make setup


def test_setup_refuses_a_python_the_lock_does_not_cover_and_creates_nothing(project_copy, tmp_path):
    for directory in (project_copy / "environment").glob("cpython-*"):
        directory.rename(directory.with_name(directory.name.replace(RUNNING, "3.98")))
    venv = tmp_path / "venv"
    result = install(project_copy, venv)
    assert result.returncode == 1
    assert "the lock covers CPython 3.12, 3.98 on linux-x86_64; this is cpython " + RUNNING in result.stderr
    assert "make setup PYTHON=python3.98" in result.stderr
    assert not venv.exists()


def test_setup_without_a_lock_says_how_to_make_one_and_creates_nothing(project_copy, tmp_path):
    for directory in (project_copy / "environment").glob("cpython-*"):
        shutil.rmtree(directory)
    venv = tmp_path / "venv"
    result = install(project_copy, venv)
    assert result.returncode == 1
    assert "no lock in" in result.stderr and "run `make lock`" in result.stderr
    assert not venv.exists()


def test_setup_with_a_lock_file_missing_names_it(project_copy, tmp_path):
    (manage.lock_dir(RUNNING, project_copy) / "triton-env.txt").unlink()
    result = install(project_copy, tmp_path / "venv")
    assert result.returncode == 1 and "lacks triton-env.txt" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_a_wheel_whose_hash_the_lock_does_not_have_fails_setup_naming_it_and_leaves_no_venv(project_copy, tmp_path):
    """The real `make setup` path, up to the first install: a substituted wheel (its hash is not the
    lock's) stops it with the package's name, and the half-made venv is removed."""
    lock = manage.lock_dir(RUNNING, project_copy) / "project.txt"
    six = re.search(r"^six==(\S+)", lock.read_text(), re.M)[1]
    lock.write_text(f"six=={six} \\\n    --hash=sha256:{'0' * 64}\n")
    venv = tmp_path / "venv"
    result = install(project_copy, venv)
    assert result.returncode == 1
    assert f"six=={six}" in result.stderr.splitlines()[-2]  # the error line names the package
    assert "nothing was left in" in result.stderr
    assert not venv.exists()


def make_wheel(directory: Path, name: str, version: str, body: str) -> Path:
    """A minimal pure-Python wheel, as any build backend writes one."""
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": body,
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_a_tampered_wheel_fails_the_install_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    uv = Path(sys.prefix) / "uv" / "bin" / "uv"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = make_wheel(wheels, "tinylocked", "1.0", "VALUE = 1\n")
    lock = tmp_path / "lock.txt"
    lock.write_text(f"tinylocked==1.0 \\\n    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n")
    offline = ("--no-index", "--find-links", str(wheels))

    manage.install_locked(uv, lock, python=Path(sys.executable), target=tmp_path / "good", uv_args=offline)
    assert (tmp_path / "good" / "tinylocked" / "__init__.py").read_text() == "VALUE = 1\n"

    make_wheel(wheels, "tinylocked", "1.0", "VALUE = 2  # tampered\n")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "another-machine's-cache"))
    with pytest.raises(manage.SetupError, match=r"tinylocked==1\.0"):
        manage.install_locked(uv, lock, python=Path(sys.executable), target=tmp_path / "bad", uv_args=offline)
    assert not (tmp_path / "bad" / "tinylocked").exists()


def installed_versions(python: Path) -> dict[str, str]:
    listing = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, json; "
         "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"],
        capture_output=True, text=True, check=True).stdout
    return {manage.canonical(name): version for name, version in json.loads(listing).items()}


def test_setup_installed_exactly_the_lock():
    locks = manage.lock_dir(RUNNING)
    venv = Path(sys.prefix)
    for lock_name, python in (("project.txt", venv / "bin" / "python"),
                              ("triton-env.txt", venv / "triton-env" / "bin" / "python")):
        installed = installed_versions(python)
        assert installed.pop("detectnet-deploy") == "0.1.0"  # the project itself, editable
        if lock_name == "project.txt":  # .venv/tao-reference is on its sys.path (a .pth file)
            for name in manage.read_lock(locks / "tao-reference.txt"):
                installed.pop(name)
        assert installed == manage.read_lock(locks / lock_name), lock_name


def test_setup_installed_tao_reference_triton_and_perf_analyzer_at_the_locked_versions():
    venv = Path(sys.prefix)
    for name, into in (("tao-reference", "tao-reference"), ("triton", "triton"), ("perf-analyzer", "perf-analyzer")):
        found = dict(p.name.removesuffix(".dist-info").split("-") for p in (venv / into).glob("*.dist-info"))
        found = {manage.canonical(name): version for name, version in found.items()}
        assert found == manage.read_lock(manage.lock_dir(RUNNING) / f"{name}.txt"), name


# ------------------------------------------------------------------ the pipeline and the lock


def test_the_code_stage_refuses_an_environment_that_is_not_the_locks(tmp_path):
    project = make_project(tmp_path / "project")
    lock = manage.lock_dir(RUNNING, project) / "project.txt"
    installed = re.search(r"^tqdm==(\S+)", lock.read_text(), re.M)[1]
    lock.write_text(lock.read_text().replace(f"tqdm=={installed} ", "tqdm==4.66.0 "))
    result = run([sys.executable, "-m", "stages.code", "--params", "params.yaml"], project, check=False)
    assert result.returncode == 1
    assert (f"error: code: the environment is not the lock's (tqdm: the lock has 4.66.0, {sys.prefix} has "
            f"{installed}): run `make setup`") in result.stderr
    assert not (project / "artifacts" / "code").exists()


def stages_with_changed_code(project: Path, env: dict) -> set[str]:
    status = json.loads(run(["dvc", "status", "--json"], project, env=env).stdout)
    return {stage for stage, changes in status.items()
            for change in changes if isinstance(change, dict)
            for path in change.get("changed deps", {}) if path.startswith("artifacts/code/")}


@pytest.mark.slow
def test_the_readme_upgrade_commands_rerun_exactly_the_stages_that_run_the_package(tmp_path):
    """README's block, run as written in a project whose pyproject.toml now caps tqdm below the locked
    version: `make lock upgrade=tqdm` moves it, `make setup` installs it, and DVC then re-runs the stages
    whose code runs tqdm (the code stage's fingerprints) and no other."""
    import os

    from stages.pipeline.stage_params import PIPELINE_STAGES
    from stages.pipeline.imports import stage_packages

    project = make_project(tmp_path / "project")
    run(["dvc", "repro", "-q"], project)
    locked = manage.read_lock(manage.lock_dir(RUNNING, project) / "project.txt")["tqdm"]
    edit_dependencies(project, '"tqdm>=4.66",', '"tqdm>=4.66,<4.68",')
    own_venv = {"PATH": f"{project / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    commands = block("make lock upgrade=tqdm       # tqdm to the newest version pyproject.toml allows; "
                     "every other pin stays").commands()
    assert [c.split()[:2] for c in commands] == [["make", "lock"], ["make", "setup"], ["dvc", "status"],
                                                 ["dvc", "repro"]]
    lock_upgrade, setup, status_code, repro_code_and_status = commands
    before = {p: manage.read_lock(manage.lock_dir(p, project) / "project.txt") for p in manage.covered_pythons(project)}
    subprocess.run(["bash", "-c", lock_upgrade], cwd=project, check=True, capture_output=True, timeout=600,
                   env={**os.environ, **own_venv})
    for python, pins in before.items():
        after = manage.read_lock(manage.lock_dir(python, project) / "project.txt")
        assert after["tqdm"] != pins["tqdm"] and after["tqdm"].startswith("4.67")
        assert {k: v for k, v in after.items() if k != "tqdm"} == {k: v for k, v in pins.items() if k != "tqdm"}
    assert locked != manage.read_lock(manage.lock_dir(RUNNING, project) / "project.txt")["tqdm"]

    subprocess.run(["bash", "-c", setup], cwd=project, check=True, capture_output=True, timeout=600,
                   env={**os.environ, **own_venv})
    shown = run(["bash", "-c", status_code], project, env=own_venv).stdout
    assert "environment" in shown and "modified" in shown
    run(["bash", "-c", repro_code_and_status], project, env=own_venv)
    expected = {stage for stage in PIPELINE_STAGES if "tqdm" in stage_packages(stage)}
    assert expected and expected != set(PIPELINE_STAGES)  # some stages run tqdm, some do not
    assert stages_with_changed_code(project, own_venv) == expected
