"""What each TensorRT major version can do: the one table that the builders (open_backend/tensorrt_builds.py,
network_build.py) and the tests' stand-ins for TensorRT's Python API and trtexec (tests/fake_tensorrt/,
tests/fake_trtexec.py) read, so a version's rule is written once. Sources: NVIDIA's TensorRT Python API
reference and "Migrating from TensorRT 10.x to 11.x", as docs/design.md ("TensorRT 10 and 11") collects them.
It imports nothing: the stand-ins load it without the project's dependencies."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Abilities:
    # strongly typed networks, the explicit route (precision from Q/DQ nodes and fp16 tensors). 9 added them;
    # 9 was never a general release, so 10 is the first that has them here
    strongly_typed: bool
    # precision builder flags (FP16, INT8), per-tensor dynamic ranges and INT8 calibrators: the implicit route,
    # TAO's. 10 deprecated it, 11 removed it
    implicit: bool
    # strong typing is asked for: NetworkDefinitionCreationFlag.STRONGLY_TYPED, trtexec --stronglyTyped. On 11 it is
    # the only typing: create_network() takes no flag, the enum's STRONGLY_TYPED is 0 and ignored, and trtexec's
    # option a no-op
    typing_flag: bool
    # NetworkDefinitionCreationFlag.EXPLICIT_BATCH, which 8.6's ONNX parser needs; 10 ignores it, 11 removed it
    explicit_batch_flag: bool
    # Builder.platform_has_fast_fp16 / platform_has_fast_int8 (11 removed them)
    fast_precision_queries: bool


# by major version; a version between two rows has the lower row's abilities (9 is 8's: see strongly_typed)
MAJORS = {
    8: Abilities(strongly_typed=False, implicit=True, typing_flag=False, explicit_batch_flag=True,
                 fast_precision_queries=True),
    10: Abilities(strongly_typed=True, implicit=True, typing_flag=True, explicit_batch_flag=True,
                  fast_precision_queries=True),
    11: Abilities(strongly_typed=True, implicit=False, typing_flag=False, explicit_batch_flag=False,
                  fast_precision_queries=False),
}


def abilities(major: int) -> Abilities:
    """What TensorRT `major` can do: its row of MAJORS, or the row of the latest version before it."""
    return MAJORS[max((known for known in MAJORS if known <= major), default=min(MAJORS))]
