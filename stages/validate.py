"""Stage `validate`: the whole config checked before any stage runs, so that a bad parameter costs no
artifact. DVC deletes a stage's outputs before running it; this stage depends on every key of
params.yaml and comes first, so a wrong value stops `dvc repro` / `dvc exp run` here, with one
paragraph naming the key, before DVC touches the engine, the metrics or the plots.

It checks the schema (types, unknown keys anywhere, ranges, min <= opt <= max batch sizes), the
backend's keys, that the files the config names exist, and that the model, the spec and
dataset.classes agree. It writes artifacts/validated.txt, the same bytes whenever the config is valid,
and each stage's slice of the config (artifacts/params/<stage>.json: the keys config.STAGE_PARAMS
lists for it), which the stage depends on: DVC re-runs a stage only when a key it reads changed."""
from __future__ import annotations

import json
import logging
import sys

from omegaconf import DictConfig

from .pipeline.cli import run_stage
from .pipeline.layout import PARAMS_DIR, PIPELINE_OUTPUTS, VALIDATED_FILE, project_path
from .pipeline.stage_params import STAGE_PARAMS, stage_params
from .pipeline.outputs import remove_stale_under, staged_dir, write_text_atomically
from .pipeline.preflight import check_inputs

log = logging.getLogger("stages.validate")

MARK = "params.yaml passed every check of `python -m stages.validate`\n"


def run(cfg: DictConfig) -> None:  # the schema was checked when the config was loaded
    folders = sorted({project_path(output).parent for output in PIPELINE_OUTPUTS})
    for stale in remove_stale_under(folders):
        log.info("validate: removed %s, left by a stage that was killed", stale.relative_to(project_path(".")))
    check_inputs(cfg)
    with staged_dir(project_path(PARAMS_DIR)) as out:
        for stage in STAGE_PARAMS:
            (out / f"{stage}.json").write_text(json.dumps(stage_params(cfg, stage), indent=1) + "\n")
    write_text_atomically(project_path(VALIDATED_FILE), MARK)
    log.info("validate: the config is valid")


if __name__ == "__main__":
    sys.exit(run_stage("validate", __doc__, run))
