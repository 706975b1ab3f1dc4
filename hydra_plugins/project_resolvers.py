"""The project's OmegaConf resolvers, registered wherever conf/ is composed: DVC's `dvc exp run -S` imports
every module of the `hydra_plugins` package it finds at the repository's root (dvc.utils.hydra's
load_hydra_plugins, Hydra's plugin scan) before it composes, and stages/pipeline/config.py imports this one.
Self-contained (omegaconf only): DVC's own process imports it.

  ${dirname:${model.file}}   the folder of a project path ("." for a bare file name): model.root's default
"""
from __future__ import annotations

import posixpath

from omegaconf import OmegaConf


def dirname(path: str) -> str:
    return posixpath.dirname(str(path).rstrip("/")) or "."


if not OmegaConf.has_resolver("dirname"):
    OmegaConf.register_new_resolver("dirname", dirname)
