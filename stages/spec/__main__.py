"""Check and rewrite a TAO spec before running the pipeline.

  python -m stages.spec paths SPEC
  python -m stages.spec substitute SPEC --map REF=REAL [--map ...] [--set FIELD_PATH=VALUE ...] -o OUT [--check]

Exit status: 0 on success, 2 with a one-paragraph message on stderr on any error.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .paths import CONTAINER_PREFIXES, SpecCheckError, check, parse_mapping, path_values, substitute
from .textformat import Spec, SpecPathError, SpecSyntaxError

_EPILOG = """\
examples:
  python -m stages.spec paths specs/train.txt
  python -m stages.spec substitute specs/train.txt \\
      --map /workspace/tao-experiments/data=$PWD/data \\
      --set training_config.batch_size_per_gpu=8 -o resolved.txt --check
"""


def _one_line(value: str) -> str:
    """Escape what would break the one-line, tab-separated `paths` output."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stages.spec", description="Inspect and rewrite the paths of a TAO experiment spec.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    paths = commands.add_parser(
        "paths", help="list the path-bearing fields of a spec",
        description="Print one line per path-bearing field: FIELD_PATH<TAB>LINE<TAB>VALUE "
                    "(tab, newline and backslash in VALUE are backslash-escaped).")
    paths.add_argument("spec", metavar="SPEC", help="TAO spec file (protobuf text format)")

    sub = commands.add_parser(
        "substitute", help="map reference paths to real ones, override values, write the result",
        description="Rewrite the path-bearing fields of SPEC (longest reference first, at path-component "
                    "boundaries), apply value overrides by field path, and write the result to OUT.")
    sub.add_argument("spec", metavar="SPEC", help="TAO spec file (protobuf text format)")
    sub.add_argument("--map", action="append", default=[], metavar="REF=REAL",
                     help="replace the reference path prefix REF by REAL (repeatable)")
    sub.add_argument("--set", action="append", default=[], metavar="FIELD_PATH=VALUE",
                     help="override the value at FIELD_PATH, e.g. training_config.num_epochs=1 (repeatable)")
    sub.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the result ('-' for stdout)")
    sub.add_argument("--check", action="store_true",
                     help="fail (writing nothing) if a path the backend reads is missing or a path is "
                          "still under a container prefix")
    sub.add_argument("--backend", choices=("tao", "open"), default="tao",
                     help="whose reads --check verifies: TAO reads TFRecords and images, the open backend "
                          "images only (default: tao)")
    sub.add_argument("--container-prefix", action="append", metavar="PREFIX",
                     help=f"prefix that must not remain after substitution (default: {', '.join(CONTAINER_PREFIXES)})")
    return parser


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecPathError(f"--set {pair!r}: expected FIELD_PATH=VALUE")
        out[key] = value
    return out


def _write_atomically(text: str, output: str) -> None:
    if output == "-":
        sys.stdout.write(text)
        return
    target = Path(output)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8", "surrogatepass"))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = Spec.load(args.spec)
        if args.command == "paths":
            for pv in path_values(spec):
                print(f"{pv.match.path}\t{pv.match.line}\t{_one_line(pv.value)}")
            return 0
        resolved, rewrites = substitute(spec, parse_mapping(args.map), _overrides(args.set))
        if args.check:
            check(resolved, args.backend, rewrites, args.container_prefix or CONTAINER_PREFIXES)
        _write_atomically(resolved.dumps(), args.output)
        return 0
    except (SpecSyntaxError, SpecPathError, SpecCheckError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
