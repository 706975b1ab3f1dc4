"""What each stage reads of the config, one place for both ends: the `validate` stage writes each stage's
slice of params.yaml (layout.PARAMS_DIR/<stage>.json), which dvc.yaml makes the stage's dependency in place of
`params:`, so DVC re-runs a stage only when a key it reads changed; and the stage is handed only these
keys, so reading another fails at once, in every test, instead of going unnoticed. A section listed
whole may leave keys out with "-key". DVC's own `params:` cannot: it lists keys, and a key one backend's
config lacks is an error there. Each stage's comment in dvc.yaml repeats its entry (a test compares them)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

PIPELINE_STAGES = ("validate", "sample", "calibration_tensorfile", "export", "convert", "evaluate", "metrics",
                   "triton")
# how export calibrates: nothing before it reads it, nothing after the cache
CALIBRATION_ONLY = ("-backend.calibration_method", "-backend.percentile", "-backend.skip_zeros",
                    "-backend.trt_version")
STAGE_PARAMS = {
    "sample": ("sample",),
    "calibration_tensorfile": ("spec", "dataset.spec", "dataset.references", "calibration", "-calibration.selection_images",
                               "export.calibration_cache", "backend", *CALIBRATION_ONLY),
    # auto calibration measures mAP on a selection set, against the gate's threshold
    "export": ("export", "model", "dataset.classes", "backend", "calibration.selection_images",
               "evaluate.max_map_drop"),
    "convert": ("convert", "export.data_type", "export.batch_size", "export.batches", "backend", *CALIBRATION_ONLY),
    # the calibration images are the agreement's too, except where a given cache was made on other images
    "evaluate": ("evaluate", "export.data_type", "export.calibration_cache", "convert.engine", "backend",
                 *CALIBRATION_ONLY),
    "triton": ("triton", "convert.max_batch_size", "convert.engine", "backend", *CALIBRATION_ONLY),
}


def _listed(key: str, entries: tuple[str, ...]) -> bool:
    def under(entry: str) -> bool:
        return key == entry or key.startswith(entry + ".")
    return any(under(e) for e in entries if not e.startswith("-")) and \
        not any(under(e[1:]) for e in entries if e.startswith("-"))


def stage_params(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The keys STAGE_PARAMS lists for `stage`, flattened ({'export.data_type': 'int8', ...}), sorted."""
    from omegaconf import OmegaConf

    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    return {key: flat[key] for key in sorted(flat) if _listed(key, STAGE_PARAMS[stage])}


def for_stage(cfg: DictConfig, stage: str) -> DictConfig:
    """The config as `stage` may read it: only what STAGE_PARAMS lists; reading another key raises."""
    from omegaconf import OmegaConf

    def keep(tree: Any, prefix: str) -> Any:
        if not isinstance(tree, dict) or not tree:
            return tree
        kept = {}
        for key, value in tree.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            below = [e.lstrip("-") for e in STAGE_PARAMS[stage] if e.lstrip("-").startswith(path + ".")]
            if below and isinstance(value, dict):  # part of it listed, or listed less some keys
                kept[key] = keep(value, path)
            elif _listed(path, STAGE_PARAMS[stage]):
                kept[key] = value
        return kept

    masked = OmegaConf.create(keep(OmegaConf.to_container(cfg, resolve=True), ""))
    OmegaConf.set_struct(masked, True)
    return masked


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: nested `spec.set` entries become field paths."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
