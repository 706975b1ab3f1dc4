"""The open backend: TAO's three deployment steps done for real with open libraries on the CPU, one
module per step (named after its stage, so that each stage depends on exactly the code it runs), and
what only these steps use: INT8 calibration without TensorRT (int8_calibration) and the engines it
builds and verifies (engines: onnxruntime, or TensorRT where present)."""
from __future__ import annotations

from tqdm import tqdm

from ..pipeline.outputs import raise_if_interrupted


class _Progress(tqdm):
    """A progress bar that is also where a long loop notices a signal whose exception was swallowed."""

    def update(self, n=1):
        raise_if_interrupted()
        return super().update(n)


def progress(total: int, what: str) -> tqdm:
    return _Progress(total=total, desc=what, unit="batch", leave=False, mininterval=0.5)
