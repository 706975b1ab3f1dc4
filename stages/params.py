"""`make params`: write params.yaml, the composition of conf/ that the DVC stages read (exactly
what `dvc exp run` writes when hydra is enabled). `--check` fails when params.yaml has drifted."""
from __future__ import annotations

import argparse
import sys

from .pipeline.config import composed_yaml
from .pipeline.layout import PROJECT
from .pipeline.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.params", description=__doc__)
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="Hydra overrides, e.g. export=int8")
    parser.add_argument("--check", action="store_true", help="exit 1 if params.yaml differs from conf/")
    args = parser.parse_args(argv)
    target = PROJECT / "params.yaml"
    try:
        text = composed_yaml(args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if not target.exists() or target.read_text() != text:
            print("params.yaml differs from the composition of conf/: run `make params`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target.relative_to(PROJECT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
