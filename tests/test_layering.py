"""The import rules of the layout, read from every import statement: the spec model imports nothing else
of the project; formats import nothing of it but each other; detectnet_v2 builds on the spec model and
the formats only, and the bundled sample on those and detectnet_v2 (none of them on the stage machinery,
so code outside the pipeline can use them); the quantization core on the formats and TensorRT's loaders; the open backend and the TAO runners never import each other
(a stage picks one through the backend config); nothing imports a stage module; no modules import each other
in a ring."""
from __future__ import annotations

import pytest

from helpers.paths import ROOT
from stages.pipeline.stage_params import PIPELINE_STAGES
from stages.pipeline.imports import imports_of, module_file

STAGE_MODULES = {f"stages.{stage}" for stage in ("code", "platform", "params", *PIPELINE_STAGES)}

# package -> the project packages it may import (itself always)
LIBRARY_RULES = {
    "stages.spec": (),
    "stages.formats": (),
    "stages.compute": (),
    "stages.detectnet_v2": ("stages.spec", "stages.formats", "stages.compute"),
    "stages.bundled_sample": ("stages.spec", "stages.formats", "stages.detectnet_v2", "stages.compute"),
    # the quantization core: the stages and the open backend call it, never the other way round
    "stages.quantization": ("stages.formats", "stages.compute", "stages.tensorrt"),
}


def modules_under(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in folder.rglob("*.py"))


def project_imports(module: str) -> set[str]:
    # `stages` itself (the top package, a docstring) is what every relative import passes through
    return {name for name in imports_of(module) if module_file(name) is not None and name != "stages"}


def outside(module: str, allowed: tuple[str, ...]) -> list[str]:
    return sorted(i for i in project_imports(module) if not i.startswith(allowed))


@pytest.mark.parametrize("package", LIBRARY_RULES)
def test_a_library_package_imports_only_what_it_builds_on(package):
    allowed = (package, *LIBRARY_RULES[package])
    found = {m: outside(m, allowed) for m in modules_under(package)}
    assert {m: names for m, names in found.items() if names} == {}


@pytest.mark.parametrize("backend, other", [("open_backend", "tao_backend"), ("tao_backend", "open_backend")])
def test_the_backends_never_import_each_other(backend, other):
    crossing = {m: sorted(i for i in project_imports(m) if i.startswith(f"stages.{other}"))
                for m in modules_under(f"stages.{backend}")}
    assert {m: found for m, found in crossing.items() if found} == {}


def test_nothing_imports_a_stage_module():
    importers = {m: sorted(project_imports(m) & (STAGE_MODULES - {m})) for m in modules_under("stages")}
    assert {m: found for m, found in importers.items() if found} == {}


# The quantization core's entry points: what stages and the open backend may import from it. Its insides (the
# Calibrator and its thread pool, the onnxruntime runner and its buffers, the rewrites' shared record) are its own.
QUANTIZATION_ENTRY_POINTS = {f"stages.quantization.{name}" for name in (
    "calibrate", "histograms", "thresholds", "graph_index", "int8_rewrite", "fp16", "lint", "export_folder",
    "builder_check")}


def test_code_outside_the_quantization_core_calls_only_its_entry_points():
    reaching_in = {m: sorted(i for i in project_imports(m) if i.startswith("stages.quantization")
                             and i not in QUANTIZATION_ENTRY_POINTS | {"stages.quantization"})
                   for m in modules_under("stages") if not m.startswith("stages.quantization")}
    assert {m: found for m, found in reaching_in.items() if found} == {}


def import_cycles() -> list[list[str]]:
    """The groups of modules under stages/ that import each other in a ring, function-level imports included:
    the strongly connected components of the import graph, by networkx (which DVC builds its own graphs with)."""
    import networkx

    modules = set(modules_under("stages"))
    graph = networkx.DiGraph((m, i) for m in modules for i in project_imports(m) if i in modules and i != m)
    return sorted(sorted(group) for group in networkx.strongly_connected_components(graph) if len(group) > 1)


def test_no_modules_import_each_other_in_a_ring():
    assert import_cycles() == []


def test_a_ring_of_imports_is_seen(tmp_path, monkeypatch):
    # the check above would pass vacuously if it could not see a ring: engines importing tensorrt_builds
    # (which imports engine_request) becomes a ring once engine_request imports engines
    import test_layering
    real = test_layering.project_imports
    ring = {"stages.open_backend.engine_request": {"stages.open_backend.engines"}}
    monkeypatch.setattr(test_layering, "project_imports", lambda m: real(m) | ring.get(m, set()))
    assert ["stages.open_backend.engine_request", "stages.open_backend.engines",
            "stages.open_backend.tensorrt_builds"] in import_cycles()


def test_the_top_of_stages_holds_only_stage_modules_and_packages():
    modules = {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__"}
    assert {f"stages.{m}" for m in modules} == STAGE_MODULES
    assert all((p / "__init__.py").is_file() for p in (ROOT / "stages").iterdir()
               if p.is_dir() and p.name != "__pycache__")


def test_every_package_says_what_belongs_there():
    import ast
    for init in (ROOT / "stages").rglob("__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring.split()) >= 15, init.relative_to(ROOT)


def test_the_rules_see_the_imports_they_check():
    # the checks above would pass vacuously if imports went unseen
    assert "stages.tao_backend.runners" in project_imports("stages.tao_backend.export")
    assert "stages.spec.textformat" in project_imports("stages.spec.paths")
    assert "stages.pipeline.layout" in project_imports("stages.export")
    assert "stages.formats.onnx_model" in project_imports("stages.formats.deepstream")
    assert outside("stages.pipeline.resolved_spec", ("stages.pipeline",)) == [
        "stages.detectnet_v2.postprocessing", "stages.detectnet_v2.preprocessing", "stages.detectnet_v2.spec_facts",
        "stages.spec"]
