"""Where every artifact lives, relative to the project: the one place that names the stages' outputs and the
files in them. dvc.yaml names the same paths (tests/test_dvc_pipeline.py keeps the two in step), and
nothing probes a folder for a file name: which engine file convert writes follows from the config
(engine_file)."""
from __future__ import annotations

from pathlib import Path

from ..formats.file_names import CACHE_FILE, DEPLOYABLE_FILES

PROJECT = Path(__file__).resolve().parents[2]

# stages that only describe the run
CODE_DIR = "artifacts/code"  # one fingerprint of its code per pipeline stage, written by the `code` stage
VALIDATED_FILE = "artifacts/validated.txt"  # the `validate` stage's mark: the same bytes while the config is valid
PARAMS_DIR = "artifacts/params"  # each stage's slice of params.yaml, written by the `validate` stage
PLATFORM_FILE = "artifacts/platform.json"  # what engines depend on beyond their inputs (the `platform` stage)

# the bundled sample (the `sample` stage)
SAMPLE_DATA, SAMPLE_MODELS = "data/sample", "models/sample"

# calibration_tensorfile: the TAO spec made real for this machine, and the calibration images
SPEC_DIR = "artifacts/spec"
RESOLVED_SPEC = f"{SPEC_DIR}/spec.txt"
CALIBRATION_DIR = "artifacts/calibration"
TENSORFILE = f"{CALIBRATION_DIR}/calibration.tensor"

# export: the model with TAO's names (or TAO 3/4's .etlt), the cache, the deployable ONNX of each precision
EXPORT_DIR = "artifacts/export"
EXPORTED_MODEL = f"{EXPORT_DIR}/model.onnx"  # the fp32 reference every engine is judged against
EXPORTED_ETLT = f"{EXPORT_DIR}/model.etlt"
CALIBRATION_CACHE = f"{EXPORT_DIR}/{CACHE_FILE}"  # DeepStream's config names it beside the model
DEEPSTREAM_CONFIG = f"{EXPORT_DIR}/nvinfer_config.txt"

# convert: the engine, named by what built it
ENGINE_DIR = "artifacts/engine"
ENGINE_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.engine", "trtexec": "model.engine",
                "tensorrt_rtx": "model.rtx.engine"}

EVALUATION_DIR = "artifacts/evaluation"
TRITON_DIR = "artifacts/triton"  # the Triton model repository

# export's, convert's and evaluate's reports: cached outputs, so that DVC's run-cache restores those stages whole
REPORTS_DIR = "artifacts/reports"
EXPORT_REPORT, CONVERT_REPORT = f"{REPORTS_DIR}/export.json", f"{REPORTS_DIR}/convert.json"
EVALUATE_REPORT = f"{REPORTS_DIR}/evaluate.json"
# export's measured times (NVIDIA's build of the deployable ONNX): apart from its report, which evaluate reads and
# which keeps its bytes from run to run
EXPORT_TIMINGS = f"{REPORTS_DIR}/export_timings.json"
# what the `metrics` stage publishes from them, in git: figures that should be identical apart from timings
EXPORT_METRICS_FILE, METRICS_FILE = "metrics/export.json", "metrics/convert.json"
EVALUATE_METRICS_FILE, TIMINGS_FILE = "metrics/evaluate.json", "metrics/timings.json"

# TensorRT's timing cache: kept between builds on this machine (ignored by git and DVC), so a rebuild
# re-times no layer it timed before. It changes which kernels an engine picks, never what it computes.
TIMING_CACHE_DIR = ".cache/tensorrt"

PIPELINE_OUTPUTS = (CODE_DIR, VALIDATED_FILE, PLATFORM_FILE, SAMPLE_DATA, SAMPLE_MODELS, SPEC_DIR, CALIBRATION_DIR,
                    EXPORT_DIR, ENGINE_DIR, EVALUATION_DIR, TRITON_DIR, EXPORT_REPORT, EXPORT_TIMINGS, CONVERT_REPORT,
                    EVALUATE_REPORT,
                    EXPORT_METRICS_FILE, METRICS_FILE, EVALUATE_METRICS_FILE, TIMINGS_FILE)


def project_path(path: str | Path) -> Path:
    """A config or artifact path, relative to the project root unless absolute."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT / path


def engine_kind(backend_name: str, engine: str) -> str:
    """What builds the engine: the open backend, what convert.engine names; TAO's converters, TensorRT."""
    return engine if backend_name == "open" else "tensorrt"


def engine_file(backend_name: str, engine: str) -> str:
    """The engine convert writes (backend.name, convert.engine)."""
    return f"{ENGINE_DIR}/{ENGINE_FILES[engine_kind(backend_name, engine)]}"


def deployable_model(data_type: str) -> str:
    """The deployable ONNX of a precision in the export folder (TensorRT 10/11 build from it)."""
    return f"{EXPORT_DIR}/{DEPLOYABLE_FILES[data_type]}"
