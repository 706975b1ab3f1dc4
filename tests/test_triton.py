"""The triton stage's model repository: every config parses with Triton's own ModelConfig message, and a
real Triton server (the one nvidia-pytriton bundles) answers validation images through the ensemble with
the detections the evaluate stage finds."""
from __future__ import annotations

import importlib.util
import os
import re
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from google.protobuf import text_format

from helpers.commands import run
from helpers.paths import ROOT
from stages.detectnet_v2.postprocessing import Clustering
from stages.pipeline.layout import RESOLVED_SPEC, TRITON_DIR, engine_file
from stages.serving.repository import (ENGINE, ENSEMBLE, POSTPROCESS, PREPROCESS, RepositoryRequest,
                                       write_repository)

CLASSES = ["car", "cyclist", "pedestrian"]
LIMITS = {"pixels": 1_000_000, "bytes": 1 << 20}  # the served repository's triton.max_image_pixels, max_request_bytes
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
    write_repository(out, RepositoryRequest(engine, "tensorrt" if engine.suffix == ".engine" else "onnxruntime",
                                            CLASSES, clustering, 624, 192, 8, engine_backend, 2, 3, 300, 40_000_000,
                                            32 << 20))
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
    assert [configs[model].instance_group[0].count for model in (PREPROCESS, POSTPROCESS)] == [3, 2]
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
    params = yaml.safe_load((project / "params.yaml").read_text())  # limits small enough to test cheaply
    params["triton"].update(max_image_pixels=LIMITS["pixels"], max_request_bytes=LIMITS["bytes"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "stages.triton", "--params", "params.yaml"], project)
    server = TritonServer(project / TRITON_DIR, log_path=project / "triton.log")
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


def engine_outputs_alone(project: Path, image: Path):
    """The evaluate stage's setup and raw engine outputs for one image, run alone (a batch of 1)."""
    from stages.detectnet_v2.evaluation import evaluation_setup
    from stages.detectnet_v2.inference import OnnxRunner
    from stages.detectnet_v2.preprocessing import EVALUATION_RESAMPLE, iter_batches
    from stages.spec import Spec

    from stages.detectnet_v2.spec_facts import facts

    spec = Spec.load(project / RESOLVED_SPEC)
    setup = evaluation_setup(spec, facts(spec).width, facts(spec).height)
    batch = next(iter_batches([image], 1, setup.width, setup.height, resample=EVALUATION_RESAMPLE))
    cov, bbox = OnnxRunner(project / engine_file("open", "onnxruntime"))(batch)
    return setup, batch, cov, bbox


def detection_rows(setup, cov, bbox, image: Path):
    from stages.detectnet_v2.evaluation import detect
    from stages.detectnet_v2.preprocessing import image_size

    found = detect(cov, bbox, setup, image_size(image))
    rows = [(float(c), k, *map(float, b)) for k, name in enumerate(setup.classes)
            for b, c in zip(found[name].boxes, found[name].confidences)]
    return sorted(rows, reverse=True)


def evaluate_stage_detections(project: Path, image: Path):
    """What the evaluate stage finds on one image: its own preprocessing, engine run and detect()."""
    setup, _, cov, bbox = engine_outputs_alone(project, image)
    return detection_rows(setup, cov[0], bbox[0], image)


# What the server promises for an image batched with others (docs/how-to/triton.md, "Batched or alone"):
# the engine's outputs for it are those of the image alone within OUTPUT_TOLERANCE (onnxruntime's kernels
# for a batch of N sum in another order than for 1), so its detections are the same but where an output
# lies within that tolerance of a threshold of the post-processing.
OUTPUT_TOLERANCE = 1e-4


def same_box(row, rows) -> bool:
    from stages.detectnet_v2.kitti_metric import iou

    return any(r[1] == row[1] and abs(r[0] - row[0]) <= 0.02 and iou(np.array([r[2:]]), np.array([row[2:]]))[0, 0] >= 0.9
               for r in rows)


def assert_answered_as_alone(answer_rows, project: Path, image: Path) -> None:
    """The promise above: the answer holds every box the image alone gives under every move of its outputs
    by the tolerance (the stable boxes), and nothing that no such move gives (a box at a threshold may come
    or go)."""
    setup, _, cov, bbox = engine_outputs_alone(project, image)
    moves = (0.0, -OUTPUT_TOLERANCE, OUTPUT_TOLERANCE)
    variants = [detection_rows(setup, cov[0] + dc, bbox[0] + db, image) for dc in moves for db in moves]
    stable = [row for row in variants[0] if all(same_box(row, v) for v in variants)]
    assert stable, image.name  # the comparison compares something
    assert all(same_box(row, answer_rows) for row in stable), (image.name, answer_rows, stable)
    assert all(any(same_box(row, v) for v in variants) for row in answer_rows), (image.name, answer_rows)


