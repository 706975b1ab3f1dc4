"""Running a command for a test, and reading which stages `dvc repro` ran."""
from __future__ import annotations

import sys
from pathlib import Path


def run(args, cwd, check=True, env=None, **kw):
    import os
    import subprocess
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "DVC_NO_ANALYTICS": "1", **(env or {})}
    kw.setdefault("capture_output", True)
    kw.setdefault("timeout", 900)  # a hung command fails its test instead of the whole run
    result = subprocess.run([str(a) for a in args], cwd=cwd, text=True, env=full_env, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


# The `platform` and `validate` stages are DVC's always_changed: every `dvc repro` runs them (and `dvc status`
# lists them), and what follows re-runs only when their files change. `ran` and `up_to_date` leave them out;
# tests of the platform and of validate themselves look at them.
PROBE = "platform"
ALWAYS_RUN = (PROBE, "validate")


def ran(output: str) -> list[str]:
    """The stages `dvc repro` / `dvc exp run` printed it ran, in order, besides the two that always run."""
    import re
    return [name for name in re.findall(r"Running stage '([^']+)'", output) if name not in ALWAYS_RUN]


def up_to_date(project: Path, env=None) -> bool:
    """`dvc status` has nothing to report but the two stages that are always changed."""
    import json
    status = json.loads(run(["dvc", "status", "--json"], project, env=env).stdout)
    return status == {name: ["always changed"] for name in ALWAYS_RUN}
