"""The workflows users drive, with real dvc and real Hydra composition in a temp git repo."""
from __future__ import annotations

import json
import pathlib
import re
import sys
from importlib import metadata

import pytest
import yaml

from helpers.commands import PROBE, ran, run, up_to_date
from helpers.paths import ROOT
from helpers.projects import SMALL_SAMPLE, copy_tracked_files, make_project
from stages.pipeline.stage_params import PIPELINE_STAGES

STAGES = ["code", *PIPELINE_STAGES]


@pytest.fixture(scope="module")
def built_fp32(tmp_path_factory):
    """The small project after `dvc repro` at fp32 (shared by this module; never modified)."""
    project = make_project(tmp_path_factory.mktemp("built_fp32") / "project")
    run(["dvc", "repro"], project)
    return project


@pytest.fixture
def project(built_fp32, tmp_path):
    """A private copy of built_fp32: git repo, DVC cache and outputs, as if this test had built it."""
    import shutil
    return pathlib.Path(shutil.copytree(built_fp32, tmp_path / "project", symlinks=True))


def test_repro_builds_everything_then_has_nothing_to_do(tmp_path):
    project = make_project(tmp_path / "project")
    first = run(["dvc", "repro"], project)
    assert ran(first.stdout) == [name for name in STAGES if name != "validate"]  # validate always runs
    for path in ["artifacts/calibration/calibration.tensor", "artifacts/export/model.onnx",
                 "artifacts/engine/model.onnx", "metrics/convert.json", "metrics/evaluate.json"]:
        assert (project / path).is_file(), path
    second = run(["dvc", "repro"], project)
    assert ran(second.stdout) == []
    assert up_to_date(project)


@pytest.mark.parametrize("override, expected", [
    ("sample.seed=8", list(PIPELINE_STAGES[1:])),
    # an fp32 export does not read the tensorfile: its output comes out byte-identical, so DVC stops there, but
    # for metrics, which publishes the new time of export's check with NVIDIA's builder (a cheap copy)
    ("calibration.max_batches=2", ["calibration_tensorfile", "export", "metrics"]),
    ("export.gen_ds_config=false", ["export", "convert", "metrics"]),
    ("convert.verify_images=4", ["convert", "metrics"]),
    ("evaluate.batch_size=4", ["evaluate"]),
    # how export calibrates is export's alone: never the tensorfile (and an fp32 export stops there, but for
    # its timings' metrics)
    ("backend.calibration_method=minmax", ["export", "metrics"]),
])
def test_a_param_change_reruns_exactly_its_stage_and_downstream(project, override, expected):
    # validate reads every key and runs every time (`ran` leaves it out); its output does not change while the
    # config is valid
    run([sys.executable, "-m", "stages.params", *SMALL_SAMPLE, override], project)
    assert ran(run(["dvc", "repro"], project).stdout) == expected


def test_a_calibration_change_reaches_convert_through_an_int8_export(project_copy):
    project = project_copy  # the small project, built with export=int8
    run([sys.executable, "-m", "stages.params", *SMALL_SAMPLE, "export=int8", "calibration.max_batches=2"], project)
    assert ran(run(["dvc", "repro"], project).stdout) == ["calibration_tensorfile", "export", "convert", "evaluate",
                                                          "metrics", "triton"]
    run([sys.executable, "-m", "stages.params", *SMALL_SAMPLE, "export=int8", "calibration.max_batches=2",
         "backend.calibration_method=minmax"], project)
    assert ran(run(["dvc", "repro"], project).stdout) == ["export", "convert", "evaluate", "metrics", "triton"]


