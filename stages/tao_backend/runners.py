"""How each TAO backend runs TAO's commands: on PATH, through the TAO launcher, or in docker, each started
by pipeline/commands.py (the one place that starts external commands). Output streams live to the console and into a log file, with the key masked; a failure
raises with TAO's own last lines; a missing executable names the alternatives."""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from ..pipeline import commands
from ..pipeline.layout import PROJECT, project_path
from ..pipeline.choices import BACKENDS
from ..pipeline.errors import StageError
from ..pipeline.tao_images import image_key
from ..spec import Spec, path_values
from ..spec.textformat import literal_for
from ..pipeline.commands import Secret

log = logging.getLogger("stages.tao")

KEY_ARGUMENT = "@TAO_KEY@"  # tao_docker: replaced inside the container by the value of the key variable


class RunnerError(StageError):
    """A TAO command that could not start or failed. Names the command and shows TAO's error."""


class MissingKeyError(RunnerError):
    """The TAO key is needed and missing."""


def load_key(backend: DictConfig) -> Secret:
    """The TAO key from the environment variable `backend.key_env` or the file `backend.key_file`."""
    if backend.get("key_file"):
        path = project_path(backend.key_file)
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise MissingKeyError(f"backend.key_file {path} cannot be read: {exc.strerror}") from None
        if not value:
            raise MissingKeyError(f"backend.key_file {path} is empty")
        return Secret(value)
    name = backend.key_env
    value = os.environ.get(name, "")
    if not value:
        raise MissingKeyError(f"the TAO key is missing: export it in the environment variable {name} "
                        "(backend.key_env) or name a file that holds it in backend.key_file")
    return Secret(value)


def not_on_path(executable: str, backend: str) -> "RunnerError":
    others = ", ".join(f"backend={b}" for b in BACKENDS if b != backend)
    return RunnerError(f"backend={backend} needs the executable {executable!r}, which is not on PATH; "
                       f"install it (or run inside the TAO container), or choose another backend: {others}")


def run_command(argv: Sequence, log_path: Path, env: dict[str, str] | None,
                secrets: Sequence[Secret], backend: str) -> None:
    """Run argv through pipeline.commands (Secret elements passed for real, printed as ***). Raises
    RunnerError with TAO's last lines on failure, and names the other backends when the tool is missing."""
    commands.run_command(argv, log_path, env, secrets, not_found=lambda executable: not_on_path(executable, backend),
                         error=RunnerError)


# nvidia_tao_cli runs `docker exec` with subprocess.check_call and drops its CalledProcessError, so
# `tao ...` exits 0 when the TAO command in the container failed.
_LAUNCHER_HINT = " (the TAO launcher exits 0 even when the TAO command fails: see TAO's output above, also in tao.log)"


def check_written(runner: "Runner", path: Path, what: str, read: Callable[[Path], object] | None = None) -> object:
    """What TAO wrote must be there and readable before the stage trusts it: a TAO tool that dies
    part-way can leave a truncated file, and the launcher's exit status says nothing. Returns what
    `read` read, for a caller that needs the contents."""
    hint = _LAUNCHER_HINT if runner.name == "tao_launcher" else ""
    if not path.is_file() or path.stat().st_size == 0:
        raise RunnerError(f"{what} wrote no {path.name}{hint}")
    if read is None:
        return None
    try:
        return read(path)
    except (OSError, ValueError) as exc:  # h5py's open errors are OSErrors; our readers raise ValueErrors
        raise RunnerError(f"{what} wrote a {path.name} that cannot be read: {exc}{hint}") from None


class Runner:
    """`backend=tao`: the commands on PATH, on this machine (e.g. inside the TAO container)."""

    name = "tao"

    def __init__(self, backend: DictConfig):
        self.backend = backend

    def executable(self, tool: str) -> str:
        """What must be on PATH to run TAO's `tool` this way."""
        return tool

    def path(self, host_path: str | Path) -> str:
        return str(host_path)

    def spec(self, spec_path: Path, folder: Path) -> str:
        """The spec as the command must see it (paths translated where the command runs)."""
        return self.path(spec_path)

    def run(self, argv: list, log_path: Path, secrets: Sequence[Secret] = ()) -> None:
        run_command(argv, log_path, None, secrets, self.name)


