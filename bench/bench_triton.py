"""Triton's ensemble (image bytes in, detections out) vs the same work in one process, on the same
images, in one run (target: the server's throughput >= 0.7x the in-process one).

  served       8 concurrent clients (tritonclient HTTP) sending one encoded image per request to
               detectnet_v2_ensemble on the bundled tritonserver: decoding, engine (dynamic batching),
               clustering in Triton's Python backend
  in-process   the evaluate stage's path: decoding and preprocessing on all cores, the engine in batches
               of convert.max_batch_size, detect() per image
  engine only  the in-process engine and detect() on images already decoded (what the server adds
               decoding to)

    python bench/bench_triton.py [--rounds 4]

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
from stages.serving.server import TritonServer
from stages.spec import Spec

CLIENTS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="times each validation image is sent")
    args = parser.parse_args()
    repository = ROOT / "artifacts" / "triton"
    if not (repository / "detectnet_v2_ensemble").is_dir():
        sys.exit(f"{repository} is missing: run `make repro` first")
    spec = Spec.load(ROOT / "artifacts/calibration/spec.txt")
    setup = evaluation_setup(spec, facts(spec).width, facts(spec).height)
    max_batch = int((repository / "detectnet_v2/config.pbtxt").read_text().split("max_batch_size:")[1].split()[0])
    images = sorted((ROOT / "data/sample/validation/image_2").glob("*.png")) * args.rounds
    encoded = [path.read_bytes() for path in images]
    engine = OnnxRunner(ROOT / "artifacts/engine/model.onnx")

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

    with TritonServer(repository, log_path=Path("/tmp/bench_triton.log")) as server:
        per_thread = threading.local()  # a client per client thread: gevent's sockets stay in their thread

        def send(data):
            if not hasattr(per_thread, "client"):
                per_thread.client = http.InferenceServerClient(server.url)
            request = http.InferInput("IMAGE", [1, 1], "BYTES")
            request.set_data_from_numpy(np.array([[data]], dtype=object))
            per_thread.client.infer("detectnet_v2_ensemble", [request])

        pool = ThreadPoolExecutor(CLIENTS)

        def served():
            list(pool.map(send, encoded))

        served()  # warm-up: each Python model's first requests, each client's connection
        remote = min(timed(served) for _ in range(2))
        pool.shutdown()
    count = len(images)
    print(f"Triton ensemble vs in-process, {count} KITTI-sized images ({setup.width}x{setup.height} input), "
          f"{CLIENTS} concurrent clients, batches up to {max_batch}")
    print(f"  served:      {count / remote:7.1f} images/s")
    print(f"  in-process:  {count / local:7.1f} images/s (decoding included)")
    print(f"  engine only: {count / alone:7.1f} images/s (decoded images)")
    print(f"  served / in-process: {local / remote:.2f}x (target >= 0.7); served / engine only: {alone / remote:.2f}x")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
