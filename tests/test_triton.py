"""The triton stage's model repository: every config parses with Triton's own ModelConfig message, and a
real Triton server (the one nvidia-pytriton bundles) answers validation images through the ensemble with
the detections the evaluate stage finds."""
from __future__ import annotations

import importlib.util
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from conftest import ROOT, run
from stages.detectnet_v2.postprocessing import Clustering
from stages.serving.repository import (ENGINE, ENSEMBLE, POSTPROCESS, PREPROCESS, RepositoryRequest,
                                       write_repository)

CLASSES = ["car", "cyclist", "pedestrian"]
MODELS = [ENGINE, PREPROCESS, POSTPROCESS, ENSEMBLE]


def model_config_module():
    """Triton's model_config_pb2, from tritonclient's generated module (loaded by path: the tritonclient.grpc
    package itself wants grpcio, which the HTTP client does not need)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None:
        pytest.skip("tritonclient is not installed (make setup installs it)")
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def repository(tmp_path, engine_name: str, engine_backend: str) -> Path:
    engine = tmp_path / engine_name
    engine.write_bytes(b"an engine")
    out = tmp_path / "triton"
    out.mkdir()
    clustering = {name: Clustering(coverage_threshold=0.1, dbscan_eps=0.5) for name in CLASSES}
    write_repository(out, RepositoryRequest(engine, CLASSES, clustering, 624, 192, 8, engine_backend, 2, 300))
    return out


def parsed(folder: Path, model: str):
    return text_format.Parse((folder / model / "config.pbtxt").read_text(), model_config_module().ModelConfig())


@pytest.mark.parametrize("engine_name, engine_backend, expected", [
    ("model.onnx", "python", ("", "python", "model.onnx")),
    ("model.onnx", "auto", ("onnxruntime_onnx", "", "model.onnx")),
    ("model.engine", "auto", ("tensorrt_plan", "", "model.plan")),
    ("model.engine", "python", ("tensorrt_plan", "", "model.plan")),  # only TensorRT's backend runs a plan
])
def test_every_config_parses_as_tritons_model_config(tmp_path, engine_name, engine_backend, expected):
    folder = repository(tmp_path, engine_name, engine_backend)
    configs = {model: parsed(folder, model) for model in MODELS}
    engine = configs[ENGINE]
    assert (engine.platform, engine.backend) == expected[:2]
    assert (folder / ENGINE / "1" / expected[2]).read_bytes() == b"an engine"
    assert engine.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in engine.input] == [("input_1", [3, 192, 624])]
    assert [(o.name, list(o.dims)) for o in engine.output] == [("output_cov/Sigmoid", [3, 12, 39]),
                                                               ("output_bbox/BiasAdd", [12, 12, 39])]
    assert engine.dynamic_batching.max_queue_delay_microseconds == 300
    assert engine.instance_group[0].count == 2
    kind = engine.instance_group[0].Kind.Name(engine.instance_group[0].kind)
    assert kind == ("KIND_GPU" if expected[0] == "tensorrt_plan" else "KIND_CPU")
    ensemble = configs[ENSEMBLE]
    assert ensemble.platform == "ensemble" and [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        PREPROCESS, ENGINE, POSTPROCESS]
    assert [o.name for o in ensemble.output] == ["BOXES", "SCORES", "CLASS_IDS"]
    assert ensemble.input[0].data_type == model_config_module().TYPE_STRING
    for model in (PREPROCESS, POSTPROCESS):
        assert configs[model].backend == "python"
        assert configs[model].parameters["EXECUTION_ENV_PATH"].string_value.startswith("$$TRITON_MODEL_DIRECTORY/")
    assert (folder / ENSEMBLE / "labels.txt").read_text() == "car\ncyclist\npedestrian\n"


def test_each_ensemble_step_maps_names_its_model_declares(tmp_path):
    folder = repository(tmp_path, "model.onnx", "python")
    configs = {model: parsed(folder, model) for model in MODELS}
    for step in configs[ENSEMBLE].ensemble_scheduling.step:
        model = configs[step.model_name]
        assert set(step.input_map) == {i.name for i in model.input}, step.model_name
        assert set(step.output_map) == {o.name for o in model.output}, step.model_name


def test_the_repository_holds_no_absolute_path(tmp_path):
    folder = repository(tmp_path, "model.onnx", "python")
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".pbtxt", ".json", ".txt"):
            assert str(tmp_path) not in path.read_text() and str(ROOT) not in path.read_text(), path


# --------------------------------------------------------------------------- a real server

def server_or_skip():
    from stages.serving.server import installed
    reason = installed()
    if reason:
        pytest.skip(f"Triton is not installed here: {reason}")


@pytest.fixture(scope="module")
def served(built_project, tmp_path_factory):
    """The built project's repository, in a copy with the project's venv beside it, on a running server."""
    server_or_skip()
    import shutil

    from stages.serving.server import TritonServer

    project = tmp_path_factory.mktemp("served") / "project"
    shutil.copytree(built_project, project, symlinks=True)
    (project / ".venv").symlink_to(sys.prefix)  # where `make setup` puts the venv: beside the repository
    run([sys.executable, "-m", "stages.triton", "--params", "params.yaml"], project)
    server = TritonServer(project / "artifacts/triton", log_path=project / "triton.log")
    with server:
        yield project, server
    assert server.process.poll() is not None, "the server was left running"
    with socket.socket() as probe:  # nothing listens on its port any more (closed connections may linger)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.http_port))


def infer(server, image: bytes):
    import tritonclient.http as http

    client = http.InferenceServerClient(server.url)
    request = http.InferInput("IMAGE", [1, 1], "BYTES")
    request.set_data_from_numpy(np.array([[image]], dtype=object))
    answer = client.infer("detectnet_v2_ensemble", [request])
    return answer.as_numpy("BOXES")[0], answer.as_numpy("SCORES")[0], answer.as_numpy("CLASS_IDS")[0]


def evaluate_stage_detections(project: Path, image: Path):
    """What the evaluate stage finds on one image: its own preprocessing, engine run and detect()."""
    from stages.detectnet_v2.evaluation import detect, evaluation_setup
    from stages.detectnet_v2.inference import OnnxRunner
    from stages.detectnet_v2.preprocessing import EVALUATION_RESAMPLE, image_size, iter_batches
    from stages.spec import Spec

    from stages.detectnet_v2.spec_facts import facts

    spec = Spec.load(project / "artifacts/calibration/spec.txt")
    setup = evaluation_setup(spec, facts(spec).width, facts(spec).height)
    batch = next(iter_batches([image], 1, setup.width, setup.height, resample=EVALUATION_RESAMPLE))
    cov, bbox = OnnxRunner(project / "artifacts/engine/model.onnx")(batch)
    found = detect(cov[0], bbox[0], setup, image_size(image))
    rows = [(float(c), k, *map(float, b)) for k, name in enumerate(setup.classes)
            for b, c in zip(found[name].boxes, found[name].confidences)]
    return sorted(rows, reverse=True)


def as_rows(boxes, scores, ids):
    return sorted(((float(s), int(i), *map(float, b)) for b, s, i in zip(boxes, scores, ids) if i >= 0), reverse=True)


def validation_images(project: Path, count: int) -> list[Path]:
    return sorted((project / "data/sample/validation/image_2").glob("*.png"))[:count]


def test_the_ensemble_answers_an_image_with_the_evaluate_stages_detections(served):
    project, server = served
    for image in validation_images(project, 4):
        got, expected = as_rows(*infer(server, image.read_bytes())), evaluate_stage_detections(project, image)
        assert len(got) == len(expected) and got, image.name
        for mine, theirs in zip(got, expected):
            assert mine[1] == theirs[1], image.name  # class
            assert mine[0] == pytest.approx(theirs[0], rel=1e-5), image.name  # score
            assert np.allclose(mine[2:], theirs[2:], atol=1e-3), image.name  # box, original-image pixels


def test_sixteen_concurrent_requests_are_all_answered(served):
    project, server = served
    images = [path.read_bytes() for path in validation_images(project, 4)] * 4
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda data: as_rows(*infer(server, data)), images))
    assert len(answers) == 16 and all(answers)
    for index, answer in enumerate(answers):  # batched with others or not, the same detections
        assert len(answer) == len(answers[index % 4])
        assert np.allclose(np.array(answer), np.array(answers[index % 4]), atol=1e-3)


def test_a_request_that_is_not_an_image_gets_an_error_and_the_server_keeps_serving(served):
    from tritonclient.utils import InferenceServerException

    project, server = served
    with pytest.raises(InferenceServerException, match=r"IMAGE\[0\] is not an image this server can read \(9 bytes\)"):
        infer(server, b"not a png")
    assert as_rows(*infer(server, validation_images(project, 1)[0].read_bytes()))
    assert server.process.poll() is None


def test_make_serve_stops_the_server_when_it_is_killed(served):
    import signal
    import subprocess
    import time

    from stages.serving.server import free_port

    project, _ = served
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "stages.serving.server",
                              "--repository", project / "artifacts/triton",
                              "--http-port", str(port), "--grpc-port", str(free_port()),
                              "--metrics-port", str(free_port())], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _answers(port):
            time.sleep(0.5)
        assert _answers(port), "make serve's server never became ready"
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    assert f"on http://127.0.0.1:{port}" in serve.stderr.read()
    time.sleep(1)
    assert not _answers(port), "the server outlived `make serve`"


def _answers(port: int) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_make_serve_says_where_it_serves_and_fails_clearly_without_a_repository(tmp_path):
    result = run([sys.executable, "-m", "stages.serving.server", "--repository", tmp_path / "none",
                  "--http-port", "1"], ROOT, check=False, env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert result.returncode == 1
    assert "is not a model repository the triton stage wrote: run `dvc repro triton`" in result.stderr
