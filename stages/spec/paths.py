"""Path-bearing fields of TAO DetectNet_v2 specs: listing, substitution by field, validation.

Substitution works on decoded string values of known fields, never on the text, so comments, keys
and other fields cannot be rewritten, and no character in a path needs shell or sed escaping.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Iterable, Mapping

from .textformat import Match, Scalar, Spec, SpecPathError, literal_for


@dataclass(frozen=True)
class PathField:
    pattern: str  # field path with [*] for repeated fields
    kind: str  # "dir" | "file" | "glob" | "output"
    read_by: frozenset[str]  # backends that read it: "open", "tao"


_BOTH, _TAO, _NONE = frozenset({"open", "tao"}), frozenset({"tao"}), frozenset()

# docs/design.md, "Spec substitution", plus the model paths of inference specs (a TAO user expects them mapped too).
# Training-only inputs (pretrained model, confidence model) are mapped and checked for leftover
# container prefixes, but not required to exist: none of the deployment steps reads them.
PATH_FIELDS: tuple[PathField, ...] = (
    PathField("dataset_config.data_sources[*].tfrecords_path", "glob", _TAO),
    PathField("dataset_config.data_sources[*].image_directory_path", "dir", _BOTH),
    PathField("dataset_config.validation_data_source.tfrecords_path", "glob", _TAO),
    PathField("dataset_config.validation_data_source.image_directory_path", "dir", _BOTH),
    PathField("model_config.pretrained_model_file", "file", _NONE),
    PathField("postprocessing_config.target_class_config[*].value.confidence_config"
              ".confidence_model_filename", "file", _NONE),
    PathField("training_config.visualizer.wandb_config.wandb_dir", "output", _NONE),
    PathField("kitti_config.root_directory_path", "dir", _TAO),
    PathField("coco_config.root_directory_path", "dir", _TAO),
    PathField("image_directory_path", "dir", _TAO),
    PathField("inferencer_config.tlt_config.model", "file", _TAO),
    PathField("inferencer_config.tensorrt_config.etlt_model", "file", _TAO),
    PathField("inferencer_config.tensorrt_config.calibrator_config.calibration_cache", "file", _NONE),
    PathField("inferencer_config.tensorrt_config.calibrator_config.calibration_tensorfile", "file", _NONE),
    PathField("inferencer_config.tensorrt_config.trt_engine", "output", _NONE),
)

# Where NVIDIA's specs put their data: the TAO container's mount points.
CONTAINER_PREFIXES: tuple[str, ...] = ("/workspace",)


@dataclass(frozen=True)
class PathValue:
    field: PathField
    match: Match

    @property
    def value(self) -> str:
        return self.match.value.value


def path_values(spec: Spec) -> list[PathValue]:
    """Every string value of a path-bearing field, in the order the fields are catalogued."""
    found = []
    for pf in PATH_FIELDS:
        for match in spec.find(pf.pattern, strict=False):
            if isinstance(match.value, Scalar) and match.value.kind == "string":
                found.append(PathValue(pf, match))
    return found


def _normalise(path: str) -> str:
    return path if path == "/" else path.rstrip("/") or path


def _under(value: str, prefix: str) -> bool:
    """True when value is prefix itself or lies below it, at a path-component boundary."""
    if prefix == "/":
        return value.startswith("/")
    return value == prefix or value.startswith(prefix + "/")


def remap(value: str, mapping: Mapping[str, str]) -> tuple[str, str] | None:
    """(new value, the literal real prefix) for the longest reference covering value, or None."""
    for ref in sorted(mapping, key=len, reverse=True):
        if _under(value, ref):
            real = _normalise(mapping[ref])
            rest = value[len(ref):] if ref != "/" else value[1:]
            if rest and not rest.startswith("/"):
                rest = "/" + rest
            return (real.rstrip("/") + rest) or "/", real
    return None


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """`REF=REAL` strings -> {ref: real}; refs are normalised (no trailing slash)."""
    mapping = {}
    for pair in pairs:
        ref, sep, real = pair.partition("=")
        if not sep or not ref or not real:
            raise SpecPathError(f"--map {pair!r}: expected REFERENCE=REAL_PATH, both non-empty")
        mapping[_normalise(ref)] = real
    return mapping


@dataclass(frozen=True)
class Rewrite:
    path_value: PathValue
    new: str
    literal_prefix: str  # the part of `new` that came from the mapping (globbed literally)


def substitute(spec: Spec, mapping: Mapping[str, str],
               overrides: Mapping[str, str] | None = None) -> tuple[Spec, list[Rewrite]]:
    """Map path-bearing values through `mapping` and apply value overrides by field path.

    Returns the new spec and the rewrites made (for validation and reporting).
    """
    mapping = {_normalise(k): v for k, v in mapping.items()}
    edits: dict[Scalar, str] = {}
    rewrites = []
    for pv in path_values(spec):
        hit = remap(pv.value, mapping)
        if hit and hit[0] != pv.value:
            edits[pv.match.value] = literal_for(pv.match.value, hit[0])
            rewrites.append(Rewrite(pv, hit[0], hit[1]))
    for field_path, new_value in (overrides or {}).items():
        for match in spec.find(field_path, strict=True):
            if not isinstance(match.value, Scalar):
                raise SpecPathError(f"{spec.source}: cannot set {match.path} (line {match.line}): "
                                    f"it is a message, not a value")
            try:
                edits[match.value] = literal_for(match.value, str(new_value))
            except SpecPathError as exc:
                raise SpecPathError(f"{spec.source}: cannot set {match.path} (line {match.line}): {exc}") from None
    return (spec.replaced(edits) if edits else spec), rewrites


@dataclass(frozen=True)
class Problem:
    field_path: str
    line: int
    value: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field_path} = {self.value!r}: {self.reason}"


class SpecCheckError(ValueError):
    """One error listing every problem found by `check`."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source, self.problems = source, problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} path problem(s) after substitution:\n{lines}")


