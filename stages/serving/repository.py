"""The Triton model repository for a DetectNet_v2 engine: four models and the labels.

  detectnet_v2              the engine: a TensorRT plan (tensorrt_plan), or an onnxruntime engine on
                            Triton's onnxruntime backend (engine_backend=auto) or inside its Python
                            backend (engine_backend=python)
  detectnet_v2_preprocess   encoded image bytes -> the model input, and the image's original size
  detectnet_v2_postprocess  raw outputs + original size -> BOXES, SCORES, CLASS_IDS
  detectnet_v2_ensemble     image bytes in, detections out (the three above in a row); labels.txt

Every model batches dynamically up to convert.max_batch_size. The repository carries what its Python
models run, so that a copy of it serves on another host:
  - their code: each model's version folder holds model.py and the project's modules it imports
    (stages/: the evaluate stage's own pre- and post-processing, copied file for file);
  - their environment (triton.pack_environment, the default): python_env.tar.gz, the interpreter and
    packages `make setup` packs (serving/environment.py), named by EXECUTION_ENV_PATH relative to
    $$TRITON_MODEL_DIRECTORY; and the Python backend's stub for that interpreter in each model's folder,
    which Triton prefers to its own. Without it, the models use .venv/triton-env of the checkout that
    holds the repository ($$TRITON_MODEL_DIRECTORY/../../../.venv/triton-env): quicker to build, for
    `make serve` here only.
The repository holds no absolute path, and its bytes do not depend on where the project is checked out."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..detectnet_v2.postprocessing import Clustering
from ..formats.onnx_model import TAO_INPUT, TAO_OUTPUTS
from .models import engine as engine_model, postprocess as postprocess_model, preprocess as preprocess_model

ENGINE, PREPROCESS, POSTPROCESS, ENSEMBLE = ("detectnet_v2", "detectnet_v2_preprocess", "detectnet_v2_postprocess",
                                             "detectnet_v2_ensemble")
COV, BBOX = TAO_OUTPUTS
# from a model's folder (artifacts/triton/<model>) up to the project, where `make setup` puts the venv
VENV_FROM_MODEL = "$$TRITON_MODEL_DIRECTORY/../../../.venv/triton-env"
PACKED_ENV = "python_env.tar.gz"  # at the repository's top, where Triton looks for models in folders only
STUB = "triton_python_backend_stub"
# the project's packages the Python models import (their modules' imports stay inside these)
MODEL_CODE = ("compute", "detectnet_v2", "formats", "spec")
PACKAGE = Path(__file__).resolve().parents[1]  # stages/


@dataclass
class RepositoryRequest:
    engine: Path  # the convert stage's engine
    engine_kind: str  # what built it (convert.engine; TAO's converters: tensorrt): onnxruntime | tensorrt | trtexec
    classes: list[str]  # in the order of the model's outputs
    clustering: dict[str, Clustering]
    width: int
    height: int
    # the triton section's values (conf/config.yaml holds their defaults), and convert.max_batch_size
    max_batch_size: int
    engine_backend: str  # for onnxruntime engines: python | auto
    instances: int
    preprocess_instances: int  # decoding is the most CPU a request costs, in Python: processes of its own
    max_queue_delay_microseconds: int
    max_image_pixels: int
    max_request_bytes: int
    environment: Path | None = None  # the packed environment (serving/environment.py); None: the checkout's venv
    stub: Path | None = None  # the Python backend stub for the packed environment's Python


# config.pbtxt is written as text: Triton's ModelConfig message ships only with tritonclient, which the
# pipeline does not otherwise need; the tests parse every file with that message.
def _tensor(name: str, data_type: str, dims: list[int]) -> str:
    return f'  {{ name: "{name}" data_type: {data_type} dims: [ {", ".join(map(str, dims))} ] }}'


def _config(name: str, kind_line: str, request: RepositoryRequest, inputs: list[str], outputs: list[str],
            device: str = "KIND_CPU", python: bool = False, extra: str = "", scheduled: bool = True,
            instances: int | None = None) -> str:
    """One config.pbtxt; `scheduled` models (all but the ensemble, which runs its steps' schedulers)
    batch dynamically and have instances (triton.instances, unless given)."""
    lines = [f'name: "{name}"', kind_line, f"max_batch_size: {request.max_batch_size}",
             "input [", ",\n".join(inputs), "]", "output [", ",\n".join(outputs), "]"]
    if scheduled:
        lines += [f"dynamic_batching {{ max_queue_delay_microseconds: {request.max_queue_delay_microseconds} }}",
                  f"instance_group [ {{ count: {instances or request.instances} kind: {device} }} ]"]
    if python:
        env = f"$$TRITON_MODEL_DIRECTORY/../{PACKED_ENV}" if request.environment else VENV_FROM_MODEL
        lines.append(f'parameters {{ key: "EXECUTION_ENV_PATH" value: {{ string_value: "{env}" }} }}')
    return "\n".join(lines) + ("\n" + extra if extra else "") + "\n"


def write_repository(out: Path, request: RepositoryRequest) -> None:
    """The repository's four models into `out` (an empty directory)."""
    classes, rows, columns = len(request.classes), request.height // 16, request.width // 16
    model_input = _tensor(TAO_INPUT, "TYPE_FP32", [3, request.height, request.width])
    raw_outputs = [_tensor(COV, "TYPE_FP32", [classes, rows, columns]),
                   _tensor(BBOX, "TYPE_FP32", [4 * classes, rows, columns])]
    original_size = _tensor("ORIGINAL_SIZE", "TYPE_INT32", [2])
    image = _tensor("IMAGE", "TYPE_STRING", [1])
    detections = [_tensor("BOXES", "TYPE_FP32", [-1, 4]), _tensor("SCORES", "TYPE_FP32", [-1]),
                  _tensor("CLASS_IDS", "TYPE_INT32", [-1])]

    version = out / ENGINE / "1"
    version.mkdir(parents=True)
    if request.engine_kind != "onnxruntime":  # only Triton's TensorRT backend runs a plan, whatever engine_backend says
        shutil.copyfile(request.engine, version / "model.plan")
        config = _config(ENGINE, 'platform: "tensorrt_plan"', request, [model_input], raw_outputs, "KIND_GPU")
    elif request.engine_backend == "python":
        shutil.copyfile(request.engine, version / "model.onnx")
        _python_code(version, engine_model.__file__, request)
        config = _config(ENGINE, 'backend: "python"', request, [model_input], raw_outputs, python=True)
    else:
        shutil.copyfile(request.engine, version / "model.onnx")
        config = _config(ENGINE, 'platform: "onnxruntime_onnx"', request, [model_input], raw_outputs)
    (out / ENGINE / "config.pbtxt").write_text(config)

    limits = {"INPUT_WIDTH": request.width, "INPUT_HEIGHT": request.height,
              "MAX_IMAGE_PIXELS": request.max_image_pixels, "MAX_REQUEST_BYTES": request.max_request_bytes}
    size = "parameters [\n" + ",\n".join(f'  {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
                                          for key, value in limits.items()) + "\n]"
    _python_model(out / PREPROCESS, preprocess_model.__file__,
                  _config(PREPROCESS, 'backend: "python"', request, [image], [model_input, original_size],
                          python=True, extra=size, instances=request.preprocess_instances), request)
    _python_model(out / POSTPROCESS, postprocess_model.__file__,
                  _config(POSTPROCESS, 'backend: "python"', request, [*raw_outputs, original_size], detections,
                          python=True), request)
    settings = {"classes": request.classes, "input_size": [request.width, request.height],
                "clustering": {name: asdict(request.clustering[name]) for name in request.classes}}
    (out / POSTPROCESS / "1" / "clustering.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")

    steps = (f'  {{ model_name: "{PREPROCESS}" model_version: -1\n'
             '    input_map { key: "IMAGE" value: "IMAGE" }\n'
             f'    output_map {{ key: "{TAO_INPUT}" value: "preprocessed" }}\n'
             '    output_map { key: "ORIGINAL_SIZE" value: "original_size" } },\n'
             f'  {{ model_name: "{ENGINE}" model_version: -1\n'
             f'    input_map {{ key: "{TAO_INPUT}" value: "preprocessed" }}\n'
             f'    output_map {{ key: "{COV}" value: "coverage" }}\n'
             f'    output_map {{ key: "{BBOX}" value: "regression" }} }},\n'
             f'  {{ model_name: "{POSTPROCESS}" model_version: -1\n'
             f'    input_map {{ key: "{COV}" value: "coverage" }}\n'
             f'    input_map {{ key: "{BBOX}" value: "regression" }}\n'
             '    input_map { key: "ORIGINAL_SIZE" value: "original_size" }\n'
             '    output_map { key: "BOXES" value: "BOXES" }\n'
             '    output_map { key: "SCORES" value: "SCORES" }\n'
             '    output_map { key: "CLASS_IDS" value: "CLASS_IDS" } }')
    (out / ENSEMBLE / "1").mkdir(parents=True)
    # Triton wants the version folder; DVC keeps no empty folder, so it holds a note
    (out / ENSEMBLE / "1" / "README.txt").write_text("The ensemble's steps are in ../config.pbtxt; it has no files.\n")
    (out / ENSEMBLE / "config.pbtxt").write_text(
        _config(ENSEMBLE, 'platform: "ensemble"', request, [image], detections,
                extra=f"ensemble_scheduling {{ step [\n{steps}\n] }}", scheduled=False))
    (out / ENSEMBLE / "labels.txt").write_text("\n".join(request.classes) + "\n")
    if request.environment is not None:
        shutil.copyfile(request.environment, out / PACKED_ENV)


def _python_model(folder: Path, source: str, config: str, request: RepositoryRequest) -> None:
    (folder / "1").mkdir(parents=True)
    _python_code(folder / "1", source, request)
    (folder / "config.pbtxt").write_text(config)


def _python_code(version: Path, source: str, request: RepositoryRequest) -> None:
    """model.py, the project's modules it imports (stages/ beside it) and, with a packed environment, the
    stub for its Python in the model's folder."""
    shutil.copyfile(source, version / "model.py")
    for path in model_code_files():
        target = version / "stages" / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    if request.stub is not None:
        shutil.copyfile(request.stub, version.parent / STUB)
        (version.parent / STUB).chmod(0o755)


def model_code_files() -> list[Path]:
    """The project's files a Triton Python model imports: stages/__init__.py and the MODEL_CODE packages."""
    found = [PACKAGE / "__init__.py"]
    for name in MODEL_CODE:
        found += sorted(p for p in (PACKAGE / name).rglob("*.py") if "__pycache__" not in p.parts)
    return found
