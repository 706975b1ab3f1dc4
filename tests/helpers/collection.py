"""Which tests build a whole project: the `project` mark that `make test-fast` leaves out."""
from __future__ import annotations

import inspect
import types
from pathlib import Path

from .paths import ROOT

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
               if inspect.isfunction(found.get(name))
               and Path(found[name].__code__.co_filename).is_relative_to(ROOT / "tests"))
