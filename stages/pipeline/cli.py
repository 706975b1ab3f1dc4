"""What every stage's command line shares: `--help`, Hydra overrides, `--params params.yaml`,
`--cfg job`, logging to the console, and one-paragraph errors with a non-zero exit."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from .. import HELD_SIGNALS
from ..compute import workers
from . import commands, config, stage_params
from .errors import StageError
from .outputs import cancel_deferred, raise_if_interrupted, signal_received, unwind_on_signals
from .errors import ConfigError

if TYPE_CHECKING:
    from ..detectnet_v2.spec_facts import SpecFacts
    from ..spec import Spec

log = logging.getLogger("stages")


@dataclass
class StageInputs:
    """What the stages after calibration_tensorfile share, set up once by run_stage: the spec as that stage
    resolved it, what the steps read from it, and the platform record, checked against this machine."""
    spec_path: Path
    spec: Spec
    facts: SpecFacts
    platform: dict | None  # None for a stage that does not run the engine


def _stage_inputs(cfg: DictConfig, check_platform: bool) -> StageInputs:
    from ..detectnet_v2.spec_facts import facts
    from ..spec import Spec
    from . import platform
    from .layout import RESOLVED_SPEC, project_path

    # the engine runs, is judged and is served where it was built, or not at all
    record = platform.checked(OmegaConf.to_container(cfg)) if check_platform else None
    spec_path = project_path(RESOLVED_SPEC)
    spec = Spec.load(spec_path)
    return StageInputs(spec_path, spec, facts(spec), record)

# an override each stage's --help shows: one of the parameters that stage reads (`code` reads none)
EXAMPLE_OVERRIDES = {
    "validate": "convert.max_batch_size=4", "sample": "sample.val_images=8",
    "calibration_tensorfile": "calibration.max_batches=4", "export": "export=int8",
    "convert": "convert.max_batch_size=4", "evaluate": "evaluate.max_map_drop=0.05", "triton": "triton.instances=2",
}


def run_stage(stage: str, description: str, run: Callable[..., None], argv: list[str] | None = None,
              reads_config: bool = True, reads_spec: bool = False, checks_platform: bool = False) -> int:
    """The stage's command line. A stage that reads no parameter (reads_config=False, the `code` stage)
    runs whatever params.yaml holds: a wrong value is the validate stage's to report. A stage that
    reads_spec is called run(cfg, StageInputs); with checks_platform, its inputs hold the checked record."""
    parser = argparse.ArgumentParser(
        prog=f"python -m stages.{stage}", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_epilog(stage))
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="Hydra override: GROUP=OPTION or KEY=VALUE")
    parser.add_argument("--params", metavar="PARAMS_YAML",
                        help="use this composed config instead of composing conf/")
    parser.add_argument("--cfg", choices=["job"], help="print the config the stage would use and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(commands.MaskingFilter())
    unwind_on_signals(HELD_SIGNALS)
    try:
        raise_if_interrupted()  # a signal held while the stage imported its libraries
        if args.cfg:
            print(OmegaConf.to_yaml(config.load(args.overrides, args.params)), end="")
            return 0
        cfg = config.load(args.overrides, args.params) if reads_config else None
        if cfg is not None:
            commands.hold_key(cfg.get("backend"))
        if cfg is not None and stage in stage_params.STAGE_PARAMS:
            cfg = stage_params.for_stage(cfg, stage)
        workers.configure(cfg.backend.get("workers") if cfg is not None and "backend" in cfg else None)
        try:
            if reads_spec:
                run(cfg, _stage_inputs(cfg, checks_platform))
            else:
                run(cfg)
        except (ConfigAttributeError, ConfigKeyError) as exc:  # a read of a key the stage does not list
            raise StageError(f"read config key {exc.full_key}, which STAGE_PARAMS[{stage!r}] "
                             "(stages/pipeline/stage_params.py) does not list: list it there, so that DVC re-runs "
                             "this stage when it changes") from None
        return 0
    except KeyboardInterrupt:
        return _interrupted(stage)
    except ConfigError as exc:
        return _failed(stage, 2, f"error: {exc}")
    except (StageError, ValueError, OSError) as exc:
        if signal_received():
            return _interrupted(stage)
        return _failed(stage, 1, f"error: {stage}: {exc}")
    except Exception as exc:  # a library's own failure: still one paragraph, traceback on request
        if signal_received():  # a signal that landed in an import: `ImportError: initialization failed`
            return _interrupted(stage)
        if os.environ.get("STAGES_DEBUG"):
            raise
        return _failed(stage, 1, f"error: {stage}: {type(exc).__name__}: {exc} (set STAGES_DEBUG=1 for the traceback)")


def _interrupted(stage: str) -> int:
    if signal_received() == signal.SIGTERM:
        return _failed(stage, 143, f"{stage}: interrupted (received signal SIGTERM); no partial output was kept")
    return _failed(stage, 130, f"{stage}: interrupted; no partial output was kept")


def _failed(stage: str, code: int, message: str) -> int:
    """Put back the outputs DVC deleted before running the stage (see restore.py), then print the error:
    its paragraph stays the last thing the stage says. Signals wait until the outputs are whole."""
    from .restore import restore_previous_outputs

    cancel_deferred()  # a signal deferred out of a lock's way: this is its unwinding already
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        restored = restore_previous_outputs(stage)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if restored:
        print(f"{stage}: the previous outputs are back in place, as dvc.lock records them: {', '.join(restored)}",
              file=sys.stderr)
    print(commands.mask(message), file=sys.stderr)
    return code


def _epilog(stage: str) -> str:
    example = EXAMPLE_OVERRIDES.get(stage)
    lines = ["Without --params the stage composes conf/ with the Hydra overrides given, e.g.",
             f"  python -m stages.{stage}{' ' + example if example else ''} --cfg job    # print the config, run nothing"]
    if example:
        lines.append(f"  python -m stages.{stage} {example}")
    lines.append("DVC runs it with --params params.yaml (the composition `make params` writes).")
    return "\n".join(lines)


class log_to_file:
    """Copy the stage's log records into a file (kept as part of the stage's output). No times and
    no absolute paths in it: the same inputs give the same bytes, so the output's hash, and every
    stage downstream, stays put on another machine."""

    def __init__(self, path):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.handler.addFilter(commands.MaskingFilter())

    def __enter__(self):
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
