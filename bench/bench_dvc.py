"""`dvc repro` with nothing to do vs `dvc status` (target <= 1.3x), and a full `dvc repro` of the
sample from scratch (target: under 2 minutes), in a temp copy of the project.

    python bench/bench_dvc.py
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT


def sh(args, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        for name in filter(None, files.decode().split("\0")):
            if (ROOT / name).is_file():
                (project / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, project / name)
        sh(["git", "init", "-q"], project)
        sh(["git", "add", "-A"], project)
        sh(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "x"], project)
        full = sh(["dvc", "repro", "-f"], project)
        print(f"dvc repro of the sample from scratch: {full:.1f} s (target < 120 s)")
        sh(["dvc", "status"], project)  # warm caches for both
        status = min(sh(["dvc", "status"], project) for _ in range(3))
        noop = min(sh(["dvc", "repro"], project) for _ in range(3))
        print(f"dvc status: {status:.2f} s; dvc repro with nothing to do: {noop:.2f} s; "
              f"ratio {noop / status:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
