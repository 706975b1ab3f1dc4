"""Stage `code`: for each pipeline stage, a fingerprint of exactly the code it can run, written to
artifacts/code/<stage>.sha256 (`sha256sum` format: one line per file, so `sha256sum -c` checks it).

Each stage depends on its fingerprint instead of listing its modules in dvc.yaml: the list, read from
import statements, cannot drift from the code, and dvc.yaml stays short (DVC's per-dependency costs
made a no-op `dvc repro` slow, see bench/bench_dvc.py). A change under stages/ re-runs this stage;
DVC then re-runs only the stages whose fingerprint came out different."""
from __future__ import annotations

import hashlib
import logging
import sys

from omegaconf import DictConfig

from .pipeline.cli import run_stage
from .pipeline.config import CODE_DIR, PIPELINE_STAGES, PROJECT, project_path
from .pipeline.imports import stage_code
from .pipeline.outputs import staged_dir

log = logging.getLogger("stages.code")


def fingerprint(stage: str) -> str:
    """`<sha256>  <path>` for every file the stage can run, paths relative to the project."""
    return "".join(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(PROJECT).as_posix()}\n"
                   for path in stage_code(stage))


def run(cfg: DictConfig | None) -> None:  # noqa: ARG001 - reads no parameters, only the code
    with staged_dir(project_path(CODE_DIR)) as out:
        for stage in PIPELINE_STAGES:
            text = fingerprint(stage)
            (out / f"{stage}.sha256").write_text(text, encoding="utf-8")
            log.info("code: %s runs %d files", stage, text.count("\n"))


if __name__ == "__main__":
    sys.exit(run_stage("code", __doc__, run, reads_config=False))
