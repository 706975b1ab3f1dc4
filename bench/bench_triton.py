"""Triton's ensemble (image bytes in, detections out) under load vs the same work in one process, on the
same images, in one run (target: the server's throughput at 4 concurrent clients >= 0.8x the in-process one).

  served       Triton's own perf_analyzer (HTTP) at concurrency 1, 2, 4 and 8, sending the validation images
               in turn, one encoded image per request, to detectnet_v2_ensemble on the bundled tritonserver:
               decoding, engine (dynamic batching), clustering in Triton's Python backend; throughput and
               latency (p50, p99) as perf_analyzer's client sees it
  soak         --soak requests (2,000) from 8 clients (tritonclient HTTP, a connection each), each answer
               compared with its own image's detections found in-process: none lost, none crossed
  in-process   the evaluate stage's path: decoding and preprocessing on all cores, the engine in batches
               of convert.max_batch_size, detect() per image
  engine only  the in-process engine and detect() on images already decoded (what the server adds
               decoding to)

    python bench/bench_triton.py [--rounds 4] [--soak 2000]

Needs artifacts/triton (`make repro`) and the server `make setup` installs.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import ROOT

from stages.detectnet_v2.evaluation import detect, evaluation_setup
from stages.detectnet_v2.inference import OnnxRunner
from stages.detectnet_v2.preprocessing import EVALUATION_RESAMPLE, image_size, iter_batches
from stages.detectnet_v2.spec_facts import facts
from stages.pipeline.layout import RESOLVED_SPEC, TRITON_DIR, engine_file
from stages.serving.load import measure
from stages.serving.server import TritonServer
from stages.spec import Spec

CONCURRENCY = (1, 2, 4, 8)
SOAK_CLIENTS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="times each validation image is sent")
    parser.add_argument("--soak", type=int, default=2000, help="requests of the soak (default: %(default)s)")
    parser.add_argument("--window", type=int, default=3000,
                        help="perf_analyzer's measurement window in ms (default: %(default)s)")
    args = parser.parse_args()
    repository = ROOT / TRITON_DIR
    if not (repository / "detectnet_v2_ensemble").is_dir():
        sys.exit(f"{repository} is missing: run `make repro` first")
    spec = Spec.load(ROOT / RESOLVED_SPEC)
    setup = evaluation_setup(spec, facts(spec).width, facts(spec).height)
    max_batch = int((repository / "detectnet_v2/config.pbtxt").read_text().split("max_batch_size:")[1].split()[0])
    images = sorted((ROOT / "data/sample/validation/image_2").glob("*.png")) * args.rounds
    encoded = [path.read_bytes() for path in images]
    engine = OnnxRunner(ROOT / engine_file("open", "onnxruntime"))

    def in_process():
        for start, batch in zip(range(0, len(images), max_batch),
                                iter_batches(images, max_batch, setup.width, setup.height,
                                             resample=EVALUATION_RESAMPLE)):
            cov, bbox = engine(batch)
            for index, path in enumerate(images[start:start + len(batch)]):
                detect(cov[index], bbox[index], setup, image_size(path))

    decoded = [np.array(b) for b in iter_batches(images, max_batch, setup.width, setup.height,
                                                   resample=EVALUATION_RESAMPLE)]
    sizes = [image_size(path) for path in images]

    def engine_only():
        for start, batch in zip(range(0, len(images), max_batch), decoded):
            cov, bbox = engine(batch)
            for index in range(len(batch)):
                detect(cov[index], bbox[index], setup, sizes[start + index])

    in_process()  # warm-up (imports, onnxruntime's first runs, numba)
    local = min(timed(in_process) for _ in range(2))
    alone = min(timed(engine_only) for _ in range(2))

    import tritonclient.http as http

    expected = {}  # each image's detections, found in-process: what every answer must be
    for start, batch in zip(range(0, len(images), max_batch), decoded):
        cov, bbox = engine(batch)
        for index in range(len(batch)):
            found = detect(cov[index], bbox[index], setup, sizes[start + index])
            expected[images[start + index]] = sorted((k, float(c)) for k, name in enumerate(setup.classes)
                                                     for c in found[name].confidences)
    count = len(images)
    print(f"Triton ensemble vs in-process, {count} KITTI-sized images a round ({setup.width}x{setup.height} "
          f"input), batches up to {max_batch}")
    print(f"  in-process:  {count / local:7.1f} images/s (decoding included)")
    print(f"  engine only: {count / alone:7.1f} images/s (decoded images)")
    with TritonServer(repository, log_path=Path("/tmp/bench_triton.log")) as server:
        per_thread = threading.local()  # a client per client thread: gevent's sockets stay in their thread

        def send(data: bytes) -> tuple[float, list]:
            if not hasattr(per_thread, "client"):
                per_thread.client = http.InferenceServerClient(server.url)
            request = http.InferInput("IMAGE", [1, 1], "BYTES")
            request.set_data_from_numpy(np.array([[data]], dtype=object))
            start = time.perf_counter()
            answer = per_thread.client.infer("detectnet_v2_ensemble", [request])
            latency = time.perf_counter() - start
            scores, ids = answer.as_numpy("SCORES")[0], answer.as_numpy("CLASS_IDS")[0]
            return latency, sorted((int(i), float(s)) for s, i in zip(scores, ids) if i >= 0)

        points = measure(server.url, "detectnet_v2_ensemble", encoded, CONCURRENCY,
                         Path("/tmp/bench_triton_perf.log"), args.window, headers=server.headers)
        for point in points:
            target = " (target >= 0.8)" if point.concurrency == 4 else ""
            print(f"  served, {point.concurrency} client(s): {point.throughput:7.1f} images/s = "
                  f"{point.throughput * local / count:.2f}x in-process{target}; "
                  f"latency p50 {point.p50_ms:.0f} ms, p99 {point.p99_ms:.0f} ms (perf_analyzer)")

        soak = [images[i % len(images)] for i in range(args.soak)]
        by_path = {path: data for path, data in zip(images, encoded)}
        with ThreadPoolExecutor(SOAK_CLIENTS) as pool:
            start = time.perf_counter()
            answers = list(pool.map(lambda path: send(by_path[path])[1], soak))
            seconds = time.perf_counter() - start
        wrong = [str(path.name) for path, answer in zip(soak, answers) if not same(answer, expected[path])]
        print(f"  soak: {len(soak)} requests from {SOAK_CLIENTS} clients in {seconds:.0f} s, "
              f"{len(answers)} answered, {len(wrong)} not their image's detections"
              + (f" (first: {wrong[0]})" if wrong else ""))
        if wrong or len(answers) != len(soak):
            sys.exit(1)


def same(answer: list, expected: list) -> bool:
    """The same detections: class by class, scores within float32's rounding of the server's."""
    return len(answer) == len(expected) and all(a[0] == e[0] and abs(a[1] - e[1]) < 1e-4
                                                for a, e in zip(answer, expected))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
