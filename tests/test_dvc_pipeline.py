"""The workflows users drive, with real dvc and real Hydra composition in a temp git repo."""
from __future__ import annotations

import ast
import json
import re
import sys

import pytest
import yaml

from conftest import ROOT, SMALL_SAMPLE, copy_tracked_files, imports_of, make_project, module_file, run

STAGES = ["sample", "calibration_tensorfile", "export", "convert"]


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture
def project(tmp_path):
    project = make_project(tmp_path / "project")
    run(["dvc", "repro"], project)
    return project


def test_repro_builds_everything_then_has_nothing_to_do(tmp_path):
    project = make_project(tmp_path / "project")
    first = run(["dvc", "repro"], project)
    assert ran(first.stdout) == STAGES
    for path in ["artifacts/calibration/calibration.tensor", "artifacts/export/model.onnx",
                 "artifacts/engine/model.onnx", "metrics/convert.json"]:
        assert (project / path).is_file(), path
    second = run(["dvc", "repro"], project)
    assert ran(second.stdout) == []
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout


@pytest.mark.parametrize("override, expected", [
    ("sample.seed=8", STAGES),
    # an fp32 export does not read the tensorfile: its output comes out byte-identical, so DVC stops there
    ("calibration.max_batches=2", ["calibration_tensorfile", "export"]),
    ("export.gen_ds_config=false", ["export", "convert"]),
    ("convert.verify_images=4", ["convert"]),
])
def test_a_param_change_reruns_exactly_its_stage_and_downstream(project, override, expected):
    run([sys.executable, "-m", "stages.params", *SMALL_SAMPLE, override], project)
    assert ran(run(["dvc", "repro"], project).stdout) == expected


def test_a_calibration_change_reaches_convert_through_an_int8_export(tmp_path):
    project = make_project(tmp_path / "project", SMALL_SAMPLE + ["export=int8"])
    run(["dvc", "repro"], project)
    run([sys.executable, "-m", "stages.params", *SMALL_SAMPLE, "export=int8", "calibration.max_batches=2"], project)
    assert ran(run(["dvc", "repro"], project).stdout) == ["calibration_tensorfile", "export", "convert"]


def test_exp_run_with_a_config_group_and_a_key(project):
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], project)
    result = run(["dvc", "exp", "run", "-S", "export=int8", "-S", "convert.max_batch_size=4"], project)
    assert ran(result.stdout) == ["export", "convert"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["export"]["data_type"] == "int8" and params["convert"]["max_batch_size"] == 4
    metrics = json.loads((project / "metrics/convert.json").read_text())
    assert metrics["precision"] == "int8" and "batch_4" in metrics["latency_ms"]

    diff = run(["dvc", "params", "diff", "--json"], project).stdout
    changed = json.loads(diff)["params.yaml"]
    assert changed["export.data_type"] == {"old": "fp32", "new": "int8"}
    assert (changed["convert.max_batch_size"]["old"], changed["convert.max_batch_size"]["new"]) == (8, 4)
    assert "precision" in run(["dvc", "metrics", "diff", "--json"], project).stdout

    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    text = json.dumps(shown)
    assert '"int8"' in text and "cosine_similarity" in text


def test_run_cache_restores_a_combination_seen_before(project):
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], project)
    run(["dvc", "exp", "run", "-S", "export=fp16"], project)
    back = run(["dvc", "exp", "run", "-S", "export=fp32"], project)
    assert ran(back.stdout) == []
    assert "Stage 'export' is cached - skipping run, checking out outputs" in back.stdout
    assert json.loads((project / "metrics/convert.json").read_text())["precision"] == "fp32"


def test_committed_params_yaml_is_the_composition_of_conf():
    result = run([sys.executable, "-m", "stages.params", "--check"], ROOT, check=False)
    assert result.returncode == 0, result.stderr


