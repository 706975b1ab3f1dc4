"""What an engine depends on beyond its inputs: the builder and its version, and for TensorRT the GPUs
it is built for. The `platform` stage writes it to artifacts/platform.json on every `dvc repro`; convert
and evaluate depend on that file, so DVC re-runs them only where the platform differs, and a fleet
sharing one remote keeps one engine per platform side by side in the cache and the run-cache.

The record holds nothing that varies otherwise (no times, host names or paths): the same platform gives
the same bytes. The probe is cheap, as it runs on every `dvc repro`: package versions from their
metadata (no imports of the packages) and one `nvidia-smi` query where a GPU matters."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import metadata

from . import commands
from .layout import PLATFORM_FILE, project_path
from .choices import BACKENDS, ENGINE_KINDS
from .errors import ConfigError
from .errors import StageError
from .tao_images import image_key
from ..tensorrt.libraries import RTX_COMPUTE_CAPABILITIES, rtx_version
from ..tensorrt.versions import from_trtexec_tag

# TensorRT's Python package, under the names NVIDIA publishes it (pip wheels per CUDA major, Debian's
# python3-libnvinfer registers `tensorrt`)
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13", "tensorrt_cu12")
GPU_QUERY = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]
TRTEXEC_QUERY = ["trtexec", "--help"]  # every trtexec run prints `&&&& RUNNING TensorRT.trtexec [TensorRT v110400]` first
LAUNCHER_QUERY = ["info"]  # `tao info` prints `toolkit_version: 5.5.0` among the launcher's config


def version_of(*distributions: str) -> str | None:
    """The installed version of the first of these distributions found, else None."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def query(argv: list[str], why: str) -> str | None:
    """The output of a one-line query whose output is parsed here (not a TAO step: tao_backend.runners
    runs those); None where its executable is not on PATH."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        result = commands.capture(argv, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StageError(f"`{' '.join(argv)}` could not run: {exc}") from None
    if result.returncode != 0:
        said = " ".join((result.stdout + result.stderr).split()) or "nothing"
        raise StageError(f"`{' '.join(argv)}` exited {result.returncode} ({said}): {why}")
    return result.stdout


def launcher_version(launcher: str) -> str | None:
    """The TAO version of the launcher on PATH (backend.launcher, `tao`), as it reports it: its version
    picks TAO's images. None where there is none. Never the launcher package the tests import: that
    one is not on PATH."""
    argv = [launcher, *LAUNCHER_QUERY]
    output = query(argv, "the TAO version an engine is built with cannot be known; fix the launcher")
    if output is None:
        return None
    found = re.search(r"^toolkit_version:\s*(\S+)", output, re.M)
    if not found:
        raise StageError(f"`{' '.join(argv)}` printed no toolkit_version line: "
                         f"{' '.join(output.split())[:200] or 'nothing'}")
    return found[1]


def trtexec_version() -> str | None:
    """The TensorRT version of the trtexec on PATH ('11.4.0'), read from the tag its banner prints ('v110400') by
    the table of what each version does (tensorrt/versions.py); None where there is none."""
    output = query(TRTEXEC_QUERY, "the TensorRT version trtexec builds with cannot be known; fix trtexec")
    if output is None:
        return None
    found = re.search(r"\[TensorRT (v\d+)\]", output)
    version = from_trtexec_tag(found[1]) if found else None
    if version is None:
        raise StageError(f"`{' '.join(TRTEXEC_QUERY)}` printed no '[TensorRT vNNNN]' banner of a TensorRT version: "
                         f"{' '.join(output.split())[:200] or 'nothing'}")
    return ".".join(map(str, version))


def gpus() -> list[dict[str, str]]:
    """The GPUs nvidia-smi lists, in its order (device 0 first: the one TensorRT builds on unless
    CUDA_VISIBLE_DEVICES says otherwise); [] where nvidia-smi is not installed."""
    output = query(GPU_QUERY, "the GPU an engine is built for cannot be known; fix the driver or take "
                              "nvidia-smi off PATH")
    if output is None:
        return []
    found = []
    for number, line in enumerate(output.splitlines(), 1):
        if not line.strip():
            continue
        name, _, capability = line.rpartition(",")
        if not name.strip() or not capability.strip():
            raise StageError(f"`{' '.join(GPU_QUERY)}` line {number} is {line!r}, not 'name, compute capability'")
        found.append({"name": name.strip(), "compute_capability": capability.strip()})
    return found


def probe(params: dict) -> dict:
    """The platform record for these params (params.yaml as read; only backend.* and convert.engine
    are looked at)."""
    backend = params.get("backend") or {}
    name = backend.get("name")
    if name not in BACKENDS:
        raise ConfigError(f"config key backend.name is {name!r}; expected one of {', '.join(BACKENDS)}")
    engine = (params.get("convert") or {}).get("engine")
    if engine not in ENGINE_KINDS:
        raise ConfigError(f"config key convert.engine is {engine!r}; expected one of {', '.join(ENGINE_KINDS)}")
    if name == "open" and engine == "onnxruntime":
        # a CPU engine: onnxruntime's graph rewrites and kernels are what its outputs depend on
        return {"backend": name, "engine": engine, "builder": {"onnxruntime": version_of("onnxruntime")}}
    if name == "open" and engine == "tensorrt_rtx":
        # built ahead of time for every GPU its runtime accepts, not for this machine's: no GPU is probed
        return {"backend": name, "engine": engine, "builder": {"tensorrt_rtx": rtx_version()},
                "runs_on": f"compute capability {', '.join(RTX_COMPUTE_CAPABILITIES)}"}
    if name == "open" and engine == "trtexec":  # the TensorRT trtexec links, not the Python package's
        builder = {"trtexec": trtexec_version()}
    elif name == "open":
        builder = {"tensorrt": version_of(*TENSORRT_DISTRIBUTIONS)}
    elif name == "tao":  # TAO's commands on PATH, inside its container: that container's TensorRT builds
        builder = {"converter": backend.get("converter"), "tensorrt": version_of(*TENSORRT_DISTRIBUTIONS)}
    elif name == "tao_docker":  # the image that builds the engine fixes TAO's and TensorRT's versions
        images = backend.get("images") or {}
        builder = {"converter": backend.get("converter"),
                   "image": images.get(image_key(backend.get("converter")))}
    else:  # tao_launcher: the launcher's version picks the images (its config.json)
        builder = {"converter": backend.get("converter"), "launcher": launcher_version(backend["launcher"])}
    return {"backend": name, "engine": "tensorrt", "builder": builder, "gpus": gpus()}


def describe(platform: dict) -> str:
    """One line for logs and metrics: 'tensorrt engine by tensorrt 10.3.0 on NVIDIA A100 (8.0)'."""
    builder = ", ".join(f"{key} {'(not found)' if value is None else value}"
                        for key, value in platform["builder"].items())
    devices = ", ".join(f"{gpu['name']} ({gpu['compute_capability']})" for gpu in platform.get("gpus", []))
    where = f" on {devices}" if devices else (", with no GPU found" if "gpus" in platform else " on the CPU")
    if "runs_on" in platform:  # portable across the GPUs it names, whatever built it
        where = f" for GPUs of {platform['runs_on']}"
    return f"{platform['engine']} engine by {builder}{where}"


def checked(params: dict) -> dict:
    """The record in artifacts/platform.json, after checking that it describes this machine: an
    engine must never be built, or judged, under another platform's name (as when a pulled
    platform.json meets a stage run by hand)."""
    path = project_path(PLATFORM_FILE)
    if not path.is_file():
        raise StageError(f"{path} does not exist: run the platform stage first "
                         "(`dvc repro` does; by hand: python -m stages.platform)")
    try:
        record = json.loads(path.read_text())
        described = describe(record)
    except (ValueError, KeyError, TypeError) as exc:
        raise StageError(f"{path} is not a platform record ({exc}): run python -m stages.platform") from None
    here = probe(params)
    if record != here:
        raise StageError(f"{path} describes a {described}, but this machine has a {describe(here)}: "
                         "run `dvc repro`, which probes the platform first")
    return record
