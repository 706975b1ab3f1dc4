"""Stage `metrics`: publishes export's, convert's and evaluate's reports as DVC metrics, kept in git.

Why a stage of its own: convert and evaluate write cached reports (artifacts/reports/), which `dvc push`
shares with the engines, and this cheap stage copies them into metrics/, which git tracks
(`cache: false`): any clone reads any commit's metrics with `dvc metrics show/diff` and `dvc exp show`,
with no remote. DVC's run-cache keeps a copy of them too, so a machine that pulled it
(`dvc pull --run-cache`) restores this stage with the others instead of running it. Timings, which
differ on every run, go to metrics/timings.json, apart from the figures that should be the same whenever
the engine is (metrics/convert.json): convert's latency and export's timings (how long NVIDIA's builder
took to check the deployable ONNX)."""
from __future__ import annotations

import json
import logging
import sys

from omegaconf import DictConfig

from .pipeline.cli import run_stage
from .pipeline.layout import (CONVERT_REPORT, EVALUATE_METRICS_FILE, EVALUATE_REPORT, EXPORT_METRICS_FILE, EXPORT_REPORT,
                              EXPORT_TIMINGS, METRICS_FILE, TIMINGS_FILE, project_path)
from .pipeline.errors import StageError
from .pipeline.outputs import write_text_atomically

log = logging.getLogger("stages.metrics")

TIMING_KEYS = ("latency_ms",)  # convert's report keys that are measured times


def read_report(path: str) -> dict:
    try:
        return json.loads(project_path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path} does not exist: run the stage that writes it first (`dvc repro` does)") from None
    except ValueError as exc:
        raise StageError(f"{path} is not JSON ({exc}): run its stage again") from None


def run(cfg: DictConfig | None) -> None:  # noqa: ARG001 - reads no parameters, only the reports
    export, convert, evaluate = read_report(EXPORT_REPORT), read_report(CONVERT_REPORT), read_report(EVALUATE_REPORT)
    figures = {key: value for key, value in convert.items() if key not in TIMING_KEYS}
    timings = {**{key: convert[key] for key in TIMING_KEYS if key in convert}, **read_report(EXPORT_TIMINGS)}
    for path, content in ((EXPORT_METRICS_FILE, export), (METRICS_FILE, figures), (TIMINGS_FILE, timings),
                          (EVALUATE_METRICS_FILE, evaluate)):
        write_text_atomically(project_path(path), json.dumps(content, indent=2) + "\n")
    log.info("metrics: %s engine mAP %.4f (gate %s), in %s, %s and %s", evaluate["engine"]["precision"],
             evaluate["engine"]["mAP"], evaluate.get("gate"), METRICS_FILE, TIMINGS_FILE, EVALUATE_METRICS_FILE)


if __name__ == "__main__":
    sys.exit(run_stage("metrics", __doc__, run, reads_config=False))
