"""A team shares what one machine built through a DVC remote; queued experiments run in parallel
give what they give one by one."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml

from helpers.commands import ran, run
from helpers.projects import SMALL_SAMPLE, make_project
from stages.pipeline.layout import (CALIBRATION_DIR, CODE_DIR, CONVERT_REPORT, ENGINE_DIR, EVALUATE_REPORT,
                                    EVALUATION_DIR, EXPORT_DIR, EXPORT_REPORT, EXPORT_TIMINGS, PARAMS_DIR, PLATFORM_FILE,
                                    SPEC_DIR,
                                    TRITON_DIR, VALIDATED_FILE, engine_file)

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def built_and_pushed(tmp_path):
    first = make_project(tmp_path / "first", SMALL_SAMPLE)
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], first)
    run(["dvc", "remote", "modify", "shared", "verify", "true"], first)  # check hashes on pull
    run(["dvc", "repro"], first)
    run([*GIT, "add", "-A"], first)
    run([*GIT, "commit", "-qm", "built"], first)
    run(["dvc", "push"], first)
    return first, remote


def test_a_second_clone_pulls_and_has_nothing_to_run(tmp_path):
    first, _ = built_and_pushed(tmp_path)
    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path)
    run(["dvc", "pull"], second)
    assert (second / engine_file("open", "onnxruntime")).read_bytes() == (first / engine_file("open", "onnxruntime")).read_bytes()
    result = run(["dvc", "repro"], second)
    assert ran(result.stdout) == []


def test_another_checkout_rebuilds_byte_identical_outputs(tmp_path):
    first = make_project(tmp_path / "first", SMALL_SAMPLE + ["export=int8"])
    run(["dvc", "repro"], first)
    run([*GIT, "add", "-A"], first)
    run([*GIT, "commit", "-qm", "built"], first)
    second = tmp_path / "elsewhere" / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path)
    # a fresh clone, no remote, nothing run: HEAD's metrics are in git, so DVC reads them
    shown = run(["dvc", "metrics", "show", "--json"], second)
    assert "failed" not in shown.stderr.lower()
    figures = json.loads(shown.stdout)
    assert figures[""]["data"]["metrics/evaluate.json"]["data"]["engine"]["precision"] == "int8"  # "": the workspace
    run(["dvc", "repro", "--force"], second)  # rebuilt from scratch, at another path, with an empty cache
    diff = run(["dvc", "metrics", "diff", "HEAD", "--json"], second)
    assert "failed to load" not in diff.stderr
    # the figures are the same as the commit's; only the timings moved
    changed = run(["git", "status", "--porcelain", "metrics"], second).stdout.split()[1::2]
    assert set(changed) <= {"metrics/timings.json"}

    def outputs(project):  # every stage output's hash; convert's report and export's timings differ
        stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
        return {o["path"]: o["md5"] for stage in stages.values() for o in stage.get("outs", [])
                if o["path"] not in (CONVERT_REPORT, EXPORT_TIMINGS, "metrics/timings.json")}
    assert outputs(second) == outputs(first)
    assert sorted(outputs(first)) == [CALIBRATION_DIR, CODE_DIR, ENGINE_DIR,
                                      EVALUATION_DIR, EXPORT_DIR, PARAMS_DIR,
                                      PLATFORM_FILE,
                                      EVALUATE_REPORT, EXPORT_REPORT,
                                      SPEC_DIR, TRITON_DIR, VALIDATED_FILE, "data/sample",
                                      "metrics/convert.json", "metrics/evaluate.json", "metrics/export.json",
                                      "models/sample"]


def test_a_corrupted_file_in_the_remote_is_detected_on_pull(tmp_path):
    first, remote = built_and_pushed(tmp_path)
    victims = sorted(p for p in remote.rglob("*") if p.is_file() and not p.name.endswith(".dir")
                     and p.stat().st_size > 100_000)
    victim = victims[0]
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path)
    result = run(["dvc", "pull"], second, check=False)
    assert result.returncode != 0
    assert "Checkout failed for following targets" in result.stderr
    # the corrupted object was refused: it is neither in the clone's workspace nor in its cache
    corrupted = bytes(data)
    assert not [p for p in second.rglob("*") if p.is_file() and ".git" not in p.parts
                and p.stat().st_size == len(corrupted) and p.read_bytes() == corrupted]


def wait_for_the_queue(project) -> str:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], project, timeout=120).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish:\n{status}")


def experiments(project) -> dict[str, dict]:
    """{experiment name: {"params": ..., "metrics": {file: data}}} from `dvc exp show --json`."""
    found = {}
    for commit in json.loads(run(["dvc", "exp", "show", "--json"], project).stdout):
        for exp in commit.get("experiments") or []:
            data = exp["revs"][0]["data"]
            found[exp["name"]] = {"params": data["params"]["params.yaml"]["data"],
                                  "metrics": {path: m["data"] for path, m in data["metrics"].items()}}
    return found


def test_the_readme_comparison_shows_each_experiment_with_its_own_figures(tmp_path):
    """README's comparison, run as written, on a project whose gate passes no drop at all (max_map_drop 0),
    so that verdicts differ from row to row, and records them (on_gate_failure=record): no run here may
    depend on an engine losing exactly nothing, which the last bits of a CPU's kernels decide. Each row
    shows that experiment's own mAP and its verdict; the queued runs, two at a time, match runs made one
    by one."""
    project = make_project(tmp_path / "project", SMALL_SAMPLE + ["evaluate.max_map_drop=0",
                                                                 "evaluate.on_gate_failure=record"])
    run(["dvc", "repro"], project)
    run([*GIT, "add", "-A"], project)
    run([*GIT, "commit", "-qm", "baseline"], project)
    one_by_one = {}
    for name, overrides in (("seq-fp16", ["export=fp16"]), ("seq-minmax", ["export=int8",
                                                                           "backend.calibration_method=minmax"])):
        run(["dvc", "exp", "run", "-n", name, *(a for o in overrides for a in ("-S", o))], project)
        one_by_one[name] = json.loads((project / "metrics/convert.json").read_text())
    run(["git", "checkout", "--", "."], project)

    from test_readme import COMPARISON, block
    commands = block(COMPARISON).commands()
    assert len(commands) == 5
    queue_int8, queue_fp16, start, status, show = commands
    for command in (queue_int8, queue_fp16):
        run(["bash", "-c", command], project)
    # The workers run detached and keep whatever output they were given: not a pipe we wait on.
    run(["bash", "-c", start], project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, capture_output=False,
        timeout=120)
    try:
        assert status == "dvc queue status"
        final = wait_for_the_queue(project)
    finally:
        run(["dvc", "queue", "stop", "--kill"], project, check=False, timeout=120)
    assert final.count("Success") == 4, final
    table = run(["bash", "-c", show], project, env={"COLUMNS": "250"}).stdout

    found = experiments(project)
    queued = {name: exp for name, exp in found.items() if not name.startswith("seq-")}
    assert sorted((e["params"]["export"]["data_type"], e["params"]["backend"]["calibration_method"])
                  for e in queued.values()) == [("fp16", "auto"), ("int8", "entropy"), ("int8", "minmax"),
                                                ("int8", "percentile")]
    baseline = json.loads((project / "metrics/evaluate.json").read_text())
    for name, exp in queued.items():
        evaluation = exp["metrics"]["metrics/evaluate.json"]
        # its own figures: its precision, a drop that is its own reference minus its own engine, its verdict
        assert evaluation["engine"]["precision"] == exp["params"]["export"]["data_type"], name
        assert evaluation["mAP_drop"] == pytest.approx(evaluation["reference"]["mAP"] - evaluation["engine"]["mAP"],
                                                       abs=2e-6)
        assert evaluation["gate"] in ("pass", "fail", "inconclusive"), name
        assert evaluation["gate"] != "pass" or evaluation["mAP_drop"] <= 0, name  # never more lenient than the drop
        [row] = [line for line in table.splitlines() if f"[{name}]" in line]
        assert evaluation["gate"] in row.split() and exp["params"]["backend"]["calibration_method"] in row.split()
        assert "Failed" not in row
    assert baseline["engine"]["precision"] == "fp32"
    # the two one-by-one runs and their queued twins built the same engines
    twins = {"seq-fp16": ("fp16", "auto"), "seq-minmax": ("int8", "minmax")}
    for sequential, (data_type, method) in twins.items():
        [twin] = [e for e in queued.values() if (e["params"]["export"]["data_type"],
                                                 e["params"]["backend"]["calibration_method"]) == (data_type, method)]
        ours, theirs = twin["metrics"]["metrics/convert.json"], one_by_one[sequential]
        assert ours["engine_size_bytes"] == theirs["engine_size_bytes"]
        for output, figures in theirs["outputs"].items():
            assert abs(ours["outputs"][output]["cosine_similarity"] - figures["cosine_similarity"]) < 1e-6
    # an experiment no one-by-one run made before it: its stages ran (the twins' come from the run-cache)
    [fresh] = [name for name, e in queued.items() if e["params"]["backend"]["calibration_method"] == "entropy"]
    logs = run(["dvc", "queue", "logs", fresh], project).stdout
    # progress as whole lines, not a terminal's redrawn bar: 8 validation and 24 calibration images
    assert "evaluate: 32/32 images in" in logs
    assert "\r" not in logs and not [line for line in logs.splitlines() if line and not line.strip()]
    leftovers = [p for p in (project / "artifacts").iterdir() if p.name.endswith(".partial")]
    assert leftovers == []