class _Mounted(Runner):
    """A runner whose commands see the host through mounts: paths are translated."""

    @functools.cache  # noqa: B019 - one runner per step; the config does not change under it
    def mounts(self) -> list[tuple[str, str]]:
        """(host, container) pairs from backend.mounts, checked and resolved once."""
        mounts = []
        for index, m in enumerate(self.backend.mounts or []):
            if not m.get("source") or not m.get("destination"):
                raise RunnerError(f"config key backend.mounts[{index}] needs a source and a destination")
            source = project_path(m.source).resolve()
            if not source.exists():  # docker would create it, empty and owned by root; the launcher refuses it
                raise RunnerError(f"config key backend.mounts[{index}].source: {source} does not exist")
            mounts.append((str(source), str(m.destination).rstrip("/") or "/"))
        if not mounts:
            raise RunnerError("config key backend.mounts is empty: nothing of the host would be visible to TAO")
        return mounts

    def path(self, host_path: str | Path) -> str:
        host = str(project_path(host_path).resolve())
        for source, destination in sorted(self.mounts(), key=lambda m: len(m[0]), reverse=True):
            if host == source or host.startswith(source.rstrip("/") + "/"):
                return destination + host[len(source):]
        listed = ", ".join(f"{s} -> {d}" for s, d in self.mounts())
        raise RunnerError(f"{host} is not under any mount of backend={self.name} ({listed}): "
                          "add a mount for it in backend.mounts")

    def spec(self, spec_path: Path, folder: Path) -> str:
        """Write the spec with container paths next to the stage's output and return its container path."""
        spec = Spec.load(spec_path)
        edits = {pv.match.value: literal_for(pv.match.value, self.path(pv.value)) for pv in path_values(spec)}
        target = folder / f"{spec_path.stem}.container{spec_path.suffix}"
        spec.replaced(edits).write(target)
        return self.path(target)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


# What the TAO launcher (nvidia-tao, nvidia_tao_cli) does with a command, read from its source:
# `tao <task group> <task> ARGS` joins ARGS with spaces and runs the result on the host as
# `bash -c 'docker exec -it <container> <task> ARGS'` (shell=True); it reads the mounts file named by
# LAUNCHER_MOUNTS, accepts only these DockerOptions, runs as root unless DockerOptions has a user,
# and allocates a TTY (which needs one on stdin) unless DockerOptions says `tty: false`.
LAUNCHER_DOCKER_OPTIONS = ("user", "ports", "shm_size", "ulimits", "privileged", "network", "tty")
LAUNCHER_TASKS = {"tao-converter": "converter"}  # our executable name -> the launcher's task name
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_./:=,+@%-]+")


def _launcher_word(arg: str) -> str:
    """arg as one word of the shell command line the launcher builds: as is when it needs no
    quoting, else double-quoted (the launcher wraps the whole line in single quotes)."""
    if _SHELL_SAFE.fullmatch(arg):
        return arg
    if "'" in arg or "\n" in arg:
        raise RunnerError(f"backend=tao_launcher cannot pass {arg!r}: the TAO launcher runs its command through a "
                          "shell inside single quotes, where a single quote or a newline cannot be written; rename the "
                          "path or use backend=tao_docker")
    return '"' + re.sub(r'([\\"$`])', r"\\\1", arg) + '"'


class LauncherRunner(_Mounted):
    """`backend=tao_launcher`: `tao model detectnet_v2 ...` with a generated mounts file."""

    name = "tao_launcher"

    def executable(self, tool: str) -> str:
        return self.backend.launcher

    def docker_options(self) -> dict:
        options = _plain(self.backend.get("docker_options"))
        for key in options:
            if key not in LAUNCHER_DOCKER_OPTIONS:
                raise RunnerError(f"config key backend.docker_options.{key} is not an option the TAO launcher "
                                  f"accepts: {', '.join(LAUNCHER_DOCKER_OPTIONS)}")
        if self.backend.map_user:
            options.setdefault("user", f"{os.getuid()}:{os.getgid()}")
        return options

    def mounts_json(self) -> dict:
        envs = _plain(self.backend.get("envs"))
        return {"Mounts": [{"source": s, "destination": d} for s, d in self.mounts()],
                "Envs": [{"variable": k, "value": str(v)} for k, v in envs.items()],
                "DockerOptions": self.docker_options()}

    def command(self, argv: list) -> tuple[list, dict[str, str]]:
        """The launcher's argv and the environment it needs. The key travels as an environment
        variable that the launcher's own shell expands, so it is not on the launcher's command line."""
        b = self.backend
        tool, *args = argv
        deploy = is_deploy_task(argv)
        group = b.get("deploy_task_group" if deploy else "model_task_group")
        command = [b.launcher, *([group] if group else []), LAUNCHER_TASKS.get(tool, tool)]
        env: dict[str, str] = {}
        for arg in args:
            if isinstance(arg, Secret):
                key_var = b.key_env
                env[key_var] = arg.value
                command.append(f'"${key_var}"')
            else:
                command.append(_launcher_word(str(arg)))
        return command, env

    def run(self, argv: list, log_path: Path, secrets: Sequence[Secret] = ()) -> None:
        command, env = self.command(argv)
        keys = [a for a in argv if isinstance(a, Secret)]
        with tempfile.TemporaryDirectory(prefix="tao-mounts-") as tmp:
            mounts = Path(tmp) / "tao_mounts.json"
            mounts.write_text(json.dumps(self.mounts_json(), indent=2))
            run_command(command, log_path, {**env, "LAUNCHER_MOUNTS": str(mounts)}, [*keys, *secrets], self.name)


