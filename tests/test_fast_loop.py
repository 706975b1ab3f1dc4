"""`make test-fast`: every test that builds no whole project. conftest marks a test `project` when its code,
a function it calls or one of its fixtures reaches a project builder; the fast loop deselects those."""
from __future__ import annotations

import re
import shlex
import sys

import pytest

from helpers.collection import builds_project
from helpers.commands import run
from helpers.paths import ROOT
from helpers.projects import make_project


def fast_loop_arguments() -> list[str]:
    """pytest's arguments in the Makefile's test-fast recipe."""
    recipe = re.search(r"^test-fast:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M)[1]
    return shlex.split(recipe.split("-m pytest", 1)[1])


def collected(*arguments: str) -> set[str]:
    """The test ids pytest collects with these arguments, in one process (xdist's -n and --dist left out)."""
    kept, given = [], iter(arguments)
    for argument in given:
        if argument in ("-n", "--dist"):
            next(given)  # and its value
        elif argument != "-q":  # one -q below: the ids, one a line
            kept.append(argument)
    result = run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *kept], ROOT)
    return {line for line in result.stdout.splitlines() if "::" in line}


def _helper_that_builds(tmp_path):
    return make_project(tmp_path)


def _test_through_a_helper(tmp_path):
    _helper_that_builds(tmp_path)


def _test_in_a_lambda(tmp_path):
    return (lambda: make_project(tmp_path))()


def _test_that_builds_nothing(tmp_path):
    return sorted(tmp_path.iterdir())


@pytest.mark.parametrize("function, builds", [
    (make_project, True), (_test_through_a_helper, True), (_test_in_a_lambda, True),
    (_test_that_builds_nothing, False), (collected, False)])
def test_a_project_builder_is_found_through_any_chain_of_calls(function, builds):
    assert builds_project(function) is builds


def test_the_fast_loop_leaves_out_exactly_the_tests_marked_as_building_a_project():
    arguments = fast_loop_arguments()
    assert arguments[-2:] == ["-m", "not project"]
    fast, projects = collected(*arguments), collected("-m", "project")  # every test is one or the other
    assert fast and projects and not fast & projects
    # a test whose fixture builds the shared project, one that builds its own, and unit tests
    assert any(t.startswith("tests/test_pipeline_artifacts.py::") for t in projects)
    assert any(t.startswith("tests/test_bad_input.py::") for t in projects)
    assert any(t.startswith("tests/test_layering.py::") for t in fast)
    assert not any(t.startswith("tests/test_layering.py::") for t in projects)
