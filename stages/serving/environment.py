"""The Python models' environment, packed into one tarball that a Triton repository carries (Triton's
Python backend extracts the file EXECUTION_ENV_PATH names, then runs its stub with `<env>/bin/activate`
sourced and `<env>/lib` first on LD_LIBRARY_PATH).

conda-pack packs conda environments and venv-pack leaves the interpreter out (the target must have the
same Python at the same path), so this packs what neither does for a venv: a relocatable CPython tree.
  bin/python3, bin/python3.X   the interpreter (the stub finds its prefix through it: PATH, then the
                               landmark lib/python3.X/os.py)
  bin/activate                 what the backend sources: the env's bin/ first on PATH
  lib/libpython3.X.so.1.0      what the stub links against, found through LD_LIBRARY_PATH
  lib/python3.X/               the standard library (no tests, IDLE, Tk, ensurepip, 2to3)
  lib/python3.X/site-packages  the venv's packages (.venv/triton-env: numpy<2 for the bundled stub), but
                               not the project's editable install: the models' code is in the repository
Bytes are reproducible for the same inputs: members sorted, times, owners and gzip's header zeroed,
no __pycache__ (its files record when they were compiled).

    python -m stages.serving.environment --venv .venv/triton-env --out .venv/triton-env.tar.gz

is what `make setup` runs."""
from __future__ import annotations

import argparse
import gzip
import io
import sys
import sysconfig
import tarfile
from pathlib import Path

STDLIB_LEFT_OUT = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                   "__pycache__"}
ACTIVATE = """# sourced by Triton's Python backend before it starts the stub: this environment's bin/ first on PATH
_env="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export VIRTUAL_ENV="$_env"
export PATH="$_env/bin:$PATH"
unset PYTHONHOME
"""


def _version() -> str:
    return f"python{sys.version_info[0]}.{sys.version_info[1]}"


def members(venv: Path) -> list[tuple[str, Path | bytes]]:
    """(name in the archive, the file or its bytes), sorted by name."""
    base = Path(sys.base_prefix)
    version = _version()
    libpython = Path(sysconfig.get_config_var("LIBDIR") or base / "lib") / sysconfig.get_config_var("INSTSONAME")
    if not libpython.is_file():
        raise FileNotFoundError(f"{libpython}: Triton's Python stub links against libpython, and this Python "
                                "has none (build it with --enable-shared)")
    interpreter = base / "bin" / version
    if not interpreter.is_file():
        interpreter = Path(sys.executable).resolve()
    found: dict[str, Path | bytes] = {
        f"bin/{version}": interpreter,
        f"lib/{libpython.name}": libpython,
        "bin/activate": ACTIVATE.encode(),
    }
    stdlib = base / "lib" / version
    for path in _files(stdlib, skip_top=STDLIB_LEFT_OUT):
        found[f"lib/{version}/{path.relative_to(stdlib)}"] = path
    site_packages = venv / "lib" / version / "site-packages"
    if not site_packages.is_dir():
        raise FileNotFoundError(f"{site_packages} is missing: pack a venv of this Python ({version})")
    for path in _files(site_packages, skip_top=set()):
        name = path.relative_to(site_packages).parts[0]
        if name.startswith(("__editable__", "detectnet_deploy")):  # the project: its code is in the repository
            continue
        found[f"lib/{version}/site-packages/{path.relative_to(site_packages)}"] = path
    return sorted(found.items())


def _files(root: Path, skip_top: set[str]):
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if parts[0] in skip_top or "__pycache__" in parts or path.suffix == ".pyc":
            continue
        if path.is_file() and not path.is_symlink():
            yield path


def pack(venv: Path, out: Path, level: int = 6) -> int:
    """Write the packed environment of `venv` to `out` (atomically); returns its size in bytes."""
    tmp = out.with_name(f".{out.name}.partial")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level,
                                               mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w",
                                                                                format=tarfile.PAX_FORMAT) as tar:
        for name, source in members(venv):
            data = source if isinstance(source, bytes) else None
            info = tarfile.TarInfo(name)
            info.size = len(data) if data is not None else source.stat().st_size
            executable = name.startswith("bin/") or (data is None and source.stat().st_mode & 0o111)
            info.mode = 0o755 if executable else 0o644
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if data is not None:
                tar.addfile(info, io.BytesIO(data))
            else:
                with open(source, "rb") as handle:
                    tar.addfile(info, handle)
        python3 = tarfile.TarInfo("bin/python3")  # what PATH lookups for "python3" find
        python3.type, python3.linkname, python3.mode = tarfile.SYMTYPE, _version(), 0o777
        tar.addfile(python3)
    tmp.replace(out)
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.serving.environment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, required=True, help="the venv whose packages to pack")
    parser.add_argument("--out", type=Path, required=True, help="the tarball to write (.tar.gz)")
    args = parser.parse_args(argv)
    try:
        size = pack(args.venv, args.out)
    except OSError as exc:
        print(f"error: pack {args.venv}: {exc}", file=sys.stderr)
        return 1
    print(f"packed {args.venv} into {args.out} ({size / 2**20:.0f} MiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
