"""Which of the project's files a stage can run, read from import statements (never by importing:
the backends' modules pull in onnxruntime or TAO's tools). The `code` stage fingerprints these files
for each pipeline stage; the layering tests check DESIGN.md's import rules with the same reading."""
from __future__ import annotations

import ast
from pathlib import Path

from .backends import STEP_PACKAGES
from .config import PROJECT
from .errors import StageError


def module_file(name: str) -> Path | None:
    """The file of this project's module `name` (a package's __init__.py), or None if it is not ours."""
    path = PROJECT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(name: str) -> set[str]:
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
    return found


def code_of(*roots: str) -> list[Path]:
    """The project files that importing `roots` can load (the packages they sit in included), sorted."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(imports_of(name))
    return sorted(seen)


def stage_code(stage: str) -> list[Path]:
    """The files pipeline stage `stage` can run: its module, and the step module of that name in each
    backend package, which `backends.step` imports by name at run time."""
    steps = [f"stages.{package}.{stage}" for package in sorted(set(STEP_PACKAGES.values()))
             if module_file(f"stages.{package}.{stage}") is not None]
    return code_of(f"stages.{stage}", *steps)