def as_rows(boxes, scores, ids):
    return sorted(((float(s), int(i), *map(float, b)) for b, s, i in zip(boxes, scores, ids) if i >= 0), reverse=True)


def validation_images(project: Path, count: int) -> list[Path]:
    return sorted((project / "data/sample/validation/image_2").glob("*.png"))[:count]


def test_the_ensemble_answers_an_image_with_the_evaluate_stages_detections(served):
    project, server = served
    for image in validation_images(project, 4):
        assert_served_as_evaluated(project, server, image)


def assert_served_as_evaluated(project: Path, server, image: Path) -> None:
    got, expected = as_rows(*infer(server, image.read_bytes())), evaluate_stage_detections(project, image)
    assert len(got) == len(expected) and got, image.name
    for mine, theirs in zip(got, expected):
        assert mine[1] == theirs[1], image.name  # class
        assert mine[0] == pytest.approx(theirs[0], rel=1e-5), image.name  # score
        assert np.allclose(mine[2:], theirs[2:], atol=1e-3), image.name  # box, original-image pixels


def test_sixteen_concurrent_requests_are_all_answered_each_as_if_alone(served):
    project, server = served
    images = validation_images(project, 4) * 4
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda image: as_rows(*infer(server, image.read_bytes())), images))
    assert len(answers) == 16 and all(answers)
    for image, answer in zip(images, answers):  # batched with others or not, the same detections
        assert_answered_as_alone(answer, project, image)


def test_the_engine_answers_an_image_batched_with_others_within_the_tolerance(served):
    """The promise's first half, on the engine model itself through real requests: an image's outputs in a
    batch of 4 are its outputs alone, within OUTPUT_TOLERANCE."""
    import tritonclient.http as http

    project, server = served
    images = validation_images(project, 4)
    alone = [engine_outputs_alone(project, image) for image in images]
    batch = np.concatenate([a[1] for a in alone])
    client = http.InferenceServerClient(server.url)
    request = http.InferInput("input_1", list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    answer = client.infer(ENGINE, [request])
    for index, (_, _, cov, bbox) in enumerate(alone):
        assert np.abs(answer.as_numpy("output_cov/Sigmoid")[index] - cov[0]).max() <= OUTPUT_TOLERANCE
        assert np.abs(answer.as_numpy("output_bbox/BiasAdd")[index] - bbox[0]).max() <= OUTPUT_TOLERANCE


def infer_many(server, images: list[bytes]):
    """One request of several images: each image's rows of BOXES, SCORES and CLASS_IDS."""
    import tritonclient.http as http

    client = http.InferenceServerClient(server.url)
    request = http.InferInput("IMAGE", [len(images), 1], "BYTES")
    request.set_data_from_numpy(np.array([[image] for image in images], dtype=object))
    answer = client.infer("detectnet_v2_ensemble", [request])
    return list(zip(answer.as_numpy("BOXES"), answer.as_numpy("SCORES"), answer.as_numpy("CLASS_IDS")))


def test_a_request_of_several_images_gets_each_images_own_detections(served):
    project, server = served
    images = validation_images(project, 3)
    answers = infer_many(server, [image.read_bytes() for image in images])
    assert len(answers) == 3
    for image, answer in zip(images, answers):
        assert_answered_as_alone(as_rows(*answer), project, image)


def test_an_image_that_fails_to_decode_names_its_row_in_a_request_of_several(served):
    from tritonclient.utils import InferenceServerException

    project, server = served
    good = validation_images(project, 1)[0].read_bytes()
    with pytest.raises(InferenceServerException) as refused:
        infer_many(server, [good, good[:600], good])
    assert_clean(str(refused.value), r"IMAGE\[1\] is not an image this server can read \(600 bytes\): ")


def test_a_bad_request_among_concurrent_good_ones_fails_alone(served):
    """Requests that Triton batches together are decoded and run together: one that cannot be decoded is
    answered with its error, and every other gets its own image's detections."""
    from tritonclient.utils import InferenceServerException

    project, server = served
    images = validation_images(project, 4)
    by_name = {image.name: image for image in images}
    truncated = images[0].read_bytes()[:600]
    sends = [(image.name, image.read_bytes()) for image in images] * 3 + [("truncated", truncated)] * 4

    def send(item):
        name, data = item
        try:
            return name, as_rows(*infer(server, data))
        except InferenceServerException as exc:
            return name, str(exc)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, sends))
    for name, answer in answers:
        if name == "truncated":
            assert_clean(answer, r"IMAGE\[0\] is not an image this server can read \(600 bytes\): ")
        else:
            assert_answered_as_alone(answer, project, by_name[name])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (RGB) and whose data is a few bytes: a decompression bomb's
    header, which a server that checks sizes only after decoding would try to fill."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def png(width: int, height: int) -> bytes:
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 30)).save(out, "PNG")
    return out.getvalue()


