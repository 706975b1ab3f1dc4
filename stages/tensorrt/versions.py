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
    # digits of the minor version in trtexec's banner tag: v8601 is 8.6.1, v100300 10.3.0, v110400 11.4.0
    tag_minor_digits: int


# by major version; a version between two rows has the lower row's abilities (9 is 8's: see strongly_typed)
MAJORS = {
    8: Abilities(strongly_typed=False, implicit=True, typing_flag=False, explicit_batch_flag=True,
                 fast_precision_queries=True, tag_minor_digits=1),
    10: Abilities(strongly_typed=True, implicit=True, typing_flag=True, explicit_batch_flag=True,
                  fast_precision_queries=True, tag_minor_digits=2),
    11: Abilities(strongly_typed=True, implicit=False, typing_flag=False, explicit_batch_flag=False,
                  fast_precision_queries=False, tag_minor_digits=2),
}


def abilities(major: int) -> Abilities:
    """What TensorRT `major` can do: its row of MAJORS, or the row of the latest version before it."""
    return MAJORS[max((known for known in MAJORS if known <= major), default=min(MAJORS))]


def trtexec_tag(major: int, minor: int, patch: int) -> str:
    """The tag trtexec's banner gives this version ('[TensorRT v110400]')."""
    return f"v{major}{minor:0{abilities(major).tag_minor_digits}d}{patch:02d}"


def from_trtexec_tag(tag: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a trtexec banner tag ('v110400', 'v8601'), or None where it is not one."""
    digits = tag.strip().removeprefix("v")
    if not digits.isdigit() or not 4 <= len(digits) <= 6:
        return None
    number = int(digits)
    for minor_digits in (2, 1):
        major = number // 10 ** (minor_digits + 2)
        if major and abilities(major).tag_minor_digits == minor_digits \
                and trtexec_tag(major, number // 100 % 10 ** minor_digits, number % 100) == f"v{digits}":
            return major, number // 100 % 10 ** minor_digits, number % 100
    return None
