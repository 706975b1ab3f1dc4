"""Set up `.venv` exactly as the lock says, and refresh the lock: what `make setup` and `make lock` run.

    python3 environment/manage.py install [--venv .venv]     # make setup
    python3 environment/manage.py lock [--upgrade PACKAGE]   # make lock [upgrade=PACKAGE]
    .venv/bin/python environment/manage.py check             # pyproject.toml and the lock agree?

The lock is one directory per Python it covers (`environment/cpython-3.11-linux-x86_64/`, ...), each with
five requirement files that pin every package to an exact version and its hashes:

    project.txt        .venv: the project's dependencies and its `test` extra (from pyproject.toml)
    tao-reference.txt  .venv/tao-reference: TAO's own Python code, the tests' oracle (tao-reference.in)
    triton.txt         .venv/triton: the tritonserver that nvidia-pytriton bundles (triton.in)
    triton-env.txt     .venv/triton-env: what Triton's Python models import, at project.txt's versions but
                       numpy<2 (triton-env.in)
    perf-analyzer.txt  .venv/perf-analyzer: Triton's load generator, from tritonclient's wheel (perf-analyzer.in)

Why uv: it resolves for a Python and platform other than the running one (so one machine locks 3.11 and
3.12), writes hashes for every wheel of each pin, installs a requirement file exactly (`uv pip sync`
removes what the lock does not name), checks every hash, and installs from its cache in seconds. It is
itself installed from its wheel (`environment/uv.txt`, hash-checked by pip), so nothing is installed on
the system. pip-tools does the first two for the running Python only, and pip installs far slower.

Runs under the system's Python before `.venv` exists: only the standard library, except `check`, which
runs under `.venv` (it needs `packaging`, which the lock installs).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "environment"
LOCKED_PYTHONS = ("3.11", "3.12")
# manylinux_2_35: glibc 2.35 or newer (Debian 12, Ubuntu 22.04, RHEL 10): the oldest nvidia-pytriton 0.7.0
# (the tritonserver) has wheels for.
UV_PLATFORM = "x86_64-manylinux_2_35"
PLATFORM_TAG = "linux-x86_64"
UV_LOCK = HERE / "uv.txt"
TEST_EXTRA = "test"
# The interpreter under the running one: a venv's Python may lack pip, and a venv's own venv is awkward.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


class SetupError(Exception):
    """A problem the user can fix, said in one message."""


@dataclass(frozen=True)
class LockSet:
    name: str  # the lock file's stem
    source: str  # what it is compiled from, relative to the project
    installs_into: str  # relative to the venv, "" for the venv itself
    no_deps: bool = False  # installed as listed, without what the packages depend on


LOCK_SETS = (
    LockSet("project", "pyproject.toml", ""),
    LockSet("tao-reference", "environment/tao-reference.in", "tao-reference", no_deps=True),
    LockSet("triton", "environment/triton.in", "triton", no_deps=True),
    LockSet("triton-env", "environment/triton-env.in", "triton-env"),
    LockSet("perf-analyzer", "environment/perf-analyzer.in", "perf-analyzer", no_deps=True),
)


def lock_dir(python: str, root: Path = ROOT) -> Path:
    return root / "environment" / f"cpython-{python}-{PLATFORM_TAG}"


def covered_pythons(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / "environment").glob(f"cpython-*-{PLATFORM_TAG}")):
        if path.is_dir():
            found.append(path.name.removeprefix("cpython-").removesuffix(f"-{PLATFORM_TAG}"))
    return found


def running_python() -> str:
    return "%d.%d" % sys.version_info[:2]


def running_platform() -> str:
    machine = platform.machine().lower().replace("amd64", "x86_64")
    return f"{sys.platform}-{machine}"


def locks_for_running_python(root: Path = ROOT) -> Path:
    """The lock directory for this Python and platform, or a SetupError that says which ones there are."""
    python, where = running_python(), running_platform()
    covered = covered_pythons(root)
    if not covered:
        raise SetupError(
            f"no lock in {root / 'environment'} (expected cpython-<version>-{PLATFORM_TAG}/ with "
            f"{', '.join(s.name + '.txt' for s in LOCK_SETS)}): run `make lock` (it needs PyPI) and commit it"
        )
    if where != PLATFORM_TAG or sys.implementation.name != "cpython" or python not in covered:
        raise SetupError(
            f"the lock covers CPython {', '.join(covered)} on {PLATFORM_TAG}; this is "
            f"{sys.implementation.name} {python} on {where} ({sys.executable}). Run make with one of those: "
            f"`make setup PYTHON=python{covered[-1]}`"
        )
    directory = lock_dir(python, root)
    missing = [s.name + ".txt" for s in LOCK_SETS if not (directory / f"{s.name}.txt").is_file()]
    if missing:
        raise SetupError(f"{directory} lacks {', '.join(missing)}: run `make lock` and commit the result")
    return directory


# ---------------------------------------------------------------- running uv


def run(argv: list[str], what: str) -> None:
    """Run one step, its output shown; a failure is a SetupError naming the step (uv names the package)."""
    print(f"setup: {what}", flush=True)
    result = subprocess.run(argv, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise SetupError(f"{what} failed (exit {result.returncode}): {last_error_line(result.stderr)}")


def last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:  # uv's own error line names the package: "error: Hash mismatch for `six==1.17.0`"
        if "mismatch" in line.lower() or line.startswith(("error:", "ERROR:", "×")):
            return line
    return lines[-1] if lines else "(no message)"


def bootstrap_uv(directory: Path) -> Path:
    """uv from its wheel, hash-checked by the system's pip, in `directory`; returns the uv executable."""
    uv = directory / "bin" / "uv"
    if uv.exists():
        return uv
    shutil.rmtree(directory, ignore_errors=True)
    run(
        [BASE_PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--root-user-action=ignore", "--no-deps", "--require-hashes", "--target", str(directory),
         "-r", str(UV_LOCK)],
        f"uv from {UV_LOCK.relative_to(ROOT)}",
    )
    return uv


