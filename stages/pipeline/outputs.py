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
from pathlib import Path
from typing import Iterable, Iterator


class Interrupted(KeyboardInterrupt):
    """The stage received SIGTERM."""


_received: list[int] = []  # signals seen; an exception raised in a __del__ can be swallowed, this cannot


# Where a signal's exception must not land: Python code that holds a lock across bytecodes. Raised between a
# lock's acquire and the `with` that releases it (threading.Condition.__enter__, importlib's module locks),
# the exception leaves the lock held, and whoever waits on it waits for ever: a worker of a ThreadPoolExecutor
# whose submit() was interrupted, or that imports a module the main thread was importing, then the pool's
# shutdown, joining that worker; the stage never exits (CPython's bpo-29988; both seen here with Python 3.11,
# the export stage calibrating). numba's compiler lock and tqdm's write lock are such locks too. Parts of the
# paths that frames name.
_LOCKING_CODE = ("<frozen importlib.", *(os.sep + os.path.join(*parts) for parts in (
    ("threading.py",), ("queue.py",), ("concurrent", "futures", ""), ("logging", ""), ("importlib", ""),
    ("numba", ""), ("tqdm", ""))))
DEFER_S = 0.005  # how soon a signal swallowed where it landed is raised again


def _on_signal(signum, frame):
    _received.append(signum)
    _raise_where_safe(frame)


def _raise_where_safe(frame) -> None:
    """Raise the signal's exception here, in `frame` (the main thread's, where the signal landed), unless
    that is inside code that holds locks across bytecodes: then in the frame that called that code, on its
    next line once it is back there (a trace function on that frame alone)."""
    outermost, walker = None, frame
    while walker is not None:
        if any(part in walker.f_code.co_filename for part in _LOCKING_CODE):
            outermost = walker
        walker = walker.f_back
    if outermost is None:
        cancel_deferred()
        raise_if_interrupted()
    elif outermost.f_back is not None:  # else the interpreter itself called it, at exit: nothing to unwind
        _raise_back_in(outermost.f_back)


def _raise_back_in(target) -> None:
    def on_event(frame, event, arg):  # noqa: ARG001 - trace function signature
        if event == "return":  # it returns without another line: its caller raises instead
            if frame.f_back is not None:
                _raise_back_in(frame.f_back)
            return None
        cancel_deferred()
        raise_if_interrupted()
        return None

    target.f_trace, target.f_trace_lines = on_event, True
    sys.settrace(_untraced)  # the frames this one calls meanwhile are not traced


def _untraced(frame, event, arg):  # noqa: ARG001 - trace function signature
    return None


def _on_deferred(signum, frame):  # noqa: ARG001 - signal handler signature
    _raise_where_safe(frame)


def cancel_deferred() -> None:
    """A signal waiting to be raised (out of a lock's way, or again after it was swallowed) is not raised after
    all: it is being raised now, or the stage is already unwinding."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    if sys.gettrace() is _untraced:  # ours alone: a debugger's or coverage's stays
        sys.settrace(None)


def _on_unraisable(unraisable) -> None:
    """A signal's KeyboardInterrupt that landed in a weakref callback or a __del__, where Python swallows
    it and prints `Exception ignored in ...`: say nothing, and raise it again a moment later (SIGALRM), when
    the main thread is most likely back in ordinary code, so the stage still unwinds at once."""
    if _received and unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        signal.setitimer(signal.ITIMER_REAL, DEFER_S)
        return
    sys.__unraisablehook__(unraisable)


def unwind_on_signals(held=()) -> None:
    """SIGINT and SIGTERM unwind the stage (finally blocks run, temp dirs go); `held`, signals that
    arrived before, are raised by the next raise_if_interrupted()."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_deferred)
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
