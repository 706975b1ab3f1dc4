"""Stage outputs appear whole or not at all: work happens in a temp directory beside the target,
which replaces the old output only after the step succeeded. SIGTERM unwinds like Ctrl-C, so an
interrupted stage removes its temp directory too."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator


class Interrupted(KeyboardInterrupt):
    """The stage received SIGTERM."""


_received: list[int] = []  # signals seen; an exception raised in a __del__ can be swallowed, this cannot


def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    _received.append(signum)
    raise_if_interrupted()


def _on_unraisable(unraisable) -> None:
    """A signal's KeyboardInterrupt that landed in a weakref callback or a __del__, where Python swallows
    it and prints `Exception ignored in ...`: say nothing, and deliver the signal again a moment later,
    when the main thread is most likely back in ordinary code, so the stage still unwinds at once."""
    if _received and unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        threading.Timer(0.01, os.kill, (os.getpid(), _received[-1])).start()
        return
    sys.__unraisablehook__(unraisable)


def unwind_on_signals(held=()) -> None:
    """SIGINT and SIGTERM unwind the stage (finally blocks run, temp dirs go); `held`, signals that
    arrived before, are raised by the next raise_if_interrupted()."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sys.unraisablehook = _on_unraisable
    _received.extend(held)


def signal_received() -> int | None:
    """The last SIGINT or SIGTERM the stage received, if any: an exception raised inside a library's
    import or native callback can turn the signal's KeyboardInterrupt into another error."""
    return _received[-1] if _received else None


def raise_if_interrupted() -> None:
    """Raise now if a signal arrived whose exception was swallowed where it landed."""
    if _received:
        signum = _received[-1]
        if signum == signal.SIGTERM:
            raise Interrupted(f"received signal {signal.Signals(signum).name}")
        raise KeyboardInterrupt


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(target: Path) -> None:
    """Remove temp directories of `target` left by processes that died without cleaning up
    (SIGKILL, a crash in native code): their names carry the owner's pid."""
    for stale in target.parent.glob(f".{target.name}.*.partial"):
        parts = stale.name.split(".")
        if len(parts) >= 4 and parts[2].isdigit() and not _alive(int(parts[2])):
            shutil.rmtree(stale, ignore_errors=True)


def remove_stale_under(folders: Iterable[Path]) -> list[Path]:
    """Remove every stale temp directory staged_dir left in these folders (a stage killed with SIGKILL, whose
    output DVC then restored from its run-cache without running it): the validate stage, which runs on every
    repro, sweeps them. A live process's are kept. Returns what was removed."""
    removed = []
    for folder in folders:
        for stale in folder.glob(".*.partial") if folder.is_dir() else ():
            match = re.fullmatch(r"\.(.+)\.(\d+)\.[^.]+\.partial", stale.name)
            if stale.is_dir() and match and not _alive(int(match.group(2))):
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale)
    return removed


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temp directory; on success it becomes `target` (replacing it), on any
    failure it is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output should not be
    try:
        yield tmp
        raise_if_interrupted()  # never commit the work of an interrupted stage
        if target.exists() or target.is_symlink():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write a file whole or not at all (temp file beside it, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
