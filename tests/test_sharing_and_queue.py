"""A team shares what one machine built through a DVC remote; queued experiments run in parallel
give what they give one by one."""
from __future__ import annotations

import json
import re
import subprocess
import time

import yaml

from conftest import SMALL_SAMPLE, make_project, ran, run

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
    assert (second / "artifacts/engine/model.onnx").read_bytes() == (first / "artifacts/engine/model.onnx").read_bytes()
    result = run(["dvc", "repro"], second)
    assert ran(result.stdout) == []


def test_another_checkout_rebuilds_byte_identical_outputs(tmp_path):
    first = make_project(tmp_path / "first", SMALL_SAMPLE + ["export=int8"])
    run(["dvc", "repro"], first)
    run([*GIT, "add", "-A"], first)
    run([*GIT, "commit", "-qm", "built"], first)
    second = tmp_path / "elsewhere" / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path)
    run(["dvc", "repro", "--force"], second)  # rebuilt from scratch, at another path, with an empty cache

    def outputs(project):  # every stage output's hash; convert's metrics hold timings, so they differ
        stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
        return {o["path"]: o["md5"] for stage in stages.values() for o in stage.get("outs", [])
                if o["path"] != "metrics/convert.json"}
    assert outputs(second) == outputs(first)
    assert sorted(outputs(first)) == ["artifacts/calibration", "artifacts/code", "artifacts/engine",
                                      "artifacts/evaluation", "artifacts/export", "artifacts/platform.json",
                                      "artifacts/triton", "artifacts/validated.txt", "data/sample",
                                      "metrics/evaluate.json", "models/sample"]


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


def test_queued_experiments_in_parallel_match_one_by_one(tmp_path):
    project = make_project(tmp_path / "project", SMALL_SAMPLE)
    run(["dvc", "repro"], project)
    run([*GIT, "add", "-A"], project)
    run([*GIT, "commit", "-qm", "baseline"], project)
    variants = ["fp32", "fp16", "int8"]
    one_by_one = {}
    for variant in variants:
        run(["dvc", "exp", "run", "-S", f"export={variant}", "-n", f"seq-{variant}"], project)
        one_by_one[variant] = json.loads((project / "metrics/convert.json").read_text())
    run(["git", "checkout", "--", "."], project)
    for variant in variants:
        run(["dvc", "exp", "run", "--queue", "-S", f"export={variant}", "-n", f"par-{variant}"], project)
    # The workers run detached and keep whatever output they were given: not a pipe we wait on.
    run(["dvc", "queue", "start", "-j", "2"], project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        capture_output=False, timeout=120)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = run(["dvc", "queue", "status"], project, timeout=120).stdout
            if not re.search(r"\b(Queued|Running)\b", status):
                break
            time.sleep(2)
    finally:
        run(["dvc", "queue", "stop", "--kill"], project, check=False, timeout=120)
    assert status.count("Success") == 3, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    parallel = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            name = exp.get("name") or ""
            if name.startswith("par-"):
                data = exp["revs"][0]["data"]
                parallel[name[4:]] = data["metrics"]["metrics/convert.json"]["data"]
    assert set(parallel) == set(variants)
    for variant in variants:
        ours, theirs = parallel[variant], one_by_one[variant]
        assert ours["precision"] == theirs["precision"] == variant
        assert ours["engine_size_bytes"] == theirs["engine_size_bytes"]
        for output, figures in theirs["outputs"].items():
            assert abs(ours["outputs"][output]["cosine_similarity"] - figures["cosine_similarity"]) < 1e-6
            assert abs(ours["outputs"][output]["max_abs_error"] - figures["max_abs_error"]) < 1e-5
    leftovers = [p for p in (project / "artifacts").iterdir() if p.name.endswith(".partial")]
    assert leftovers == []