def test_committed_dvc_lock_records_the_committed_code(tmp_path):
    # a clone must find dvc.lock true to its code, or `dvc pull` hands it outputs of other code
    copy_tracked_files(tmp_path, lambda name: name.startswith(("stages/", ".dvc/", "dvc.", "params.yaml")))
    run(["git", "init", "-q"], tmp_path)
    status = json.loads(run(["dvc", "status", "--json"], tmp_path).stdout)
    stale = {stage: changes["changed deps"] for stage, entries in status.items() for changes in entries
             if isinstance(changes, dict) and "changed deps" in changes}
    stale = {stage: {p: how for p, how in deps.items() if p.startswith("stages") and how != "deleted"}
             for stage, deps in stale.items()}
    assert {stage: deps for stage, deps in stale.items() if deps} == {}, "run `make repro` and commit dvc.lock"


def test_dvc_yaml_names_the_paths_the_stages_write():
    from stages import config
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["sample"]["outs"] == [config.SAMPLE_DATA, config.SAMPLE_MODELS]
    assert stages["calibration_tensorfile"]["outs"] == [config.CALIBRATION_DIR]
    assert stages["export"]["outs"] == [config.EXPORT_DIR]
    assert stages["convert"]["outs"] == [config.ENGINE_DIR]
    assert list(stages["convert"]["metrics"][0]) == [config.METRICS_FILE]
    assert list(stages) == STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_prints_its_config_with_overrides(stage):
    result = run([sys.executable, "-m", f"stages.{stage}", "export=fp16", "--cfg", "job"], ROOT)
    assert yaml.safe_load(result.stdout)["export"]["data_type"] == "fp16"


def test_stage_help_explains_overrides_and_params():
    result = run([sys.executable, "-m", "stages.export", "--help"], ROOT)
    assert "--params" in result.stdout and "--cfg" in result.stdout and "export=fp16" in result.stdout


def test_unknown_group_option_is_a_clear_error():
    result = run([sys.executable, "-m", "stages.export", "export=int9", "--cfg", "job"], ROOT, check=False)
    assert result.returncode == 2
    assert "Could not find 'export/int9'" in result.stderr and "fp16 fp32 int8" in result.stderr


def test_wrongly_typed_override_names_the_key():
    result = run([sys.executable, "-m", "stages.convert", "convert.max_batch_size=many", "--cfg", "job"], ROOT,
                 check=False)
    assert result.returncode == 2
    assert "config key convert.max_batch_size" in result.stderr


def test_dvc_reads_its_yaml_files_with_the_c_parser():
    # dvc.yaml, dvc.lock and params.yaml are read on every dvc command; the pure-Python parser made
    # `dvc status` about a third slower (bench/bench_dvc.py).
    from ruamel.yaml import YAML
    from ruamel.yaml.cyaml import CParser

    assert YAML(typ="safe").Parser is CParser


def _code_of(*roots: str) -> set[str]:
    """The project files that importing `roots` can load, with the packages each module sits in."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(imports_of(name))
    return {str(p.relative_to(ROOT)) for p in seen}


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_exactly_the_code_it_can_run(stage):
    # backends.step imports stages.<open|tao>_backend.<step> by name: those are roots too
    steps = [] if stage == "sample" else [f"stages.{backend}_backend.{stage}" for backend in ("open", "tao")]
    code = _code_of(f"stages.{stage}", *steps)
    # left out of every stage's deps because a docstring changes nothing a stage computes
    init = ast.parse((ROOT / "stages/__init__.py").read_text()).body
    assert len(init) == 1 and isinstance(init[0].value, ast.Constant), "stages/__init__.py holds code now"
    code.discard("stages/__init__.py")
    deps = [d for d in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
            if d.startswith("stages")]

    def covers(dep, path):
        return path == dep or path.startswith(dep + "/")

    assert sorted(p for p in code if not any(covers(d, p) for d in deps)) == [], "code it runs, not in its deps"
    assert [d for d in deps if not any(covers(d, p) for p in code)] == [], "deps the stage never runs"
