"""The open backend: TAO's three deployment steps done for real with open libraries on the CPU,
one module per step so that each DVC stage depends on exactly the code it runs."""
from __future__ import annotations

from tqdm import tqdm


def progress(total: int, what: str) -> tqdm:
    return tqdm(total=total, desc=what, unit="batch", leave=False, mininterval=0.5)
