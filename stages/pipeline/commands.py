"""The one place that starts external commands (TAO's tools, docker, the TAO launcher, trtexec): each
output line streams live to the console and into the stage's log file with secrets masked, and a
failure raises with the command's own last lines."""
from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .layout import PROJECT
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


def _mask(text: str, secrets: Sequence[Secret]) -> str:
    for secret in secrets:
        if secret.value:
            text = text.replace(secret.value, "***")
    return text


def _not_found(executable: str) -> CommandError:
    return CommandError(f"{executable!r} is not on PATH")


def run_command(argv: Sequence, log_path: Path, env: dict[str, str] | None = None, secrets: Sequence[Secret] = (),
                not_found: Callable[[str], Exception] = _not_found,
                error: type[StageError] = CommandError) -> list[str]:
    """Run argv (a list; Secret elements are passed for real and printed as ***), streaming its output to
    stderr and log_path; returns its last lines. Raises `error` with the last lines on failure, and
    `not_found(executable)` when there is no such executable."""
    secrets = [a for a in argv if isinstance(a, Secret)] + list(secrets)
    shown = " ".join(masked(argv))
    log.info("$ %s", shown)
    tail: collections.deque[str] = collections.deque(maxlen=25)
    try:
        process = subprocess.Popen(render(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, cwd=PROJECT, text=True,
                                   errors="replace", bufsize=1)
    except FileNotFoundError:
        raise not_found(render(argv)[0]) from None
    try:
        with open(log_path, "a", encoding="utf-8") as log_file:
            log_file.write(f"$ {shown}\n")
            for line in process.stdout:
                line = _mask(line, secrets)
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
