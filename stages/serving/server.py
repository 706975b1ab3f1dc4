"""The one place that starts a Triton server: the `tritonserver` that the nvidia-pytriton wheel bundles
(`make setup` installs it with --no-deps into .venv/triton; only its binary and libraries are used), on
a model repository, on localhost ports, stopped whatever happens.

    python -m stages.serving.server [--repository artifacts/triton] [--http-port 8000] ...

is what `make serve` runs."""
from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

from ..pipeline import commands
from ..pipeline.config import read_params
from ..pipeline.layout import TRITON_DIR, project_path
from ..pipeline.errors import ConfigError, StageError

TRITON_HOME = Path(sys.prefix) / "triton"  # nvidia-pytriton 0.7.0, installed there by make setup (triton.txt)
SERVER = TRITON_HOME / "pytriton" / "tritonserver"
MODEL_ENV = Path(sys.prefix) / "triton-env"  # where the Python models run (repository.VENV_FROM_MODEL)
PACKED_MODEL_ENV = Path(sys.prefix) / "triton-env.tar.gz"  # the same packed (environment.py), by make setup
STUB_NAME = "triton_python_backend_stub"
SHM_BYTES = 64 << 20
STOP_SECONDS = 15  # how long a stop waits for the server to end on SIGTERM before it kills it


def packed_environment() -> tuple[Path, Path]:
    """The packed environment of the Python models and the Python backend stub for its Python."""
    stub = SERVER / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / STUB_NAME
    for path, what in ((PACKED_MODEL_ENV, "the Python models' packed environment"), (stub, "the Python backend's stub")):
        if not path.is_file():
            raise StageError(f"{path} is missing: {what}, which `make setup` installs (or -S "
                             "triton.pack_environment=false, for a repository that serves from this checkout only)")
    return PACKED_MODEL_ENV, stub


def installed() -> str | None:
    """Why the bundled server cannot run here, or None when it can."""
    if not (SERVER / "bin" / "tritonserver").is_file():
        return f"{SERVER}/bin/tritonserver is not installed (make setup installs nvidia-pytriton 0.7.0 there)"
    stub = SERVER / "backends" / "python" / STUB_NAME
    if not stub.is_file():
        return f"{stub} is missing (make setup copies the stub for Python {sys.version_info[0]}.{sys.version_info[1]})"
    if not (MODEL_ENV / "bin" / "activate").is_file():
        return f"{MODEL_ENV} is missing: the Python models' environment, which make setup creates"
    return None


