"""Progress for a stage's long loops, which are also where such a loop notices a signal whose exception
a native library swallowed.

On a terminal, a tqdm bar. Elsewhere (`dvc queue logs`, CI logs, a file) a bar is `\\r`-redrawn text
that reads as blank or garbled lines, so a plain line is written instead every LINE_EVERY seconds and
once at the end."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from .outputs import raise_if_interrupted

LINE_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal


class _Bar(tqdm):
    def update(self, n=1):
        raise_if_interrupted()
        return super().update(n)


class _Lines:
    """The same `update` and context manager as the bar, as whole lines on stderr."""

    def __init__(self, total: int, what: str, unit: str, stream=None):
        self.total, self.what = total, what
        self.unit = unit + ("es" if unit.endswith(("s", "ch", "sh", "x")) else "s")  # plural
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = self.last = time.monotonic()

    def update(self, n=1):
        raise_if_interrupted()
        self.done += n
        now = time.monotonic()
        if now - self.last >= LINE_EVERY and self.done < self.total:
            self.last = now
            self._line(f"{self.done}/{self.total} {self.unit}")

    def _line(self, text: str) -> None:
        self.stream.write(f"{self.what}: {text}\n")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self._line(f"{self.done}/{self.total} {self.unit} in {time.monotonic() - self.started:.1f} s")
        return False


def progress(total: int, what: str, unit: str = "batch", stream=None):
    stream = stream or sys.stderr
    if stream.isatty():
        return _Bar(total=total, desc=what, unit=unit, leave=False, mininterval=0.5, file=stream)
    return _Lines(total, what, unit, stream)
