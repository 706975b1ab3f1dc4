"""The libraries that offer TensorRT's builder API, loaded on demand, and the one place that says how
TensorRT-RTX differs from TensorRT 11 (sources: NVIDIA's TensorRT-RTX support matrix and Python API pages,
and the tensorrt-rtx-cu13 1.7.1.116 wheels themselves, measured 2026-12-06):

- **its version** is its own (1.7.1.116), not TensorRT's: its builder API is TensorRT 11's. Networks are
  strongly typed only (`create_network()`, no flags; `NetworkDefinitionCreationFlag` has STRONGLY_TYPED
  alone), precision comes from the graph (Q/DQ nodes, fp16 tensors), and there is no precision flag, no
  `EXPLICIT_BATCH`, no `int8_calibrator`, no dynamic range;
- **its timing cache** calls (`create_timing_cache`, `set_timing_cache`, `get_timing_cache`) exist and do
  nothing but warn (DeprecationWarning): it compiles its kernels when the engine first runs, on the GPU
  that runs it. The pipeline keeps no timing cache for it;
- **no `platform_has_fast_fp16` / `platform_has_fast_int8`** (TensorRT 11 removed them too);
- **it builds ahead of time with no GPU and no driver** (`build_serialized_network`), for every compute
  capability its runtime accepts: 8.0, 8.6, 8.9 and 12.x (Ampere, Ada, Blackwell RTX and data-centre
  parts of those). Its runtime refuses the rest, the H100's 9.0 among them ("The engine cannot run on this
  GPU, which has compute capability 9.0");
- **its engines are not TensorRT plans**: Triton's TensorRT backend, trtexec and DeepStream's nvinfer load
  TensorRT's, not these;
- **its ONNX parser is NVIDIA's**: a graph it accepts is evidence, not proof, that TensorRT 10 and 11 accept
  it, and a graph it refuses for a rule TensorRT shares (an Int32 bias DequantizeLinear) is refused there too.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType

from ..pipeline.errors import StageError
from .versions import from_trtexec_tag

RTX_NAME = "TensorRT-RTX"
RTX_DISTRIBUTION = "tensorrt-rtx-cu13"  # the package that installs `tensorrt_rtx` (with -libs and -bindings)
RTX_COMPUTE_CAPABILITIES = ("8.0", "8.6", "8.9", "12.x")  # what its runtime runs on
RTX_GPUS = "NVIDIA RTX or data-centre GPUs of compute capability 8.0, 8.6, 8.9 or 12.x (Ampere, Ada, Blackwell)"


class Unavailable(StageError):
    """A library that is not installed or cannot load on this machine; the message says which and why."""


@dataclass(frozen=True, order=True)
class TensorRTVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> "TensorRTVersion":
        """'10.3.0' or '10.3.0.26' (the Python package), or trtexec's tag 'v110400' / 'v8601'."""
        tag = from_trtexec_tag(text) if re.fullmatch(r"v?\d{4,6}", text.strip()) else None
        if tag:
            return cls(*tag)
        dotted = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
        if not dotted:
            raise StageError(f"cannot read a TensorRT version from {text!r}")
        return cls(int(dotted[1]), int(dotted[2]), int(dotted[3] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


RTX_API = TensorRTVersion(11, 0, 0)  # the TensorRT version whose builder API TensorRT-RTX has


@dataclass(frozen=True)
class Library:
    """A TensorRT builder library, loaded: what it is called, its own version, and the facts the build
    follows (the TensorRT version whose API it has, whether its timing cache does anything)."""
    name: str
    module: ModuleType = field(repr=False)
    version: str
    api: TensorRTVersion  # TensorRT's own version, or the one whose builder API another library has
    timing_cache: bool

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def other_than_tensorrt(self) -> str | None:
        """How an error names a library whose version is not TensorRT's ('TensorRT-RTX 1.7.1.116 (whose API
        is TensorRT 11's)'); None for TensorRT itself, which its version names."""
        return None if self.name == "TensorRT" else f"{self} (whose API is TensorRT {self.api.major}'s)"


def tensorrt() -> Library:
    """TensorRT itself (the `tensorrt` package), or Unavailable."""
    try:
        import tensorrt as module
    except ImportError as exc:
        raise Unavailable(f"the tensorrt Python package cannot be imported ({exc})") from None
    version = TensorRTVersion.parse(module.__version__)
    return Library("TensorRT", module, str(version), version, timing_cache=True)


@functools.cache
def tensorrt_rtx() -> Library:
    """TensorRT-RTX (`tensorrt_rtx`), loaded once; Unavailable, with the loader's reason, where it is not
    installed or its library cannot load here (another OS or processor, an older glibc)."""
    try:
        import tensorrt_rtx as module
        module.Logger  # noqa: B018 - the bindings load libtensorrt_rtx.so.1 on first use of the module
    except (ImportError, OSError, AttributeError) as exc:
        raise Unavailable(f"{RTX_NAME} cannot load here: {' '.join(str(exc).split())}") from None
    return Library(RTX_NAME, module, module.__version__, RTX_API, timing_cache=False)


def rtx_version() -> str | None:
    """The installed TensorRT-RTX's version, from its metadata (no import: the platform probe is cheap)."""
    try:
        return metadata.version(RTX_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def rtx_runs_on(compute_capability: str) -> bool:
    """Whether TensorRT-RTX's runtime runs engines on a GPU of this compute capability ('8.6', '12.0')."""
    major, _, minor = compute_capability.strip().partition(".")
    if not major.isdigit():
        return False
    return int(major) >= 12 or (int(major) == 8 and minor in ("0", "6", "9"))
