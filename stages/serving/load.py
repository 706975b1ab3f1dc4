"""Load on a running Triton server, measured by Triton's own load generator, perf_analyzer: throughput and
client-side latency of a model at each concurrency. `make setup` installs perf_analyzer into
.venv/perf-analyzer (environment/perf-analyzer.in says from where, and why not PyPI's `perf-analyzer`)."""
from __future__ import annotations

import base64
import csv
import json
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..pipeline.commands import Secret, run_command
from ..pipeline.errors import StageError

PERF_HOME = Path(sys.prefix) / "perf-analyzer"
PERF_ANALYZER = PERF_HOME / "bin" / "perf_analyzer"
IMAGE_INPUT = "IMAGE"  # the ensemble's input: encoded images, TYPE_STRING


@dataclass(frozen=True)
class LoadPoint:
    concurrency: int
    throughput: float  # requests a second
    p50_ms: float
    p99_ms: float


def installed() -> str | None:
    """Why perf_analyzer cannot run here, or None when it can."""
    if not PERF_ANALYZER.is_file():
        return f"{PERF_ANALYZER} is not installed (make setup installs it)"
    return None


def write_input_data(images: Sequence[bytes], path: Path) -> Path:
    """perf_analyzer's --input-data file: one entry per encoded image, sent in turn. perf_analyzer takes a
    TYPE_STRING tensor given in base64 as its serialized bytes, so each is its 4-byte little-endian length,
    then the image."""
    entries = [{IMAGE_INPUT: {"b64": base64.b64encode(struct.pack("<I", len(image)) + image).decode("ascii")}}
               for image in images]
    path.write_text(json.dumps({"data": entries}))
    return path


def measure(url: str, model: str, images: Sequence[bytes], concurrency: Sequence[int], log_path: Path,
            window_ms: int = 3000, extra: Sequence[str] = (), headers: Mapping[str, str] | None = None) -> list[LoadPoint]:
    """perf_analyzer on `model` at `url` (host:port, HTTP), one encoded image a request, each concurrency in
    turn; its output goes to the console and log_path. perf_analyzer reads the model's config, a restricted
    API: `headers` is the server's control header (TritonServer.headers), masked in the log."""
    missing = installed()
    if missing:
        raise StageError(missing)
    points = []
    with tempfile.TemporaryDirectory() as scratch:
        data = write_input_data(images, Path(scratch) / "images.json")
        for clients in concurrency:
            report = Path(scratch) / f"concurrency-{clients}.csv"
            run_command([str(PERF_ANALYZER), "-m", model, "-u", url, "--input-data", str(data),
                         "--shape", f"{IMAGE_INPUT}:1", "--concurrency-range", f"{clients}:{clients}",
                         "--measurement-interval", str(window_ms), "-f", str(report), *extra,
                         *[a for name, value in (headers or {}).items() for a in ("-H", Secret(f"{name}:{value}"))]],
                        log_path, env={"LD_LIBRARY_PATH": str(PERF_HOME / "lib")})
            points.append(_point(report))
    return points


def _point(report: Path) -> LoadPoint:
    """The one row of perf_analyzer's CSV report (latencies there are in microseconds)."""
    rows = list(csv.DictReader(report.read_text().splitlines()))
    if len(rows) != 1:
        raise StageError(f"{report}: perf_analyzer's report has {len(rows)} rows, expected one")
    row = rows[0]
    return LoadPoint(int(row["Concurrency"]), float(row["Inferences/Second"]), float(row["p50 latency"]) / 1000,
                     float(row["p99 latency"]) / 1000)
