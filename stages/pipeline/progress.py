"""Progress bars for a stage's long loops, which are also where such a loop notices a signal whose
exception a native library swallowed."""
from __future__ import annotations

from tqdm import tqdm

from .outputs import raise_if_interrupted


class _Progress(tqdm):
    def update(self, n=1):
        raise_if_interrupted()
        return super().update(n)


def progress(total: int, what: str, unit: str = "batch") -> tqdm:
    return _Progress(total=total, desc=what, unit=unit, leave=False, mininterval=0.5)