def zip_bomb() -> bytes:
    """144 megapixels of one colour in a real, complete PNG of a few hundred KB."""
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.new("1", (12000, 12000)).save(out, "PNG", optimize=True)
    return out.getvalue()


from test_encoded_images import EPS, flooded, jpeg_bytes, scans  # noqa: E402 - the hostile bytes the unit tests use


def jpeg_scan_flood() -> bytes:
    progressive = jpeg_bytes(progressive=True)
    start, end = scans(progressive)[-1]
    return progressive[:end] + progressive[start:end] * 200 + progressive[end:]

HOSTILE = {  # what a client sends -> what the error must say
    "not an image": (lambda project: b"not a png",
                     r"IMAGE\[0\] is not an image this server can read \(9 bytes\): not a PNG, JPEG or BMP"),
    "an EPS file": (lambda project: EPS, r"IMAGE\[0\] is not an image this server can read \(\d+ bytes\): not a PNG, "
                                         r"JPEG or BMP"),
    "a PNG flooded with chunks": (lambda project: flooded(png(200, 100), 70000),
                                  r"IMAGE\[0\] is not an image this server can read \(\d+ bytes\): a PNG of more "
                                  r"than 65536 chunks"),
    "a JPEG flooded with scans": (lambda project: jpeg_scan_flood(),
                                  r"IMAGE\[0\] is not an image this server can read \(\d+ bytes\): a JPEG of \d+ "
                                  r"scans, more than 100"),
    "a truncated PNG": (lambda project: validation_images(project, 1)[0].read_bytes()[:600],
                        r"IMAGE\[0\] is not an image this server can read \(600 bytes\): "),
    "a decompression bomb": (lambda project: zip_bomb(),
                             r"IMAGE\[0\] is 12000x12000, 144000000 pixels, more than this server decodes "
                             r"\(triton.max_image_pixels 1000000\); it was not decoded"),
    "a 30000x30000 header": (lambda project: png_header_only(30000, 30000),
                             r"IMAGE\[0\] is 30000x30000, 900000000 pixels, more than this server decodes"),
    "an image over the cap": (lambda project: png(1001, 1000), r"IMAGE\[0\] is 1001x1000, 1001000 pixels, more"),
    "a 1x1 image": (lambda project: png(1, 1), r"IMAGE\[0\] is 1x1, smaller than 1/8 of the model's input "),
    "an empty image": (lambda project: b"", r"IMAGE\[0\] is empty \(0 bytes\): send an encoded image"),
    "more bytes than the bound": (lambda project: bytes(LIMITS["bytes"] + 1),
                                  r"IMAGE holds 1048577 bytes, more than this server takes in one request "
                                  r"\(triton.max_request_bytes 1048576\)"),
}


def test_a_request_whose_images_hold_more_pixels_in_all_than_the_cap_is_refused_undecoded(served):
    """Each image is under triton.max_image_pixels; together they are over: one request's decoding is bounded."""
    from tritonclient.utils import InferenceServerException

    project, server = served
    with pytest.raises(InferenceServerException) as refused:
        infer_many(server, [png(800, 600)] * 3)
    assert_clean(str(refused.value), r"IMAGE holds 3 images of 1440000 pixels in all, more than this server decodes "
                                     r"for one request \(triton.max_image_pixels 1000000\); none was decoded")
    assert refused.value.status() == "400"