def check(spec: Spec, backend: str = "tao", rewrites: Iterable[Rewrite] = (),
          container_prefixes: Iterable[str] = CONTAINER_PREFIXES, base_dir: str | None = None) -> None:
    """Raise SpecCheckError listing every path `backend` reads that is missing, and every
    path-bearing value still under an unmapped container prefix."""
    literal = {(r.path_value.match.path, r.new): r.literal_prefix for r in rewrites}
    prefixes = [_normalise(p) for p in container_prefixes]
    problems = []
    for pv in path_values(spec):
        where = (pv.match.path, pv.match.line, pv.value)
        stuck = next((p for p in prefixes if _under(pv.value, p)), None)
        if stuck:
            problems.append(Problem(*where, f"still under the container prefix {stuck!r}: add a mapping for it"))
            continue
        if backend not in pv.field.read_by:
            continue
        target = pv.value if base_dir is None or os.path.isabs(pv.value) else os.path.join(base_dir, pv.value)
        reason = _missing(pv.field.kind, target, literal.get((pv.match.path, pv.value)))
        if reason:
            problems.append(Problem(*where, reason))
    if problems:
        raise SpecCheckError(spec.source, problems)


def _missing(kind: str, path: str, literal_prefix: str | None) -> str | None:
    if kind == "glob":
        pattern = path
        if literal_prefix and path.startswith(literal_prefix):  # the mapped part is not a pattern
            pattern = glob.escape(literal_prefix) + path[len(literal_prefix):]
        if not any(os.path.isfile(p) for p in glob.iglob(pattern)):
            return "matches no file"
        return None
    if kind == "dir" and not os.path.isdir(path):
        return "no such directory" if not os.path.exists(path) else "not a directory"
    if kind == "file" and not os.path.isfile(path):
        return "no such file" if not os.path.exists(path) else "not a file"
    return None


__all__ = ["PATH_FIELDS", "CONTAINER_PREFIXES", "PathField", "PathValue", "Problem", "Rewrite",
           "SpecCheckError", "check", "parse_mapping", "path_values", "remap", "substitute"]
