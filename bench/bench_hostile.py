"""Hostile requests against the served ensemble, in one run on the bundled tritonserver: what each costs
the server, how long a good request waits while two hostile ones run (target: within 5 s on 2 cores, ratio
to the good request alone), and the server's memory after a burst of large images (ratio to idle).

  cost         one request of each kind, alone: the seconds until it is answered (refused or served)
  beside       a good validation image, sent while two clients send the costliest hostile kind without
               pause: its latency (worst of 5) vs alone (median of 5)
  memory       the memory (PSS) of tritonserver and its Python stubs: idle, at the peak of a burst of
               8 clients each sending 2 requests of 8 4.95-megapixel PNGs (39.6 megapixels, the most a
               request may hold under the defaults), and 5 s after

    python bench/bench_hostile.py

Needs artifacts/triton (`make repro`) and the server `make setup` installs.
"""
from __future__ import annotations

import io
import statistics
import struct
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
from _common import ROOT
from PIL import Image

from stages.pipeline.layout import TRITON_DIR
from test_encoded_images import flooded, scans  # the hostile bytes the tests send, larger
from stages.serving.server import TritonServer


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 60)).save(out, "PNG", compress_level=9)
    return out.getvalue()


def chunk_flood(chunks: int) -> bytes:
    return flooded(png(640, 480), chunks)


def bomb_header() -> bytes:
    """A PNG whose header says 30000x30000 (900 megapixels), a few hundred bytes long."""
    good = png(8, 8)
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return good[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + good[33:]


def jpeg_scan_flood(repeat: int) -> bytes:
    """A progressive JPEG whose last refinement scan comes again `repeat` times."""
    out = io.BytesIO()
    Image.effect_noise((640, 480), 40).convert("RGB").save(out, "JPEG", progressive=True)
    data = out.getvalue()
    start, end = scans(data)[-1]
    return data[:end] + data[start:end] * repeat + data[end:]


def hostile_kinds() -> dict[str, list[bytes]]:
    largest = png(6300, 6300)  # 39.7 megapixels: under triton.max_image_pixels (40 M), decoded for real
    return {
        "EPS, 25 MiB (Ghostscript's format)": [b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 640 480\n"
                                               + b"%" * (25 << 20)],
        "PNG with 2.5 million empty chunks": [chunk_flood(2_500_000)],
        "JPEG with 500 scans": [jpeg_scan_flood(500)],
        "PNG header of 900 megapixels": [bomb_header()],
        "truncated PNG": [png(640, 480)[:600]],
        "PNG of 39.7 megapixels (legal)": [largest],
        "8 PNGs of 39.7 megapixels, one request": [largest] * 8,
    }


def send(client, images: list[bytes]) -> tuple[float, str]:
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    request = http.InferInput("IMAGE", [len(images), 1], "BYTES")
    request.set_data_from_numpy(np.array([[image] for image in images], dtype=object))
    start = time.perf_counter()
    try:
        client.infer("detectnet_v2_ensemble", [request])
        outcome = "answered"
    except InferenceServerException as exc:
        outcome = f"refused: {str(exc)[:90]}"
    return time.perf_counter() - start, outcome


def resident_mib(server: TritonServer) -> float:
    """The proportional set size (PSS) of the server and its stubs, summed: pages they share (the libraries,
    the shared-memory pool) counted once, as RSS summed would not."""
    root = psutil.Process(server.process.pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total / (1 << 20)


def per_process(server: TritonServer) -> str:
    root = psutil.Process(server.process.pid)
    parts = []
    for process in [root, *root.children(recursive=True)]:
        try:
            names = [p for a in process.cmdline() for p in a.split("/") if p.startswith("detectnet_v2")]
            name = names[0] if names and process != root else "tritonserver"
            parts.append(f"{name} {process.memory_full_info().pss / (1 << 20):.0f}")
        except psutil.NoSuchProcess:
            pass
    return "; ".join(parts)


def main() -> None:
    import tritonclient.http as http

    repository = ROOT / TRITON_DIR
    if not (repository / "detectnet_v2_ensemble").is_dir():
        sys.exit(f"{repository} is missing: run `make repro` first")
    good = sorted((ROOT / "data/sample/validation/image_2").glob("*.png"))[0].read_bytes()
    kinds = hostile_kinds()
    with TritonServer(repository, log_path=ROOT / "artifacts" / "bench_hostile_triton.log") as server:
        client = http.InferenceServerClient(server.url, connection_timeout=300, network_timeout=300)
        for _ in range(3):
            send(client, [good])  # warm up
        print("cost of one request, alone:")
        costs = {}
        for name, images in kinds.items():
            seconds, outcome = send(client, images)
            costs[name] = seconds
            print(f"  {name:38s} {seconds * 1000:8.1f} ms  {outcome}")
        alone = statistics.median(send(client, [good])[0] for _ in range(5))
        worst = max(kinds, key=costs.get)
        print(f"good request beside two clients sending '{worst}' without pause:")
        stop = threading.Event()

        def hostile() -> None:
            own = http.InferenceServerClient(server.url, connection_timeout=300, network_timeout=300)
            while not stop.is_set():
                send(own, kinds[worst])

        threads = [threading.Thread(target=hostile) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        beside = []
        for _ in range(5):
            beside.append(send(client, [good])[0])
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join()
        print(f"  alone (median of 5) {alone * 1000:.0f} ms; beside (worst of 5) {max(beside) * 1000:.0f} ms "
              f"= {max(beside) / alone:.1f}x (target: within 5 s)")

        idle = resident_mib(server)
        print("  idle per process (MiB):", per_process(server))
        burst = [png(2580, 1920)] * 8  # 4.95 megapixels each, 39.6 in one request: the most one may hold
        peak = idle
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, resident_mib(server))
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()

        def burst_client(_) -> list[str]:
            own = http.InferenceServerClient(server.url, connection_timeout=300, network_timeout=300)
            return [send(own, burst)[1] for _ in range(2)]

        with ThreadPoolExecutor(8) as pool:
            outcomes = [o for client_outcomes in pool.map(burst_client, range(8)) for o in client_outcomes]
        print(f"burst: {outcomes.count('answered')} of {len(outcomes)} requests answered")
        time.sleep(5)
        done.set()
        watcher.join()
        after = resident_mib(server)
        print("  after per process (MiB):", per_process(server))
        print(f"memory (PSS): idle {idle:.0f} MiB, burst peak {peak:.0f} MiB, 5 s after {after:.0f} MiB "
              f"= {after / idle:.2f}x idle")


if __name__ == "__main__":
    main()
