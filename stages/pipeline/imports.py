"""Which of the project's files a stage can run, read from import statements (never by importing:
the backends' modules pull in onnxruntime or TAO's tools). The `code` stage fingerprints these files
for each pipeline stage; the layering tests check docs/design.md's "Import rules" with the same reading."""
from __future__ import annotations

import ast
import functools
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from .backends import STEP_PACKAGES
from .layout import PROJECT
from .errors import StageError


def module_file(name: str) -> Path | None:
    """The file of this project's module `name` (a package's __init__.py), or None if it is not ours."""
    path = PROJECT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache  # one run reads each module once, though every stage's walk passes through it
def imports_of(name: str) -> frozenset[str]:
    """What module `name` imports, function-level imports included, relative ones made absolute; for
    `from X import Y` both X and X.Y (Y may be a module)."""
    path = module_file(name)
    parts = name.split(".")
    package = parts if path.name == "__init__.py" else parts[:-1]
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise StageError(f"{path.relative_to(PROJECT).as_posix()}:{exc.lineno}: {exc.msg}: "
                         "its imports cannot be read") from None
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module if not node.level else \
                ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(found)


def code_of(*roots: str) -> list[Path]:
    """The project files that importing `roots` can load (the packages they sit in included), sorted."""
    return sorted(_walk(roots)[0])


def _walk(roots) -> tuple[set[Path], set[str]]:
    """(the project files importing `roots` can load, the top-level names of other modules they import)."""
    seen: set[Path] = set()
    others: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None:
            top = name.split(".")[0]
            if top and top != "stages" and top not in sys.stdlib_module_names:
                others.add(top)
            continue
        if path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(imports_of(name))
    return seen, others


# Imported by stages but never making an output's bytes: DVC only puts back outputs after a failure
# (restore.py). Counting it would tie every stage to DVC's hundred dependencies.
NOT_PRODUCERS = {"dvc"}


def distributions_of(*roots: str) -> dict[str, str]:
    """{distribution: installed version} of every installed package importing `roots` can load: those
    their imports name, and what those require in turn (extras aside), NOT_PRODUCERS left out. Modules
    that are not installed (TensorRT here, imported only where it runs) are left out too."""
    by_module = _packages_distributions()
    todo = sorted({dist for module in _walk(roots)[1] - NOT_PRODUCERS for dist in by_module.get(module, ())})
    found: dict[str, str] = {}
    while todo:
        described = _distribution(todo.pop())
        if described is None or described[0] in found:
            continue
        key, version, requires = described
        found[key] = version
        todo += requires
    return dict(sorted(found.items()))


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@functools.cache
def _distribution(name: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(canonical name, version, the names it requires, extras aside) of an installed distribution."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    requires = tuple(requirement.name for requirement in map(Requirement, dist.requires or ())
                     if requirement.marker is None or requirement.marker.evaluate({"extra": ""}))
    return dist.metadata["Name"].lower().replace("_", "-").replace(".", "-"), dist.version, requires


def stage_roots(stage: str) -> list[str]:
    """The modules pipeline stage `stage` runs: its own, and the step module of that name in each backend
    package, which `backends.step` imports by name at run time."""
    steps = [f"stages.{package}.{stage}" for package in sorted(set(STEP_PACKAGES.values()))
             if module_file(f"stages.{package}.{stage}") is not None]
    return [f"stages.{stage}", *steps]


def stage_code(stage: str) -> list[Path]:
    """The files pipeline stage `stage` can run."""
    return code_of(*stage_roots(stage))


def stage_packages(stage: str) -> dict[str, str]:
    """The installed packages (and versions) pipeline stage `stage` can run."""
    return distributions_of(*stage_roots(stage))
