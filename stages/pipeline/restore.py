"""A stage that fails under DVC leaves its previous outputs in place.

DVC deletes a stage's outputs before it runs the command (`persist: true` would keep them, but turns
the stage's run-cache off). dvc.lock still records the previous run until a run succeeds, and DVC's
cache holds its files, so a failing stage can put back what dvc.lock records, as `dvc checkout` would.
Run by hand, nothing was deleted (outputs are replaced only on success) and nothing is done here: DVC
names the stage it runs in DVC_STAGE.

DVC's own checkout cannot be called: the `dvc repro` that runs the stage holds the repository lock.
DVC's API is used to find the cache (its place is configurable, and queued experiments share their
parent's); the files are copied by hand, each output whole or not at all."""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from .layout import PROJECT

log = logging.getLogger("stages")


@functools.lru_cache(maxsize=1)
def _cache():
    from dvc.repo import Repo  # heavy: imported only when a stage failed

    with Repo(str(PROJECT)) as repo:
        return repo.cache.local


def _cache_path(md5: str) -> Path:
    return Path(_cache().oid_to_path(md5))


def _copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".restoring", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_dir(listing: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".restoring", dir=target.parent))
    try:
        for entry in json.loads(listing.read_text()):
            destination = tmp / entry["relpath"]
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_cache_path(entry["md5"]), destination)
        tmp.chmod(0o755)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def recorded_outputs(stage: str) -> list[dict]:
    """The outputs dvc.lock records for the stage (path, md5), or none."""
    lock = PROJECT / "dvc.lock"
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return []
    return [out for out in (stages.get(stage) or {}).get("outs", []) if out.get("md5") and out.get("path")]


def restore_previous_outputs(stage: str) -> list[str]:
    """Put back, from DVC's cache, each output of `stage` that dvc.lock records and the workspace lacks.
    Returns the paths restored; one that the cache lacks is named in the log and left missing."""
    if os.environ.get("DVC_STAGE") != stage:
        return []
    restored = []
    for out in recorded_outputs(stage):
        target = PROJECT / out["path"]
        if target.exists() or target.is_symlink():
            continue  # still there (run by hand), or written anew before the failure
        try:
            source = _cache_path(out["md5"])
            if out["md5"].endswith(".dir"):
                _copy_dir(source, target)
            else:
                _copy_file(source, target)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: could not restore %s from DVC's cache (%s); `dvc checkout %s` or `dvc repro` "
                        "brings it back", stage, out["path"], exc, stage)
            continue
        restored.append(out["path"])
    return restored
