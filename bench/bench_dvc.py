"""`dvc repro` with nothing to do vs `dvc status` (target <= 1.3x), and a full `dvc repro` of the
sample from scratch (target: under 2 minutes), in a temp copy of the project.

    python bench/bench_dvc.py [--pairs N]

Both commands are short (about half a second) and this machine's timing noise is of the same order
as the difference between them, so the ratio is measured two ways:
- instructions executed, counted by valgrind's callgrind: repeatable whatever else the machine does
  (skipped with a note where valgrind is missing);
- wall time of interleaved pairs, as the median of the per-pair ratios.
Both are also measured on a one-stage DVC project in the same run: its ratio is DVC's own floor (the
work `repro` always does beyond `status`: importing networkx for the stage graph, loading dvc.yaml a
second time, three stage locks instead of one, and the garbage collection all that allocation costs),
so the gap between the two is what this pipeline's definitions add.
"""
from __future__ import annotations

import argparse
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


def instructions(args, cwd) -> int:
    """Instructions the command executes (its own process), as counted by callgrind."""
    result = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *args],
                            cwd=cwd, check=True, capture_output=True, text=True, env=ENV)
    return int(re.search(r"Collected\s*:\s*(\d+)", result.stderr).group(1))


def noop_vs_status_instructions(projects: dict[str, Path]) -> dict[str, float]:
    return {name: instructions(["dvc", "repro"], project) / instructions(["dvc", "status"], project)
            for name, project in projects.items()}


def noop_vs_status(projects: dict[str, Path], pairs: int) -> dict[str, tuple[float, float, float]]:
    """Per project: median `dvc status` s, median no-op `dvc repro` s, median of the per-pair ratios."""
    for project in projects.values():
        sh(["dvc", "status"], project)  # warm the page cache and the state database
    times = {name: ([], []) for name in projects}
    for _ in range(pairs):
        for name, project in projects.items():
            times[name][0].append(sh(["dvc", "status"], project))
            times[name][1].append(sh(["dvc", "repro"], project))
    return {name: (statistics.median(status), statistics.median(repro),
                   statistics.median(r / s for r, s in zip(repro, status)))
            for name, (status, repro) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15, help="interleaved status/repro pairs per project")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours = copy_of_this_project(Path(tmp) / "project")
        full = sh(["dvc", "repro", "-f"], ours)
        print(f"dvc repro of the sample from scratch: {full:.1f} s (target < 120 s)")
        floor = one_stage_project(Path(tmp) / "one-stage")
        projects = {"this pipeline": ours, "one-stage DVC project": floor}
        timed = noop_vs_status(projects, args.pairs)
        for name, (status, repro, ratio) in timed.items():
            print(f"{name}: dvc status {status:.2f} s, dvc repro with nothing to do {repro:.2f} s, "
                  f"wall-time ratio {ratio:.2f} (median of {args.pairs} pairs)")
        if shutil.which("valgrind"):
            counted = noop_vs_status_instructions(projects)
            print("instructions, dvc repro with nothing to do / dvc status: "
                  f"this pipeline {counted['this pipeline']:.3f}, "
                  f"one-stage DVC project {counted['one-stage DVC project']:.3f} (target <= 1.3)")
        else:
            print("valgrind is not installed: no instruction counts, only the noisier wall-time ratio above")


if __name__ == "__main__":
    main()
