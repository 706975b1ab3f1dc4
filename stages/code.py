"""Stage `code`: for each pipeline stage, a fingerprint of exactly the code it can run, written to
artifacts/code/<stage>.sha256: one line per file under stages/ in `sha256sum` format (`sha256sum -c`
checks them), then one line per installed package it can run, `name==version`, from the environment
that `make setup` installed from the lock. So upgrading a package re-runs only the stages that import it.
It refuses to run in an environment that is not the lock's: its fingerprints would describe neither.

Each stage depends on its fingerprint instead of listing its modules in dvc.yaml: the list, read from
import statements, cannot drift from the code, and dvc.yaml stays short (DVC's per-dependency costs
made a no-op `dvc repro` slow, see bench/bench_dvc.py). A change under stages/ re-runs this stage;
DVC then re-runs only the stages whose fingerprint came out different."""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys

from omegaconf import DictConfig

from .pipeline.cli import run_stage
from .pipeline.layout import CODE_DIR, PROJECT, project_path
from .pipeline.stage_params import PIPELINE_STAGES
from .pipeline.errors import StageError
from .pipeline.imports import stage_code, stage_packages
from .pipeline.outputs import staged_dir

log = logging.getLogger("stages.code")


def fingerprint(stage: str) -> str:
    """`<sha256>  <path>` for every file the stage can run, paths relative to the project, then
    `<name>==<version>` for every installed package it can run."""
    files = "".join(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(PROJECT).as_posix()}\n"
                    for path in stage_code(stage))
    return files + "".join(f"{name}=={version}\n" for name, version in stage_packages(stage).items())


def check_environment() -> None:
    """The running environment must be the lock's. environment/manage.py is the lock's one reader; it
    runs before the project is installed, so it is a script, loaded here by path."""
    spec = importlib.util.spec_from_file_location("environment_manage", PROJECT / "environment" / "manage.py")
    manage = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = manage  # its dataclasses look their module up there
    spec.loader.exec_module(manage)
    mismatches = manage.installed_mismatches(PROJECT)
    if mismatches:
        shown = "; ".join(mismatches[:5]) + (f"; and {len(mismatches) - 5} more" if len(mismatches) > 5 else "")
        raise StageError(f"the environment is not the lock's ({shown}): run `make setup`")


def run(cfg: DictConfig | None) -> None:  # noqa: ARG001 - reads no parameters, only the code
    check_environment()
    with staged_dir(project_path(CODE_DIR)) as out:
        for stage in PIPELINE_STAGES:
            text = fingerprint(stage)
            (out / f"{stage}.sha256").write_text(text, encoding="utf-8")
            log.info("code: %s runs %d files and %d packages", stage, text.count("  stages/"),
                     text.count("=="))


if __name__ == "__main__":
    sys.exit(run_stage("code", __doc__, run, reads_config=False))
