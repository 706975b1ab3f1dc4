"""The fixtures: NVIDIA's tutorial specs from ../shared, the interpreter, a built project and private copies of
it, TAO's stand-ins on PATH; and the `project` mark on every test that builds a whole project (`make
test-fast` runs the others). The helpers they and the tests use are in helpers/, one module a concern."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import settings

from helpers.collection import builds_project
from helpers.commands import run
from helpers.paths import ROOT, SHARED_SPECS, shared_spec_files
from helpers.projects import SMALL_SAMPLE, make_project

# Property tests check behaviour, not speed: no per-example deadline on a busy 2-core CI machine.
settings.register_profile("project", deadline=None, derandomize=False)
settings.load_profile("project")


@pytest.fixture(params=shared_spec_files() or [None], ids=lambda p: p.stem if p else "no-shared")
def shared_spec(request) -> Path:
    if request.param is None:
        pytest.skip(f"../shared/specs is absent ({SHARED_SPECS}): NVIDIA's tutorial specs are not here")
    return request.param


@pytest.fixture
def python() -> str:
    return sys.executable


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


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        fixtures = [definition.func for definitions in item._fixtureinfo.name2fixturedefs.values()
                    for definition in definitions]
        if any(builds_project(function) for function in (item.function, *fixtures)):
            item.add_marker(pytest.mark.project)