def test_exp_run_with_a_config_group_and_a_key(project):
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], project)
    result = run(["dvc", "exp", "run", "-S", "export=int8", "-S", "convert.max_batch_size=4"], project)
    assert ran(result.stdout) == ["export", "convert", "evaluate", "metrics", "triton"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["export"]["data_type"] == "int8" and params["convert"]["max_batch_size"] == 4
    metrics = json.loads((project / "metrics/convert.json").read_text())
    assert metrics["precision"] == "int8" and metrics["max_batch_size"] == 4
    assert "max_batch" in json.loads((project / "metrics/timings.json").read_text())["latency_ms"]

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


def _changed_deps(project) -> dict[str, dict[str, str]]:
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    return {stage: changes["changed deps"] for stage, entries in status.items() for changes in entries
            if isinstance(changes, dict) and "changed deps" in changes}


def test_committed_dvc_lock_records_the_committed_code(tmp_path):
    # a clone must find dvc.lock true to its code, or `dvc pull` hands it outputs of other code
    copy_tracked_files(tmp_path, lambda name: name.startswith(("stages/", "environment/", ".dvc", "dvc.",
                                                               "params.yaml")))
    run(["git", "init", "-q"], tmp_path)
    assert not _changed_deps(tmp_path).get("code"), "run `make repro` and commit dvc.lock"
    run([sys.executable, "-m", "stages.code", "--params", "params.yaml"], tmp_path)
    stale = {stage: [path for path in deps if path.startswith("artifacts/code/")]
             for stage, deps in _changed_deps(tmp_path).items()}
    assert {stage: paths for stage, paths in stale.items() if paths} == {}, "run `make repro` and commit dvc.lock"


def test_dvc_yaml_names_the_paths_the_stages_write():
    from stages.pipeline import layout
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["code"]["outs"] == [layout.CODE_DIR]
    assert stages["validate"]["outs"] == [layout.VALIDATED_FILE, layout.PARAMS_DIR]
    assert stages[PROBE]["outs"] == [layout.PLATFORM_FILE]
    assert stages["sample"]["outs"] == [layout.SAMPLE_DATA, layout.SAMPLE_MODELS]
    assert stages["calibration_tensorfile"]["outs"] == [layout.SPEC_DIR, layout.CALIBRATION_DIR]
    assert stages["export"]["outs"] == [layout.EXPORT_DIR, layout.EXPORT_REPORT, layout.EXPORT_TIMINGS]
    assert stages["convert"]["outs"] == [layout.ENGINE_DIR, layout.CONVERT_REPORT]
    assert stages["evaluate"]["outs"] == [layout.EVALUATION_DIR, layout.EVALUATE_REPORT]
    assert stages["metrics"]["metrics"] == [{path: {"cache": False}} for path in
                                            (layout.EXPORT_METRICS_FILE, layout.METRICS_FILE, layout.TIMINGS_FILE,
                                             layout.EVALUATE_METRICS_FILE)]
    assert stages["triton"]["outs"] == [layout.TRITON_DIR]
    assert list(stages) == ["code", "validate", PROBE, *PIPELINE_STAGES[1:]]


def test_the_files_stages_read_are_the_layouts():
    from stages.pipeline import layout
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in ("export", "convert", "evaluate", "triton"):
        assert layout.RESOLVED_SPEC in stages[stage]["deps"], stage
    assert layout.EXPORTED_MODEL in stages["evaluate"]["deps"]
    assert layout.EXPORT_REPORT in stages["evaluate"]["deps"]
    assert all(path.startswith(layout.SPEC_DIR + "/") for path in (layout.RESOLVED_SPEC,))
    assert layout.TENSORFILE.startswith(layout.CALIBRATION_DIR + "/")
    assert layout.CALIBRATION_CACHE.startswith(layout.EXPORT_DIR + "/")
    for engine in ("onnxruntime", "tensorrt", "trtexec"):
        assert layout.engine_file("open", engine).startswith(layout.ENGINE_DIR + "/")


def _reads_comments() -> dict[str, str]:
    """{stage: its `# reads ...` comment in dvc.yaml, its continuation lines joined}."""
    found, stage = {}, None
    for line in (ROOT / "dvc.yaml").read_text().splitlines():
        if re.match(r"  \w+:", line):  # a stage's name, perhaps with a comment after it
            stage = line.split(":")[0].strip()
        elif line.startswith("    # reads "):
            found[stage] = line[len("    # reads "):]
        elif line.startswith("    #   ") and stage in found:
            found[stage] += " " + line[len("    #   "):]
    return found


def _described(entries: tuple[str, ...]) -> str:
    from stages.pipeline.stage_params import CALIBRATION_ONLY
    less = [e[1:] for e in entries if e.startswith("-") and e not in CALIBRATION_ONLY]
    text = ", ".join(e for e in entries if not e.startswith("-"))
    text += f" (less {', '.join(less)})" if less else ""
    return text + ("; not how export calibrates" if set(CALIBRATION_ONLY) <= set(entries) else "")


def test_each_stage_in_dvc_yaml_says_which_config_it_reads_as_stage_params_lists_it():
    from stages.pipeline.stage_params import STAGE_PARAMS
    assert _reads_comments() == {stage: _described(entries) for stage, entries in STAGE_PARAMS.items()}


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_prints_its_config_with_overrides(stage):
    result = run([sys.executable, "-m", f"stages.{stage}", "export=fp16", "--cfg", "job"], ROOT)
    assert yaml.safe_load(result.stdout)["export"]["data_type"] == "fp16"


def test_stage_help_explains_overrides_and_params():
    result = run([sys.executable, "-m", "stages.export", "--help"], ROOT)
    assert "--params" in result.stdout and "--cfg" in result.stdout and "export=int8" in result.stdout


@pytest.mark.parametrize("stage", [s for s in PIPELINE_STAGES if s != "metrics"])  # metrics reads no parameter
def test_each_stage_help_shows_an_override_of_a_parameter_it_reads(stage):
    from stages.pipeline.cli import EXAMPLE_OVERRIDES
    from stages.pipeline.stage_params import STAGE_PARAMS
    example = EXAMPLE_OVERRIDES[stage]
    assert f"python -m stages.{stage} {example} --cfg job" in run([sys.executable, "-m", f"stages.{stage}", "--help"],
                                                                 ROOT).stdout
    key = example.split("=")[0]
    read = STAGE_PARAMS.get(stage)  # None: validate, which reads every key
    assert read is None or any(key == p or key.startswith(f"{p}.") for p in read), (key, read)


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


# ----------------------------------------------------------------- code deps: one fingerprint a stage

def fingerprinted(stage: str) -> set[str]:
    from stages.code import fingerprint
    return {line.split("  ", 1)[1] for line in fingerprint(stage).splitlines() if "  " in line}


def fingerprinted_packages(stage: str) -> dict[str, str]:
    from stages.code import fingerprint
    return dict(line.split("==") for line in fingerprint(stage).splitlines() if "==" in line)


def test_each_stage_depends_on_its_slice_of_the_config_and_lists_no_params():
    from stages.pipeline.layout import PARAMS_DIR
    from stages.pipeline.stage_params import STAGE_PARAMS
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(STAGE_PARAMS) == set(PIPELINE_STAGES) - {"validate", "metrics"}
    for stage in STAGE_PARAMS:
        assert f"{PARAMS_DIR}/{stage}.json" in stages[stage]["deps"], stage
        assert "params" not in stages[stage], stage
    assert stages["validate"]["params"] == [{"params.yaml": None}]


def test_a_stage_that_reads_a_key_it_does_not_list_fails_naming_it(tmp_path):
    from stages.pipeline.config import load
    from stages.pipeline.stage_params import for_stage
    masked = for_stage(load(params=ROOT / "params.yaml"), "calibration_tensorfile")
    assert masked.backend.name == "open" and masked.calibration.max_batches > 0
    with pytest.raises(Exception, match="calibration_method"):
        masked.backend.calibration_method  # noqa: B018 - the read is the test
    with pytest.raises(Exception, match="evaluate"):
        masked.evaluate  # noqa: B018


@pytest.mark.parametrize("stage", ["sample", "calibration_tensorfile", "export", "convert", "evaluate", "triton"])
def test_every_key_a_stage_lists_is_named_in_its_code(stage):
    # the other half of "exactly what it reads": a listed key that no file the stage runs names is stale
    from stages.pipeline.stage_params import STAGE_PARAMS
    from stages.pipeline.imports import stage_code
    code = "".join(path.read_text() for path in stage_code(stage) if path.name != "config.py")
    for entry in STAGE_PARAMS[stage]:
        if entry.startswith("-"):
            continue
        name = entry.split(".")[-1]
        assert f".{name}" in code or f'"{name}"' in code, f"{stage} lists {entry}, which its code never names"


def test_the_code_stage_depends_on_all_code_and_each_stage_on_its_fingerprint():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["code"]["deps"] == ["stages", "environment"]
    for stage in PIPELINE_STAGES:
        code_deps = [d for d in stages[stage]["deps"] if d.startswith(("stages", "artifacts/code"))]
        assert code_deps == [f"artifacts/code/{stage}.sha256"], stage


@pytest.mark.parametrize("stage", PIPELINE_STAGES)
def test_a_fingerprint_covers_every_file_the_stage_loads(stage):
    # the oracle is Python's own import system, not the import-statement reader the fingerprint uses:
    # import the stage and both backends' step modules of that name (backends.step picks one at run time)
    modules = [f"stages.{package}{stage}" for package in ("", "open_backend.", "tao_backend.")
               if (ROOT / f"stages/{package.replace('.', '/')}{stage}.py").is_file()]
    probe = (f"import importlib, json, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
             "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'stages')))")
    files = json.loads(run([sys.executable, "-c", probe], ROOT).stdout)
    loaded = {pathlib.Path(f).relative_to(ROOT).as_posix() for f in files}
    assert f"stages/{stage}.py" in loaded
    assert sorted(loaded - fingerprinted(stage)) == []


@pytest.mark.parametrize("stage", PIPELINE_STAGES)
def test_a_fingerprint_leaves_out_the_other_stages_code(stage):
    others = [s for s in PIPELINE_STAGES if s != stage]
    foreign = {f"stages/{package}{other}.py" for other in others for package in ("", "open_backend/", "tao_backend/")}
    assert sorted(fingerprinted(stage) & foreign) == []


def test_a_fingerprint_names_each_file_with_its_sha256():
    import hashlib

    from stages.code import fingerprint
    lines = [line for line in fingerprint("sample").splitlines() if "  " in line]
    assert lines == sorted(lines, key=lambda line: line.split("  ", 1)[1])
    for line in lines:
        digest, path = line.split("  ", 1)
        assert digest == hashlib.sha256((ROOT / path).read_bytes()).hexdigest()


@pytest.mark.parametrize("stage", PIPELINE_STAGES)
def test_a_fingerprint_names_every_installed_package_the_stage_loads_at_its_version(stage):
    # the oracle is Python's import system again: the distributions of every module importing the stage loads
    modules = [f"stages.{package}{stage}" for package in ("", "open_backend.", "tao_backend.")
               if (ROOT / f"stages/{package.replace('.', '/')}{stage}.py").is_file()]
    probe = (f"import importlib, json, sys\nfrom importlib import metadata\nat_start = set(sys.modules)\n"
             f"for name in {modules!r}: importlib.import_module(name)\n"
             "by_module = metadata.packages_distributions()\n"
             "loaded = {n.split('.')[0] for n in set(sys.modules) - at_start}\n"
             "print(json.dumps(sorted({d for n in loaded for d in by_module.get(n, ())})))")
    loaded = {name.lower().replace("_", "-").replace(".", "-") for name in json.loads(run([sys.executable, "-c", probe],
                                                                                          ROOT).stdout)}
    # the project itself (its files are the fingerprint's other lines), and what a package imports when it
    # happens to be installed without requiring it, for a feature no output depends on: attrs (omegaconf:
    # attrs classes as configs), colorama (tqdm: Windows consoles) and scipy (numba: np.linalg in jitted
    # code, which no kernel of ours calls; installed for the tests' scikit-learn)
    loaded -= {"detectnet-deploy", "attrs", "colorama", "scipy"}
    listed = fingerprinted_packages(stage)
    assert sorted(loaded - set(listed)) == []
    for name, version in listed.items():
        assert version == metadata.version(name), name


@pytest.mark.parametrize("edited, expected", [
    ("stages/open_backend/engines.py", ["code", "convert", "metrics"]),  # convert's report holds timings
    ("stages/bundled_sample/model.py", ["code", "sample"]),
    # sample's output comes out byte-identical: DVC stops there, but the others run the edited file
    ("stages/pipeline/errors.py", ["code", "sample", "calibration_tensorfile", "export", "convert", "evaluate",
                                   "metrics", "triton"]),
])
def test_a_code_change_reruns_exactly_the_stages_that_run_it(project, edited, expected):
    with (project / edited).open("a") as source:
        source.write("# edited\n")
    assert ran(run(["dvc", "repro"], project).stdout) == expected
    assert ran(run(["dvc", "repro"], project).stdout) == []


def test_python_bytecode_caches_are_not_code(project):
    # running a stage writes stages/__pycache__ (unless PYTHONDONTWRITEBYTECODE is set): .dvcignore keeps
    # it out of the code stage's dependency, or every run would make the next one re-run `code`
    run([sys.executable, "-m", "compileall", "-q", "stages"], project)
    assert list((project / "stages").glob("__pycache__/*.pyc"))
    assert ran(run(["dvc", "repro"], project).stdout) == []


def test_make_params_composes_the_experiment_named(tmp_path):
    project = make_project(tmp_path / "project")
    (project / "conf/experiment/mine.yaml").write_text("# @package _global_\nconvert:\n  verify_images: 3\n")
    venv = pathlib.Path(sys.executable).parents[1]
    # -o: this venv's stamp counts as up to date, so `setup` installs nothing in this copy
    run(["make", "-o", venv / ".installed", "params", "experiment=mine", f"VENV={venv}"], project)
    assert yaml.safe_load((project / "params.yaml").read_text())["convert"]["verify_images"] == 3