# Inside the container: replace the placeholder argument by the key's value, then exec argv.
_EXPAND_KEY = ('n=$#; for a do if [ "$a" = "' + KEY_ARGUMENT + '" ]; then a="${' + '%s' + '}"; fi; '
               'set -- "$@" "$a"; done; shift "$n"; exec "$@"')


class DockerRunner(_Mounted):
    """`backend=tao_docker`: `docker run` of TAO's image for the step (image_for) with the same mounts.
    The key travels as an environment variable, named on the command line and expanded inside the
    container, so its value is never on the host's process list."""

    name = "tao_docker"

    def executable(self, tool: str) -> str:
        return "docker"

    def command(self, argv: list) -> tuple[list, dict[str, str]]:
        b = self.backend
        key_var = b.key_env
        docker = [b.get("docker") or "docker", "run", "--rm"]
        if b.get("gpus"):
            docker += ["--gpus", str(b.gpus)]
        if b.map_user:
            docker += ["--user", f"{os.getuid()}:{os.getgid()}"]
        for source, destination in self.mounts():
            docker += ["-v", f"{source}:{destination}"]
        env: dict[str, str] = {}
        inner = []
        for arg in argv:
            if isinstance(arg, Secret):
                env[key_var] = arg.value
                inner.append(KEY_ARGUMENT)
            else:
                inner.append(arg)
        if env:
            docker += ["-e", key_var]
        docker += ["-w", self.path(PROJECT)]
        docker += [str(o) for o in (b.get("docker_args") or [])]
        docker += [image_for(b, argv), "sh", "-c", _EXPAND_KEY % key_var, "sh", *inner]
        return docker, env

    def run(self, argv: list, log_path: Path, secrets: Sequence[Secret] = ()) -> None:
        docker, env = self.command(argv)
        keys = [a for a in argv if isinstance(a, Secret)]
        run_command(docker, log_path, env, [*keys, *secrets], self.name)


def is_deploy_task(argv: Sequence) -> bool:
    """TAO Deploy's tasks (TAO 5+: the deploy image, `tao deploy ...`); the others are TAO's TF1 ones."""
    tool, *args = [str(a) for a in argv]
    return tool == "detectnet_v2" and bool(args) and image_key(args[0]) == "deploy"


def image_for(backend: DictConfig, argv: Sequence) -> str:
    """backend=tao_docker: the image that runs `argv`, backend.images.deploy or backend.images.tf1."""
    which = "deploy" if is_deploy_task(argv) else "tf1"
    image = (backend.get("images") or {}).get(which)
    if not image:
        raise RunnerError(f"config key backend.images.{which} is not set: the image that runs "
                          f"`{' '.join(str(a) for a in argv[:2])}` (TAO 5: ...-tf1.15.5 and ...-deploy)")
    return str(image)


def runner_for(backend: DictConfig, tool: str) -> Runner:
    """The runner of this backend, once what runs `tool` (TAO's command itself, the launcher or
    docker) is known to be on PATH: a missing tool is said before anything else, the key included."""
    kinds = {"tao": Runner, "tao_launcher": LauncherRunner, "tao_docker": DockerRunner}
    runner = kinds[backend.name](backend)
    executable = runner.executable(tool)
    if shutil.which(executable) is None:
        raise not_on_path(executable, runner.name)
    return runner
