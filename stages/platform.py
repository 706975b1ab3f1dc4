"""Stage `platform`: what the engine depends on beyond its inputs, written to artifacts/platform.json
(the builder and its version; for TensorRT engines, the GPUs nvidia-smi lists with their compute
capability). DVC runs it on every `dvc repro` (always_changed); the file's bytes change only when the
platform does, so convert and evaluate, which depend on it, re-run only on a machine whose platform
differs, and a machine whose platform was built before restores its engine from the run-cache.

It reads params.yaml (backend.*, convert.engine) and nothing else, and starts fast: it takes neither
Hydra overrides nor the schema check the other stages do (they check the same params.yaml)."""
from __future__ import annotations

import argparse
import json
import sys

from .pipeline import commands
from .pipeline.config import read_params
from .pipeline.layout import PLATFORM_FILE, project_path
from .pipeline.errors import ConfigError
from .pipeline.errors import StageError
from .pipeline.outputs import write_text_atomically
from .pipeline.platform import describe, probe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.platform", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", metavar="PARAMS_YAML", default="params.yaml",
                        help="the composed config to read backend.* and convert.engine from (default: %(default)s)")
    parser.add_argument("--print", action="store_true", help="print the record instead of writing the file")
    args = parser.parse_args(argv)
    try:
        params = read_params(args.params)
        commands.hold_key(params.get("backend"))
        platform = probe(params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (StageError, OSError) as exc:
        print(commands.mask(f"error: platform: {exc}"), file=sys.stderr)
        return 1
    text = json.dumps(platform, indent=2, sort_keys=True) + "\n"
    if args.print:
        print(text, end="")
    else:
        write_text_atomically(project_path(PLATFORM_FILE), text)
        print(f"platform: {describe(platform)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
