"""The one config loader: Hydra composition of conf/ (by hand, with overrides) or the composed
params.yaml (what DVC runs), checked against the schema (schema.py), whose errors name the config key.
OmegaConf is imported where it is used: the `platform` probe, which DVC runs on every `dvc repro`,
reads params.yaml with `read_params` alone and must start fast."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .layout import PROJECT
from .errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONF_DIR = PROJECT / "conf"


def _register_resolvers() -> None:
    """The resolvers conf/ uses (hydra_plugins/project_resolvers.py, which DVC finds by itself)."""
    import importlib
    import sys

    if str(PROJECT) not in sys.path:
        sys.path.append(str(PROJECT))
    importlib.import_module("hydra_plugins.project_resolvers")


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose conf/ with Hydra overrides, as `dvc exp run -S` does (and resolved the same way)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException as OmegaError

    _register_resolvers()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaError) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"cannot compose conf/ with overrides {list(overrides)}: {message}") from None
    return cfg


def composed_yaml(overrides: list[str] | tuple[str, ...] = ()) -> str:
    """params.yaml as DVC writes it for these overrides."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(compose(overrides))


def read_params(path: str | Path) -> dict:
    """params.yaml as plain data, not yet checked against the schema."""
    path = Path(path)
    try:
        # libyaml's loader where PyYAML has it: the same data, read several times faster
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping of config sections")
    return data


def load_params(path: str | Path) -> DictConfig:
    from .schema import validate

    return validate(read_params(path), str(path))


def load(overrides: list[str] | tuple[str, ...] = (), params: str | Path | None = None) -> DictConfig:
    if params is not None:
        if overrides:
            raise ConfigError(f"overrides {list(overrides)} apply to conf/, not to {params}: "
                              "drop --params, or use `dvc exp run -S ...`")
        return load_params(params)
    from .schema import validate

    return validate(compose(overrides), "conf/")
