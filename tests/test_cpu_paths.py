"""`make test-cpu-paths` runs the suite on other CPUs' code paths (tests/cpu_paths.py): each path's
settings must really make OpenBLAS, numpy and numba pick that CPU's kernels, or the run proves nothing."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers.commands import run
from cpu_paths import PATHS

# what OpenBLAS reports, the numpy dispatch targets that must be off, and what numba's code may hold
EXPECTED = {
    "haswell": {"openblas": "Haswell", "numpy_off": ["X86_V4", "AVX512_ICL", "AVX512_SPR"], "fma": True},
    "sandybridge": {"openblas": "Sandybridge", "numpy_off": ["X86_V3", "X86_V4"], "fma": False},
}
NEEDS = {"haswell": {"avx2", "fma"}, "sandybridge": {"avx"}}

PROBE = """
import json, numba, numpy as np, threadpoolctl
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

@numba.njit(fastmath=True)
def axpy(a, x, y):
    for i in range(x.size):
        y[i] = y[i] + a * x[i]

axpy(2.0, np.ones(64), np.ones(64))
code = axpy.inspect_asm(axpy.signatures[0])
[blas] = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas" and "numpy" in i["filepath"]]
print(json.dumps({"openblas": blas["architecture"],
                  "numpy_on": [t for t in __cpu_dispatch__ if __cpu_features__[t]],
                  "zmm": "zmm" in code, "fma": "vfmadd" in code}))
"""


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_every_path_has_its_expectations():
    assert set(EXPECTED) == set(PATHS) == set(NEEDS)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_a_cpu_path_makes_the_libraries_pick_that_cpus_kernels(name):
    missing = NEEDS[name] - cpu_flags()
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(sorted(missing))}: the {name} path cannot run here")
    found = json.loads(run([sys.executable, "-c", PROBE], Path(__file__).parent, env=PATHS[name]).stdout)
    expected = EXPECTED[name]
    assert found["openblas"] == expected["openblas"]
    assert not set(expected["numpy_off"]) & set(found["numpy_on"])
    assert not found["zmm"] and found["fma"] == expected["fma"]