def install_locked(uv: Path, lock: Path, *, python: Path, target: Path | None = None, sync: bool = False,
                   uv_args: tuple[str, ...] = ()) -> None:
    """Install a lock file's exact pins, every hash checked. sync: also remove what the lock does not name."""
    argv = [str(uv), "pip", "sync" if sync else "install", "--require-hashes", "--python", str(python),
            "--quiet", *uv_args]
    if not sync:
        argv.append("--no-deps")
    if target is not None:
        argv += ["--target", str(target)]
    argv += [str(lock)] if sync else ["-r", str(lock)]
    run(argv, f"install {lock.relative_to(ROOT) if lock.is_relative_to(ROOT) else lock}")


def install(venv: Path) -> None:
    """Build `venv` from the lock. On any failure nothing is left that looks ready: the venv is removed."""
    locks = locks_for_running_python()  # before anything is touched
    stamp = venv / ".installed"
    shutil.rmtree(venv, ignore_errors=True)
    try:
        uv = bootstrap_uv(venv / "uv")
        run([str(uv), "venv", "--quiet", "--allow-existing", "--python", BASE_PYTHON, str(venv)],
            f"create {venv}")
        python = venv / "bin" / "python"
        install_locked(uv, locks / "project.txt", python=python, sync=True)
        run([str(uv), "pip", "install", "--quiet", "--no-deps", "--python", str(python), "-e", str(ROOT)],
            "install the project (editable)")
        install_tao_reference(uv, venv, locks)
        install_triton(uv, venv, locks)
        install_perf_analyzer(uv, venv, locks)
        env_python = venv / "triton-env" / "bin" / "python"
        run([str(uv), "venv", "--quiet", "--python", BASE_PYTHON, str(venv / "triton-env")],
            f"create {venv / 'triton-env'}")
        install_locked(uv, locks / "triton-env.txt", python=env_python, sync=True)
        run([str(uv), "pip", "install", "--quiet", "--no-deps", "--python", str(env_python), "-e", str(ROOT)],
            "install the project in triton-env (editable)")
        run([str(python), "-m", "stages.serving.environment", "--venv", str(venv / "triton-env"),
             "--out", str(venv / "triton-env.tar.gz")], "pack triton-env for the Triton repository")
        run([str(python), str(HERE / "manage.py"), "check"], "check that pyproject.toml and the lock agree")
        stamp.write_text(f"{locks.name}\n")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise


def install_tao_reference(uv: Path, venv: Path, locks: Path) -> None:
    # TAO's own code for the compatibility tests: importable (a .pth file) but off PATH. Their commands
    # need TAO's container, and their dependencies are the container's, hence no dependencies.
    target = venv / "tao-reference"
    install_locked(uv, locks / "tao-reference.txt", python=venv / "bin" / "python", target=target)
    site_packages = next((venv / "lib").glob("python3.*/site-packages"))
    (site_packages / "tao-reference.pth").write_text(f"{target.resolve()}\n")


def install_triton(uv: Path, venv: Path, locks: Path) -> None:
    # The tritonserver that nvidia-pytriton bundles (Python backend only). Its Python code wants numpy<2,
    # so only its binary and libraries are used: no dependencies, off sys.path. The Python backend needs
    # the stub built for this Python beside it.
    target = venv / "triton"
    install_locked(uv, locks / "triton.txt", python=venv / "bin" / "python", target=target)
    server = target / "pytriton" / "tritonserver"
    (server / "bin" / "tritonserver").chmod(0o755)
    stub = server / "python_backend_stubs" / running_python() / "triton_python_backend_stub"
    installed_stub = server / "backends" / "python" / stub.name
    shutil.copy2(stub, installed_stub)
    installed_stub.chmod(0o755)


