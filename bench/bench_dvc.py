"""`dvc repro` with nothing to do vs `dvc status` (target <= 1.3x), and a full `dvc repro` of the
sample from scratch (target: under 2 minutes), in a temp copy of the project. "Nothing to do" still
runs the `platform` probe (always_changed), and the figures count it.

    python bench/bench_dvc.py [--pairs N]

Both commands are short (about half a second) and this machine's speed drifts by up to 2x from one
second to the next (CPU time drifts with wall time: it is not scheduling), so the ratio is measured
two ways:
- instructions executed, counted by valgrind's callgrind: repeatable whatever else the machine does
  (skipped with a note where valgrind is missing);
- wall time of interleaved pairs: the median of the per-pair ratios with its 95% confidence interval
  (distribution-free, from order statistics), and the ratio of the fastest run of each command.
Both are also measured on a one-stage DVC project in the same run: its ratio is DVC's own floor (the
work `repro` always does beyond `status`: importing networkx for the stage graph, loading dvc.yaml a
second time, four nested stage locks instead of one, and the garbage collection all that allocation costs),
so the gap between the two is what this pipeline's definitions add. A third project adds to the one-stage
project an always_changed stage whose command is `echo`: the floor for any pipeline that tracks state
outside the repository the way DVC documents (this pipeline's `platform` stage).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
GIT_IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def sh(args, cwd) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - start


def commit_all(project: Path) -> None:
    sh(["git", "add", "-A"], project)
    sh(["git", *GIT_IDENTITY, "commit", "-qm", "bench"], project)


def copy_of_this_project(project: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project / name)
    sh(["git", "init", "-q"], project)
    commit_all(project)
    return project


def one_stage_project(project: Path) -> Path:
    project.mkdir()
    sh(["git", "init", "-q"], project)
    sh(["dvc", "init", "-q"], project)
    sh(["dvc", "config", "core.analytics", "false"], project)
    (project / "input.txt").write_text("input\n")
    sh(["dvc", "stage", "add", "-q", "-n", "copy", "-d", "input.txt", "-o", "output.txt",
        "cp input.txt output.txt"], project)
    sh(["dvc", "repro", "-q"], project)
    commit_all(project)
    return project


def with_an_always_changed_stage(project: Path) -> Path:
    """The one-stage project plus a stage DVC runs on every repro, whose command does nothing: what
    any always_changed stage costs in DVC itself, before its command's own work."""
    sh(["dvc", "stage", "add", "-q", "-n", "probe", "--always-changed", "-o", "probe.txt",
        "echo probe > probe.txt"], project)
    sh(["dvc", "repro", "-q"], project)
    commit_all(project)
    return project


def instructions(args, cwd) -> int:
    """Instructions the command executes, its child processes included (the `platform` probe DVC runs
    on every repro), as counted by callgrind: one "Collected" line per process."""
    result = subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=yes", "--callgrind-out-file=/dev/null",
                             *args], cwd=cwd, check=True, capture_output=True, text=True, env=ENV)
    return sum(int(n) for n in re.findall(r"Collected\s*:\s*(\d+)", result.stderr))


def noop_vs_status_instructions(projects: dict[str, Path]) -> dict[str, float]:
    return {name: instructions(["dvc", "repro"], project) / instructions(["dvc", "status"], project)
            for name, project in projects.items()}


def median_with_ci(values: list[float]) -> tuple[float, float, float]:
    """The median and a 95% confidence interval for it: the order statistics k and n-k+1, k the
    largest with P(Binomial(n, 1/2) < k) <= 2.5% (no assumption on the distribution)."""
    ordered, n = sorted(values), len(values)
    k = max([j for j in range(1, n // 2 + 1) if sum(math.comb(n, i) for i in range(j)) / 2 ** n <= 0.025],
            default=1)
    return statistics.median(ordered), ordered[k - 1], ordered[n - k]


def noop_vs_status(projects: dict[str, Path], pairs: int) -> dict[str, dict]:
    """Per project: `dvc status` times, no-op `dvc repro` times and their per-pair ratios."""
    for project in projects.values():
        sh(["dvc", "status"], project)  # warm the page cache and the state database
        sh(["dvc", "repro"], project)
    times = {name: ([], []) for name in projects}
    for _ in range(pairs):
        for name, project in projects.items():
            times[name][0].append(sh(["dvc", "status"], project))
            times[name][1].append(sh(["dvc", "repro"], project))
    return {name: {"status": status, "repro": repro, "ratios": [r / s for r, s in zip(repro, status)]}
            for name, (status, repro) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=31, help="interleaved status/repro pairs per project")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours = copy_of_this_project(Path(tmp) / "project")
        full = sh(["dvc", "repro", "-f"], ours)
        print(f"dvc repro of the sample from scratch: {full:.1f} s (target < 120 s)")
        floor = one_stage_project(Path(tmp) / "one-stage")
        probed = with_an_always_changed_stage(one_stage_project(Path(tmp) / "one-stage-probed"))
        projects = {"this pipeline": ours, "one-stage DVC project": floor,
                    "one-stage + an always_changed `echo` stage": probed}
        timed = noop_vs_status(projects, args.pairs)
        print(f"wall time, dvc repro with nothing to do / dvc status, {args.pairs} interleaved pairs (target <= 1.3):")
        for name, t in timed.items():
            median, low, high = median_with_ci(t["ratios"])
            print(f"  {name}: median ratio {median:.2f} (95% CI {low:.2f}-{high:.2f}), fastest runs "
                  f"{min(t['repro']):.2f} s / {min(t['status']):.2f} s = {min(t['repro']) / min(t['status']):.2f}; "
                  f"dvc status took {min(t['status']):.2f}-{max(t['status']):.2f} s")
        if shutil.which("valgrind"):
            counted = noop_vs_status_instructions(projects)
            print("instructions (child processes included), dvc repro with nothing to do / dvc status "
                  "(target <= 1.3):")
            for name, ratio in counted.items():
                print(f"  {name}: {ratio:.3f}")
        else:
            print("valgrind is not installed: no instruction counts, only the noisier wall-time ratio above")


if __name__ == "__main__":
    main()
