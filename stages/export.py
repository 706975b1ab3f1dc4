"""Stage `export`: the model with TAO's tensor names and a dynamic batch (model.onnx), plus, for int8,
the TensorRT calibration cache, and the DeepStream config with `gen_ds_config`; and the deployable ONNX
of its precision, which TensorRT 10/11 build from (model.int8.onnx: explicit Q/DQ; model.fp16.onnx:
strongly typed fp16), checked with NVIDIA's TensorRT-RTX parser and builder; and its report
(artifacts/reports/export.json: how it calibrated, and for backend.calibration_method=auto what each method
measured; what NVIDIA's builder said), which the `metrics` stage publishes; and how long NVIDIA's build took
(artifacts/reports/export_timings.json: a time, which differs on every run, kept out of the report that
evaluate reads)."""
from __future__ import annotations

import json
import logging
import sys

from omegaconf import DictConfig

from .formats.file_names import DEPLOYABLE_FILES
from .pipeline import backends
from .pipeline.backends import ExportRequest
from .pipeline.cli import StageInputs, log_to_file, run_stage
from .pipeline.layout import EXPORT_DIR, EXPORT_REPORT, EXPORT_TIMINGS, TENSORFILE, project_path
from .pipeline.outputs import staged_dir, write_text_atomically
from .quantization import builder_check, export_folder

log = logging.getLogger("stages.export")


def run(cfg: DictConfig, inputs: StageInputs) -> None:
    step = backends.step(cfg, "export")  # imported before any output is staged
    with staged_dir(project_path(EXPORT_DIR)) as out, log_to_file(out / "export.log"):
        outcome = step.run(ExportRequest(cfg, inputs.facts, inputs.spec_path, project_path(cfg.model.file),
                                         project_path(TENSORFILE), out))
        checked, timings = None, {}
        if (out / DEPLOYABLE_FILES["fp32"]).is_file():  # not from TAO's .etlt
            written = export_folder.write_for_export(out, cfg.export.data_type, cfg.export.high_precision,
                                                     outcome.maxima, outcome.float_layers)
            for line in export_folder.described(written, cfg.export.data_type, outcome.maxima is not None) \
                    if written else ():
                log.info(line)
            # NVIDIA's parser and builder read the graph a GPU machine will build from; a refusal fails export
            facts = inputs.facts
            checked = builder_check.check(out / DEPLOYABLE_FILES[cfg.export.data_type],
                                          (facts.channels, facts.height, facts.width), cfg.export.max_batch_size,
                                          timings)
        else:
            log.info("no deployable ONNX: export wrote an .etlt, which only TAO's converters read")
    # after the export is in place: a report never describes an export that was not kept
    report = {"precision": cfg.export.data_type, "calibration": outcome.calibration or {"method": None},
              **({"nvidia_builder": checked} if checked else {})}
    write_text_atomically(project_path(EXPORT_REPORT), json.dumps(report, indent=2) + "\n")
    write_text_atomically(project_path(EXPORT_TIMINGS), json.dumps(timings, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(run_stage("export", __doc__, run, reads_spec=True))
