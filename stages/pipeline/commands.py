"""The one place that starts external commands (TAO's tools, docker, the TAO launcher, trtexec, the
platform's queries, tritonserver): each output line streams live to the console and into the stage's
log file with secrets masked, and a failure raises with the command's own last lines.

The TAO key reaches only the commands that take it: `hold_key` (called once the config is read) names
the variable that holds it, which no command's environment gets unless its step passes the key on
purpose, and the key's value, from that variable or `backend.key_file`, is masked in every command's
output, every log record and every error, whatever the step: a tool that prints its environment or its
arguments (a verbose wrapper, a debug build) cannot put it in a log, an artifact or the DVC cache."""
from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .layout import PROJECT, project_path
from .errors import StageError

log = logging.getLogger("stages.commands")


class CommandError(StageError):
    """A command that could not start or failed. Names the command and shows its last lines."""


@dataclass(frozen=True)
class Secret:
    """A secret argument (the TAO key): its real value goes into argv, its repr and str are masked
    everywhere else."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def render(argv: Sequence) -> list[str]:
    """argv with secrets in place, for the process."""
    return [a.value if isinstance(a, Secret) else a for a in argv]


def masked(argv: Sequence) -> list[str]:
    """argv with secrets masked, for printing and logs."""
    return ["***" if isinstance(a, Secret) else a for a in argv]


_WITHHELD: set[str] = set()  # variables no command's environment gets: the one holding the TAO key
_HELD: list[Secret] = []  # the key's values, masked in every output and error


def hold_key(backend: Mapping | None) -> None:
    """Keep the TAO key of this backend's config (`key_env`, `key_file`; plain data or a DictConfig) out of
    every command's environment and out of every output. A key that cannot be read is no error here: the
    steps that need it say so (tao_backend.runners.load_key)."""
    if not backend:
        return
    variable, key_file = backend.get("key_env"), backend.get("key_file")
    if variable:
        _WITHHELD.add(str(variable))
        if os.environ.get(str(variable)):
            _hold(os.environ[str(variable)].strip())
    if key_file:
        try:
            _hold(project_path(str(key_file)).read_text().strip())
        except (OSError, UnicodeDecodeError):
            pass


def _hold(value: str) -> None:
    if value and Secret(value) not in _HELD:
        _HELD.append(Secret(value))
        _HELD.sort(key=lambda s: len(s.value), reverse=True)  # the longest first: no key half-masked


def mask(text: str, secrets: Sequence[Secret] = ()) -> str:
    """text with the held key, and these secrets, replaced by ***."""
    for secret in [*secrets, *_HELD]:
        if secret.value:
            text = text.replace(secret.value, "***")
    return text


class MaskingFilter(logging.Filter):
    """A log handler's filter that masks the held key in every record it writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _HELD:
            record.msg, record.args = mask(record.getMessage()), ()
        return True


def environment(given: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a command: this process's, less the variable holding the TAO key, plus `given`
    (where a step that takes the key passes it on purpose)."""
    return {**{k: v for k, v in os.environ.items() if k not in _WITHHELD}, **(given or {})}


def capture(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a short query whose output is parsed, not streamed (the platform's): its output captured and
    masked, in the same environment as every command. Raises OSError or subprocess.TimeoutExpired."""
    result = subprocess.run(list(argv), capture_output=True, text=True, errors="replace", timeout=timeout,
                            env=environment())
    result.stdout, result.stderr = mask(result.stdout), mask(result.stderr)
    return result


def _not_found(executable: str) -> CommandError:
    return CommandError(f"{executable!r} is not on PATH")


def run_command(argv: Sequence, log_path: Path, env: dict[str, str] | None = None, secrets: Sequence[Secret] = (),
                not_found: Callable[[str], Exception] = _not_found,
                error: type[StageError] = CommandError) -> list[str]:
    """Run argv (a list; Secret elements are passed for real and printed as ***), streaming its output to
    stderr and log_path; returns its last lines. Raises `error` with the last lines on failure, and
    `not_found(executable)` when there is no such executable."""
    secrets = [a for a in argv if isinstance(a, Secret)] + list(secrets)
    shown = mask(" ".join(masked(argv)))
    log.info("$ %s", shown)
    tail: collections.deque[str] = collections.deque(maxlen=25)
    try:
        process = subprocess.Popen(render(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=environment(env), cwd=PROJECT, text=True,
                                   errors="replace", bufsize=1)
    except FileNotFoundError:
        raise not_found(render(argv)[0]) from None
    try:
        with open(log_path, "a", encoding="utf-8") as log_file:
            log_file.write(f"$ {shown}\n")
            for line in process.stdout:
                line = mask(line, secrets)
                sys.stderr.write(line)
                log_file.write(line)
                tail.append(line.rstrip("\n"))
            code = process.wait()
    except BaseException:  # Ctrl-C or SIGTERM: stop the command too, then unwind
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    if code != 0:
        last = "\n".join(f"  | {line}" for line in tail)
        raise error(f"{render(argv)[0]} failed (exit {code}): {shown}\nlast lines of its output:\n{last}")
    return list(tail)
