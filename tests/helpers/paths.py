"""Where the checkout and NVIDIA's tutorial specs (../shared/specs) are."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_SPECS = ROOT.parent / "shared" / "specs"


def shared_spec_files() -> list[Path]:
    return sorted(SHARED_SPECS.glob("*.txt")) if SHARED_SPECS.is_dir() else []