def in_use(port: int) -> bool:
    """Whether another process listens on the port on 127.0.0.1 (or every address): a bind fails."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to Triton too
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Triton's restricted-API options: these APIs answer only requests that carry the control header. The model
# config shows the server's absolute paths (Triton expands $$TRITON_MODEL_DIRECTORY in EXECUTION_ENV_PATH);
# the others change what the server loads, logs, traces and reads from memory. Health, metadata, inference and
# statistics stay open.
RESTRICTED_APIS = ("model-config", "model-repository", "logging", "trace", "shared-memory")
CONTROL_HEADER = "triton-control"


def control_header(given: str | None) -> tuple[str, str]:
    """(name, value) of the header that opens the restricted APIs: `NAME=VALUE` as given, or a random value
    no one is told, which keeps them closed to every client."""
    if given is None:
        return CONTROL_HEADER, secrets.token_urlsafe(32)
    name, sep, value = given.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9-]+", name) or not value or any(c in value for c in ",: \n"):
        raise StageError(f"--control-header {given!r} must be NAME=VALUE (letters, digits and '-' in the name; "
                         "no comma, colon or space in the value)")
    return name.lower(), value


class TritonServer:
    """A running tritonserver on `repository`; a context manager that stops it (and waits) on exit. The
    restricted APIs answer only requests carrying `control` (name, value): `headers` holds it for clients."""

    def __init__(self, repository: Path, http_port: int | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, log_path: Path | None = None,
                 control: tuple[str, str] | None = None):
        self.repository = Path(repository)
        self.control = control or control_header(None)
        self.http_port, self.grpc_port = http_port or free_port(), grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_path, self.process, self._log = log_path, None, None

    @property
    def headers(self) -> dict[str, str]:
        """What a client sends to use the restricted APIs (tritonclient's `headers=`)."""
        return {self.control[0]: self.control[1]}

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return [str(SERVER / "bin" / "tritonserver"), f"--model-repository={self.repository.resolve()}",
                f"--backend-directory={SERVER / 'backends'}", f"--http-port={self.http_port}",
                f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}", "--http-address=127.0.0.1",
                "--grpc-address=127.0.0.1", "--exit-on-error=true", "--strict-readiness=true",
                f"--http-restricted-api={','.join(RESTRICTED_APIS)}:{self.control[0]}={self.control[1]}",
                f"--grpc-restricted-protocol={','.join(RESTRICTED_APIS)}:{self.control[0]}={self.control[1]}",
                "--exit-timeout-secs=5",  # on SIGTERM, wait this long for open connections, not 30 s
                # the Python models exchange tensors through shared memory: room for a few batches of
                # KITTI-sized PNGs and model inputs from the start
                f"--backend-config=python,shm-default-byte-size={SHM_BYTES}",
                f"--backend-config=python,shm-growth-byte-size={SHM_BYTES}"]

    def environment(self) -> dict[str, str]:
        # the wheel's own libraries, and the libpython the Python stub links against (this interpreter's)
        libraries = [str(TRITON_HOME / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
        return commands.environment({"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [
            *libraries, os.environ.get("LD_LIBRARY_PATH")]))})

    def check(self) -> None:
        """A StageError saying why the server cannot start, if it cannot: no repository, no server, or a port
        another process holds (Triton would find out 60 lines of log later, while a client reached the other)."""
        if not (self.repository / "detectnet_v2_ensemble" / "config.pbtxt").is_file():
            raise StageError(f"{self.repository} is not a model repository the triton stage wrote: "
                             "run `dvc repro triton`")
        reason = installed()
        if reason:
            raise StageError(f"cannot start Triton: {reason}")
        taken = [f"{port} ({name})" for name, port in (("HTTP", self.http_port), ("gRPC", self.grpc_port),
                                                       ("metrics", self.metrics_port)) if in_use(port)]
        if taken:
            raise StageError(f"port {', '.join(taken)} on 127.0.0.1 is in use by another process: stop it, or "
                             "choose other ports (make serve HTTP_PORT=... GRPC_PORT=... METRICS_PORT=...)")

    def spawn(self, output=None) -> None:
        """Run tritonserver in its own process group (stop() ends it and its Python stubs); its output
        to `output`, or to this process's own where None."""
        self.process = subprocess.Popen(self.command(), stdout=output,
                                        stderr=None if output is None else subprocess.STDOUT,
                                        env=self.environment(), start_new_session=True)

    def start(self, timeout: float = 120.0) -> "TritonServer":
        """Spawn the server and wait until it is ready; its log to log_path, or nowhere."""
        self.check()
        self._log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        self.spawn(self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise StageError(f"tritonserver exited {self.process.returncode} while loading {self.repository}"
                                 + (f" (its log: {self.log_path})" if self.log_path else ""))
            if self.ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise StageError(f"tritonserver was not ready after {timeout:.0f} s")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and its Python stubs
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.serving.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", default=str(project_path(TRITON_DIR)), help="default: %(default)s")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--control-header", metavar="NAME=VALUE",
                        help=f"open Triton's {', '.join(RESTRICTED_APIS)} APIs to requests that carry this header "
                             "(closed to every client without it)")
    args = parser.parse_args(argv)
    try:
        control = control_header(args.control_header)
    except StageError as exc:
        print(f"error: serve: {exc}", file=sys.stderr)
        return 2
    server = TritonServer(Path(args.repository), args.http_port, args.grpc_port, args.metrics_port, control=control)
    # `kill` (SIGTERM) stops the server as Ctrl-C does, and both are how serving ends: exit 0 (make would
    # call 143 an error)
    signal.signal(signal.SIGTERM, _stop_serving)
    try:
        # the server gets no more of the environment than a pipeline step does: not the TAO key
        commands.hold_key(read_params(project_path("params.yaml")).get("backend"))
    except ConfigError:
        pass  # no params.yaml (a repository served elsewhere): no key variable is named
    try:
        server.check()
        print(f"serving {args.repository} on http://{server.url} (gRPC port {args.grpc_port}); Ctrl-C stops it",
              file=sys.stderr)
        server.spawn()
        return server.process.wait()
    except StageError as exc:
        print(f"error: serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        server.stop()
        print("serve: stopped", file=sys.stderr)
        return 0
    finally:
        server.stop()


def _stop_serving(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
