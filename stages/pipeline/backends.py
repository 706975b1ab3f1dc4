"""The backend a stage uses, picked by `backend.name` (`stages.<package>.<step>`), and the one contract every
backend's step keeps: `run(request) -> report`, a request dataclass in and a report dataclass out, the same
for the open backend and the TAO runners. The open backend and the TAO runners never import each other; only
this switch knows both."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from .choices import BACKENDS

if TYPE_CHECKING:
    from ..detectnet_v2.evaluation import EvaluationSetup, ModelResult, Sample
    from ..detectnet_v2.spec_facts import SpecFacts

# backend.name -> the package holding its step modules (one per stage, named after the stage)
STEP_PACKAGES = {name: "open_backend" if name == "open" else "tao_backend" for name in BACKENDS}


def step(cfg: DictConfig, name: str) -> ModuleType:
    """The step module; stages import it before staging outputs, so that a signal arriving during
    the (slow, native) imports cannot strand a half-made output."""
    return importlib.import_module(f"stages.{STEP_PACKAGES[cfg.backend.name]}.{name}")


# --------------------------------------------------------------------------- calibration_tensorfile

@dataclass(frozen=True)
class TensorfileRequest:
    cfg: DictConfig
    facts: SpecFacts  # what the resolved spec says of the data
    spec_path: Path  # the resolved spec
    output: Path  # the TensorFile to write (its folder is the stage's, staged)


@dataclass(frozen=True)
class TensorfileReport:
    batches: int  # the batches the TensorFile holds


# --------------------------------------------------------------------------- export

@dataclass(frozen=True)
class ExportRequest:
    cfg: DictConfig
    facts: SpecFacts
    spec_path: Path
    model: Path  # the model to export (model.file)
    tensorfile: Path  # the calibration TensorFile, where export.cal_source is tensorfile
    out: Path  # the export folder (staged)


@dataclass
class ExportReport:
    """What a backend's export step tells the export stage, beyond the files it wrote: for the deployable
    ONNX and the export report."""
    maxima: dict[str, float] | None = None  # each tensor's largest magnitude on the calibration images
    calibration: dict = field(default_factory=dict)  # the report's `calibration` section
    float_layers: list[str] = field(default_factory=list)  # convolutions left in higher precision


# --------------------------------------------------------------------------- convert

@dataclass(frozen=True)
class ConvertRequest:
    cfg: DictConfig
    facts: SpecFacts
    spec_path: Path
    exported: Path  # export's folder
    out: Path  # the engine folder (staged)


@dataclass(frozen=True)
class ConvertReport:
    """What was built and, where the engine ran here, how it compares with the fp32 model: the convert
    report's fields, the same for every backend."""
    precision: str
    engine: str  # convert.engine, or tensorrt for a TAO backend's
    engine_size_bytes: int
    # where the engine ran here: images, outputs (cosine similarity, max abs error), max_batch_size, latency_ms
    verification: dict | None = None
    runs_on_compute_capabilities: tuple[str, ...] = ()  # an engine built for GPUs other than this machine's

    def as_dict(self) -> dict:
        """The report's JSON object: the verification's figures between the engine and its size, or
        `verified: false` where nothing ran it."""
        found = {"precision": self.precision, "engine": self.engine,
                 **(self.verification if self.verification is not None else {"verified": False}),
                 "engine_size_bytes": self.engine_size_bytes}
        if self.runs_on_compute_capabilities:
            found["runs_on_compute_capabilities"] = list(self.runs_on_compute_capabilities)
        return found


# --------------------------------------------------------------------------- evaluate

@dataclass(frozen=True)
class EvaluateRequest:
    cfg: DictConfig
    setup: EvaluationSetup  # classes, clustering and the metric, from the resolved spec
    samples: list[Sample]  # the validation images and their labels
    image_dir: Path
    label_dir: Path
    spec_path: Path
    reference_model: Path  # the exported fp32 model: what the engine is judged against
    engine: Path
    out: Path  # the evaluation folder (staged)
    calibration: list[Sample]  # unlabelled images the two models' boxes are also compared on


@dataclass(frozen=True)
class EvaluateReport:
    engine: ModelResult
    reference: ModelResult

    def results(self) -> dict[str, ModelResult]:
        return {"engine": self.engine, "reference": self.reference}