def install_perf_analyzer(uv: Path, venv: Path, locks: Path) -> None:
    # perf_analyzer from tritonclient's wheel (perf-analyzer.in says why that one), and lib/ with the two
    # libraries it loads that the wheel leaves out, under the names it asks for.
    target = venv / "perf-analyzer"
    install_locked(uv, locks / "perf-analyzer.txt", python=venv / "bin" / "python", target=target)
    (target / "bin" / "perf_analyzer").chmod(0o755)
    lib = target / "lib"
    lib.mkdir()
    b64 = sorted((venv / "triton" / "nvidia_pytriton.libs").glob("libb64*.so.0d"))
    if not b64:
        raise SetupError(f"{venv / 'triton' / 'nvidia_pytriton.libs'} holds no libb64*.so.0d for perf_analyzer")
    (lib / "libb64.so.0d").symlink_to(b64[0].resolve())
    (lib / "libcudart.so.12").symlink_to((target / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so.12").resolve())


# ---------------------------------------------------------------- making the lock


def lock(upgrade: list[str]) -> None:
    """Compile every lock set for every covered Python, in a scratch copy that replaces the lock only
    when all of it compiled. Existing pins are kept (uv prefers them) unless `upgrade` names them."""
    uv = str(bootstrap_uv(ROOT / ".venv" / "uv"))
    upgrade_args = [arg for name in upgrade for arg in ("--upgrade-package", name)]
    # A fixed scratch path: uv's `# via -c ...` notes name the constraints file, and the lock's bytes
    # must not depend on a random name.
    staged = HERE / ".locking"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    try:
        for python in LOCKED_PYTHONS:
            if lock_dir(python).is_dir():
                shutil.copytree(lock_dir(python), staged / lock_dir(python).name)
            (staged / lock_dir(python).name).mkdir(exist_ok=True)
        if UV_LOCK.is_file():
            shutil.copy2(UV_LOCK, staged / UV_LOCK.name)
        compile_one(uv, HERE / "uv.in", staged / UV_LOCK.name, LOCKED_PYTHONS[0], ["--no-deps"])
        # One Python's lock sets one after the other (triton-env follows project.txt), the Pythons at once:
        # compiling is mostly waiting for PyPI.
        with ThreadPoolExecutor(len(LOCKED_PYTHONS)) as pool:
            for done in [pool.submit(lock_python, uv, python, staged / lock_dir(python).name, upgrade_args)
                         for python in LOCKED_PYTHONS]:
                done.result()
        for python in LOCKED_PYTHONS:
            shutil.rmtree(lock_dir(python), ignore_errors=True)
            shutil.move(staged / lock_dir(python).name, lock_dir(python))
        shutil.move(staged / UV_LOCK.name, UV_LOCK)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    print(f"lock: {', '.join(str(lock_dir(p).relative_to(ROOT)) for p in LOCKED_PYTHONS)} and "
          f"{UV_LOCK.relative_to(ROOT)} are up to date; commit them")


def lock_python(uv: str, python: str, directory: Path, upgrade_args: list[str]) -> None:
    for lock_set in LOCK_SETS:
        args = list(upgrade_args)
        if lock_set.source == "pyproject.toml":
            args += ["--extra", TEST_EXTRA]
        if lock_set.no_deps:
            args.append("--no-deps")
        if lock_set.name == "triton-env":
            # .venv's versions, except numpy (<2 there) and what triton-env.in marks `not held`
            free = {"numpy", *not_held(ROOT / lock_set.source)}
            constraints = directory.parent / f"project-pins-{python}.txt"
            constraints.write_text("".join(f"{name}=={version}\n" for name, version
                                           in read_lock(directory / "project.txt").items() if name not in free))
            args += ["--constraint", str(constraints)]
        compile_one(uv, ROOT / lock_set.source, directory / f"{lock_set.name}.txt", python, args)


def not_held(source: Path) -> set[str]:
    """The packages a .in file marks `# not held`: free of project.txt's version in that environment."""
    names = set()
    for line in source.read_text().splitlines():
        requirement, _, comment = line.partition("#")
        if requirement.strip() and comment.strip().startswith("not held"):
            names.add(canonical(re.split(r"[<>=!~;\s\[]", requirement.strip(), maxsplit=1)[0]))
    return names


def compile_one(uv: str, source: Path, output: Path, python: str, args: list[str]) -> None:
    run([uv, "pip", "compile", "--quiet", "--generate-hashes", "--custom-compile-command", "make lock",
         "--python-version", python, "--python-platform", UV_PLATFORM, *args, str(source), "-o", str(output)],
        f"lock {source.relative_to(ROOT)} for CPython {python}")


# ---------------------------------------------------------------- checking the lock against its sources

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of a requirement file that uv compiled."""
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonical(match[1])] = match[2]
    return pins


def direct_pins(path: Path, source_name: str) -> set[str]:
    """The packages the lock pins because its source asks for them (uv's `# via` notes name the source)."""
    direct, current = set(), None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonical(match[1])
        elif current and line.strip().startswith("#") and source_name in line:
            direct.add(current)
    return direct


def source_requirements(root: Path, lock_set: LockSet) -> list[str]:
    source = root / lock_set.source
    if lock_set.source == "pyproject.toml":
        project = tomllib.loads(source.read_text())["project"]
        return list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get(TEST_EXTRA, []))
    lines = (line.split("#", 1)[0].strip() for line in source.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def disagreements(root: Path = ROOT) -> list[str]:
    """Every way the committed lock and its sources (pyproject.toml, environment/*.in) disagree."""
    from packaging.requirements import Requirement  # .venv has it; the system Python may not

    problems = []
    for python in covered_pythons(root):
        directory = lock_dir(python, root)
        for lock_set in LOCK_SETS:
            path = directory / f"{lock_set.name}.txt"
            where = path.relative_to(root)
            if not path.is_file():
                problems.append(f"{where} is missing: run `make lock`")
                continue
            pins = read_lock(path)
            asked = {}
            for text in source_requirements(root, lock_set):
                requirement = Requirement(text)
                if requirement.marker and not requirement.marker.evaluate({"python_version": python}):
                    continue
                asked[canonical(requirement.name)] = requirement
            for name, requirement in asked.items():
                if name not in pins:
                    problems.append(f"{lock_set.source} asks for {requirement}; {where} does not pin it: run `make lock`")
                elif not requirement_allows(requirement, pins[name]):
                    problems.append(f"{where} pins {name}=={pins[name]}, which {lock_set.source}'s "
                                    f"{requirement} does not allow: run `make lock upgrade={name}`")
            direct = direct_pins(path, Path(lock_set.source).name)
            for name in sorted(asked.keys() - direct):
                if name in pins and requirement_allows(asked[name], pins[name]):
                    problems.append(f"{lock_set.source} asks for {asked[name]}; {where} pins {name} only as another "
                                    f"package's dependency, so it was not locked from this {lock_set.source}: "
                                    f"run `make lock`")
            for name in sorted(direct - asked.keys()):
                problems.append(f"{where} pins {name}=={pins[name]} for {lock_set.source}, which no longer asks "
                                f"for it: run `make lock`")
    return problems


def installed_mismatches(root: Path = ROOT) -> list[str]:
    """How the running environment differs from its lock (project.txt for this Python): each locked
    package missing or at another version. Packages the lock does not name (an extra plugin) are allowed."""
    from importlib import metadata

    path = lock_dir(running_python(), root) / "project.txt"
    if not path.is_file():
        return [f"there is no lock for CPython {running_python()} ({path.relative_to(root)})"]
    installed = {canonical(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    return [f"{name}: the lock has {version}, {sys.prefix} has {installed.get(name, 'none')}"
            for name, version in read_lock(path).items() if installed.get(name) != version]


def requirement_allows(requirement, version: str) -> bool:
    return requirement.specifier.contains(version, prereleases=True)


def check() -> None:
    mismatches = installed_mismatches()
    if mismatches:
        raise SetupError(f"{sys.prefix} is not what the lock says:\n  " + "\n  ".join(mismatches))
    problems = disagreements()
    if problems:
        raise SetupError("the lock and its sources disagree:\n  " + "\n  ".join(problems))
    print(f"setup: the lock agrees with pyproject.toml and environment/*.in (CPython {', '.join(covered_pythons())})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="environment/manage.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    install_parser = commands.add_parser("install", help="build the venv exactly from the lock (make setup)")
    install_parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    lock_parser = commands.add_parser("lock", help="refresh the lock from pyproject.toml and *.in (make lock)")
    lock_parser.add_argument("--upgrade", action="append", default=[], metavar="PACKAGE",
                             help="let this package move to its newest allowed version (repeatable)")
    commands.add_parser("check", help="fail when pyproject.toml / *.in and the lock disagree, or when the running "
                                      "environment is not the lock's")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(args.venv.resolve())
        elif args.command == "lock":
            lock(args.upgrade)
        else:
            check()
    except SetupError as error:
        what = {"install": "setup", "lock": "lock", "check": "lock check"}[args.command]
        print(f"{what}: error: {error}", file=sys.stderr)
        if args.command == "install":
            print(f"{what}: nothing was left in {args.venv}; fix the above and run `make setup` again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
