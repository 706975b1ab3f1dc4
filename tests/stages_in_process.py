"""Run dvc.yaml's stage commands in one process, in dvc.yaml's order, once for each set of Hydra
overrides: what `dvc repro` runs, with each library imported once instead of once per stage, and
without DVC's bookkeeping (hashes, cache, lock), which the DVC tests cover. For matrices of models and
precisions, where DVC's few seconds per stage would cost minutes.

    cd PROJECT && python stages_in_process.py --skip sample,code NAME=OVERRIDE,OVERRIDE ...

Each run writes params.yaml with its overrides (`make params`), runs the stages, and keeps a copy of
artifacts/ and metrics/ in runs/NAME/. Exits with the first failing stage's status, naming it."""
from __future__ import annotations

import argparse
import runpy
import shlex
import shutil
import sys
from pathlib import Path


def stage_commands(project: Path, skip: set[str]) -> list[tuple[str, list[str]]]:
    """(module, argv) of each stage of dvc.yaml, in its order: every cmd is `python -m MODULE ARGS`."""
    import yaml
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    commands = []
    for name, stage in stages.items():
        if name in skip:
            continue
        python, flag, module, *args = shlex.split(stage["cmd"])
        assert (python, flag) == ("python", "-m"), stage["cmd"]
        commands.append((module, args))
    return commands


def run_module(module: str, args: list[str]) -> int:
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", default="", help="stages not to run, comma-separated")
    parser.add_argument("runs", nargs="+", metavar="NAME=OVERRIDES")
    args = parser.parse_args()
    project = Path.cwd()
    sys.path.insert(0, str(project))  # the project's own stages package, as `python -m` finds it there
    commands = stage_commands(project, set(filter(None, args.skip.split(","))))
    for spec in args.runs:
        name, overrides = spec.split("=", 1)
        print(f"== run {name}: {overrides}", file=sys.stderr, flush=True)
        code = run_module("stages.params", [o for o in overrides.split(",") if o])
        for module, argv in commands:
            if code:
                break
            code = run_module(module, argv)
            if code:
                print(f"== run {name}: {module} exited {code}", file=sys.stderr, flush=True)
        if code:
            return code
        kept = project / "runs" / name
        shutil.rmtree(kept, ignore_errors=True)
        for folder in ("artifacts", "metrics"):
            shutil.copytree(project / folder, kept / folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
