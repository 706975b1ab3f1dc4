"""DESIGN.md's rules for which code may import which, read from every import statement: the spec
model imports nothing else of the project; the open backend and the TAO runners never import each
other (a stage picks one through the backend config); nothing imports a stage module."""
from __future__ import annotations

import pytest

from conftest import ROOT
from stages.config import PIPELINE_STAGES
from stages.imports import imports_of, module_file

STAGE_MODULES = {f"stages.{stage}" for stage in ("code", *PIPELINE_STAGES)}


def modules_under(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in folder.rglob("*.py"))


def project_imports(module: str) -> set[str]:
    return {name for name in imports_of(module) if module_file(name) is not None}


def test_the_spec_model_imports_nothing_else_of_the_project():
    outside = {m: sorted(i for i in project_imports(m) if not i.startswith("stages.spec"))
               for m in modules_under("stages.spec")}
    assert {m: found for m, found in outside.items() if found} == {}


@pytest.mark.parametrize("backend, other", [("open_backend", "tao_backend"), ("tao_backend", "open_backend")])
def test_the_backends_never_import_each_other(backend, other):
    crossing = {m: sorted(i for i in project_imports(m) if i.startswith(f"stages.{other}"))
                for m in modules_under(f"stages.{backend}")}
    assert {m: found for m, found in crossing.items() if found} == {}


def test_nothing_imports_a_stage_module():
    importers = {m: sorted(project_imports(m) & (STAGE_MODULES - {m})) for m in modules_under("stages")}
    assert {m: found for m, found in importers.items() if found} == {}


def test_the_rules_see_the_imports_they_check():
    # the checks above would pass vacuously if imports went unseen
    assert "stages.tao_backend.runners" in project_imports("stages.tao_backend.export")
    assert "stages.spec.textformat" in project_imports("stages.spec.paths")
    assert "stages.config" in project_imports("stages.export")