def test_a_good_request_is_answered_while_two_clients_send_the_costliest_images_allowed(served):
    """The most decoding a request may cost (an image at the pixel cap), sent without pause by two clients,
    holds up a good request for no more than that decoding (bench/bench_hostile.py measures how long)."""
    import threading

    project, server = served
    costly, stop = png(1000, 1000), threading.Event()

    def hostile() -> int:
        sent = 0
        while not stop.is_set():
            assert as_rows(*infer(server, costly)) is not None
            sent += 1
        return sent

    with ThreadPoolExecutor(2) as pool:
        senders = [pool.submit(hostile) for _ in range(2)]
        try:
            for image in validation_images(project, 3):
                assert_served_as_evaluated(project, server, image)
        finally:
            stop.set()
        assert all(sender.result() > 0 for sender in senders)


@pytest.mark.parametrize("case", HOSTILE, ids=lambda case: case.replace(" ", "_"))
def test_hostile_input_gets_a_short_clean_error_and_the_server_keeps_serving(served, case):
    from tritonclient.utils import InferenceServerException

    project, server = served
    payload, expected = HOSTILE[case]
    with pytest.raises(InferenceServerException) as refused:
        infer(server, payload(project))
    assert_clean(str(refused.value), expected)
    assert refused.value.status() == "400"  # the client's fault, as Triton's own checks answer it
    assert_served_as_evaluated(project, server, validation_images(project, 1)[0])
    assert server.process.poll() is None


def assert_clean(message: str, expected: str) -> None:
    """One short line that says what is wrong: no traceback, no server path, no Python object."""
    assert re.search(expected, message), message
    assert "Traceback" not in message and " at 0x" not in message and str(ROOT) not in message, message
    assert not re.search(r"(?<![\w.])/(usr|tmp|home|work|root|opt)/", message), message
    assert len(message) < 400, message


def test_a_request_with_a_wrong_input_name_gets_tritons_error_and_the_server_keeps_serving(served):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    project, server = served
    client = http.InferenceServerClient(server.url)
    request = http.InferInput("PICTURE", [1, 1], "BYTES")
    request.set_data_from_numpy(np.array([[b"x"]], dtype=object))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("detectnet_v2_ensemble", [request])
    assert_clean(str(refused.value), r"PICTURE")
    assert_served_as_evaluated(project, server, validation_images(project, 1)[0])


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_make_serve_stops_the_server_and_exits_cleanly_on_a_signal(served, signum):
    """`kill` and Ctrl-C are how serving ends: the server stops with it and the exit is 0, which make does not
    call an error (it did: "Error 143")."""
    import signal
    import subprocess
    import time

    from stages.serving.server import STOP_SECONDS, free_port

    project, _ = served
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "stages.serving.server",
                              "--repository", project / TRITON_DIR,
                              "--http-port", str(port), "--grpc-port", str(free_port()),
                              "--metrics-port", str(free_port())], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _answers(port):
            time.sleep(0.5)
        assert _answers(port), "make serve's server never became ready"
    finally:
        serve.send_signal(getattr(signal, signum))
        # read as it goes: Triton logs into the same pipe, and a full pipe would hold the server up.
        # The stop is bounded: SIGTERM, then SIGKILL after server.STOP_SECONDS
        said = serve.communicate(timeout=STOP_SECONDS + 30)[1]
    assert serve.returncode == 0, said
    assert f"on http://127.0.0.1:{port}" in said and said.rstrip().endswith("serve: stopped")
    time.sleep(1)
    assert not _answers(port), "the server outlived `make serve`"


def _answers(port: int) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


# --------------------------------------------------------------------------- a repository that travels

def test_the_packed_environment_leaves_the_project_out_and_packs_to_the_same_bytes(tmp_path):
    """Members sorted, times and owners zeroed, no __pycache__: the same venv packs to the same bytes, whenever."""
    import os
    import tarfile

    from stages.serving.environment import pack

    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = tmp_path / "venv" / "lib" / version / "site-packages"
    (site / "pkg" / "__pycache__").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (site / "pkg" / "__pycache__" / "__init__.cpython.pyc").write_bytes(b"compiled now")
    (site / "__editable__.detectnet_deploy-0.1.0.pth").write_text(str(ROOT) + "\n")
    (site / "detectnet_deploy-0.1.0.dist-info").mkdir()
    (site / "detectnet_deploy-0.1.0.dist-info" / "METADATA").write_text("Name: detectnet-deploy\n")
    pack(tmp_path / "venv", tmp_path / "first.tar.gz", level=1)
    os.utime(site / "pkg" / "__init__.py", (1, 1))
    pack(tmp_path / "venv", tmp_path / "second.tar.gz", level=1)
    assert (tmp_path / "first.tar.gz").read_bytes() == (tmp_path / "second.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "first.tar.gz") as tar:
        names = tar.getnames()
    assert f"lib/{version}/site-packages/pkg/__init__.py" in names
    assert {"bin/activate", "bin/python3", f"bin/{version}", f"lib/{version}/os.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or "detectnet_deploy" in n or "__editable__" in n]


@pytest.fixture(scope="module")
def travelled(built_project, tmp_path_factory):
    """The built project's repository, packed (triton.pack_environment=true), copied to a folder where
    nothing of the project is, and served from there with no path of the project in the server's
    environment: PATH has the system's directories only, no PYTHONPATH, no venv."""
    server_or_skip()
    import shutil

    from stages.serving.server import TRITON_HOME, TritonServer

    project = tmp_path_factory.mktemp("packing") / "project"
    shutil.copytree(built_project, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["triton"]["pack_environment"] = True
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "stages.triton", "--params", "params.yaml"], project)
    elsewhere = tmp_path_factory.mktemp("another_host")
    shutil.copytree(project / TRITON_DIR, elsewhere / "models")

    class ElsewhereServer(TritonServer):
        def environment(self):  # the server's own libraries only (the host's Triton), nothing of the project
            return {"PATH": "/usr/bin:/bin", "HOME": str(elsewhere),
                    "LD_LIBRARY_PATH": str(TRITON_HOME / "nvidia_pytriton.libs")}

    server = ElsewhereServer(elsewhere / "models", log_path=elsewhere / "triton.log")
    with server:
        yield project, elsewhere / "models", server


def test_a_copy_of_the_packed_repository_serves_the_evaluate_stages_detections_on_its_own(travelled):
    project, repository, server = travelled
    configs = [p.read_text() for p in repository.glob("*/config.pbtxt")]
    assert all(".venv" not in c for c in configs) and sum("python_env.tar.gz" in c for c in configs) == 3
    for image in validation_images(project, 2):
        assert_served_as_evaluated(project, server, image)


def test_the_repository_carries_the_evaluate_stages_own_modules_byte_for_byte(travelled):
    """What the Python models import is the evaluate stage's code, copied: the two cannot drift."""
    from stages.serving.repository import model_code_files

    _, repository, _ = travelled
    package = ROOT / "stages"
    for model in ("detectnet_v2", "detectnet_v2_preprocess", "detectnet_v2_postprocess"):
        copied = sorted(p for p in (repository / model / "1" / "stages").rglob("*.py") if "__pycache__" not in p.parts)
        assert [p.relative_to(repository / model / "1" / "stages") for p in copied] == \
            [p.relative_to(package) for p in model_code_files()], model
        for path in copied:
            assert path.read_bytes() == (package / path.relative_to(repository / model / "1" / "stages")).read_bytes()
        assert os.access(repository / model / "triton_python_backend_stub", os.X_OK), model


def test_make_serve_says_where_it_serves_and_fails_clearly_without_a_repository(tmp_path):
    result = run([sys.executable, "-m", "stages.serving.server", "--repository", tmp_path / "none",
                  "--http-port", "1"], ROOT, check=False, env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert result.returncode == 1
    assert "is not a model repository the triton stage wrote: run `dvc repro triton`" in result.stderr


def test_make_serve_on_a_busy_port_names_it_before_it_says_serving(tmp_path):
    """Another process holds the HTTP port: an error naming the port, and no "serving ..." promise."""
    import socket

    server_or_skip()
    (tmp_path / "repository" / "detectnet_v2_ensemble").mkdir(parents=True)
    (tmp_path / "repository" / "detectnet_v2_ensemble" / "config.pbtxt").write_text("")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run([sys.executable, "-m", "stages.serving.server", "--repository", tmp_path / "repository",
                      "--http-port", str(port)], ROOT, check=False)
    assert result.returncode == 1 and "serving" not in result.stderr, result.stderr
    assert f"error: serve: port {port} (HTTP) on 127.0.0.1 is in use by another process" in result.stderr
    assert "make serve HTTP_PORT=... GRPC_PORT=..." in result.stderr


def test_make_serve_takes_its_ports_from_make_variables():
    result = run(["make", "-n", "serve", "HTTP_PORT=9100", "GRPC_PORT=9101", "METRICS_PORT=9102"], ROOT)
    [command] = [line for line in result.stdout.splitlines() if "stages.serving.server" in line]
    assert "--http-port 9100 --grpc-port 9101" in command and "--metrics-port 9102" in command


def test_make_serve_passes_a_control_header_only_where_one_is_given():
    result = run(["make", "-n", "serve", "CONTROL_HEADER=x-admin=open-sesame"], ROOT)
    [command] = [line for line in result.stdout.splitlines() if "stages.serving.server" in line]
    assert command.endswith("--control-header x-admin=open-sesame")
    [command] = [line for line in run(["make", "-n", "serve"], ROOT).stdout.splitlines() if "stages.serving" in line]
    assert "--control-header" not in command


@pytest.mark.parametrize("given", ["x-admin", "x admin=v", "x-admin=", "x-admin=a,b", "x-admin=a:b"])
def test_make_serve_refuses_a_control_header_triton_could_not_take(given):
    result = run([sys.executable, "-m", "stages.serving.server", "--control-header", given], ROOT, check=False)
    assert result.returncode == 2 and "must be NAME=VALUE" in result.stderr and "serving" not in result.stderr


# Triton's APIs that change the server or show its paths; a client without the control header gets 403
CONTROL_REQUESTS = [("GET", f"/v2/models/{model}/config") for model in MODELS] + [
    ("GET", "/v2/logging"), ("POST", "/v2/logging"), ("POST", "/v2/repository/index"),
    ("POST", f"/v2/repository/models/{ENGINE}/unload"), ("POST", f"/v2/repository/models/{ENGINE}/load"),
    ("GET", "/v2/trace/setting"), ("POST", "/v2/trace/setting"), ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/systemsharedmemory/region/mine/register")]
OPEN_REQUESTS = [("GET", "/v2"), ("GET", "/v2/health/ready"), ("GET", "/v2/models/stats")] + [
    ("GET", f"/v2/models/{model}") for model in MODELS] + [("GET", f"/v2/models/{model}/ready") for model in MODELS]


def http_request(server, method: str, path: str, headers=None) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    body = b'{"log_verbose_level": 1}' if method == "POST" else None
    request = urllib.request.Request(f"http://{server.url}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


@pytest.mark.parametrize("method, path", CONTROL_REQUESTS)
def test_a_client_without_the_control_header_is_refused_the_control_apis(served, method, path):
    _, server = served
    status, said = http_request(server, method, path)
    assert status == 403 and "This API is restricted" in said, (status, said)


def test_the_control_header_opens_the_model_config(served):
    _, server = served
    status, said = http_request(server, "GET", f"/v2/models/{ENSEMBLE}/config", server.headers)
    assert status == 200 and '"ensemble_scheduling"' in said


def test_no_open_api_answers_with_a_path_of_the_server(served):
    project, server = served
    for method, path in OPEN_REQUESTS:
        status, said = http_request(server, method, path)
        assert status == 200, (path, status, said)
        assert str(project) not in said and sys.prefix not in said and "/" + "work" not in said, (path, said)
        assert not re.search(r"(?<![\w.])/(usr|tmp|home|work|root|opt)/", said), (path, said)


# --------------------------------------------------------------------------- perf_analyzer, Triton's load generator

def perf_analyzer_or_skip():
    from stages.serving.load import installed
    reason = installed()
    if reason:
        pytest.skip(f"perf_analyzer is not installed here: {reason}")


def test_perf_analyzer_measures_the_ensemble_on_the_validation_images(served, tmp_path):
    from stages.serving.load import measure

    perf_analyzer_or_skip()
    project, server = served
    images = [path.read_bytes() for path in validation_images(project, 4)]
    (point,) = measure(server.url, "detectnet_v2_ensemble", images, [2], tmp_path / "perf.log", window_ms=1000,
                       extra=["--stability-percentage", "100"], headers=server.headers)
    assert point.concurrency == 2 and point.throughput > 0 and 0 < point.p50_ms <= point.p99_ms
    assert "Successful request count" in (tmp_path / "perf.log").read_text()
    assert server.control[1] not in (tmp_path / "perf.log").read_text()


def test_perf_analyzer_fails_with_the_servers_error_when_its_requests_fail(served, tmp_path):
    """The images go to the server as they are: a truncated one gets the preprocessing's own refusal."""
    from stages.pipeline.commands import CommandError
    from stages.serving.load import measure

    perf_analyzer_or_skip()
    project, server = served
    truncated = validation_images(project, 1)[0].read_bytes()[:600]
    with pytest.raises(CommandError, match=r"perf_analyzer failed[\s\S]*is not an image this server can read "
                                           r"\(600 bytes\)"):
        measure(server.url, "detectnet_v2_ensemble", [truncated], [1], tmp_path / "perf.log", window_ms=500,
                headers=server.headers)
