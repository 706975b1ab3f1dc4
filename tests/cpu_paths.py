"""Run the test suite on other CPUs' code paths, on this machine, where the libraries let one choose
them: `make test-cpu-paths` (about 13 minutes a path on 2 cores).

The sample model is fitted, calibrated and evaluated with floating-point sums whose last bits depend on
the kernels each library picks for the CPU it runs on. Three of those libraries take a switch:
- OpenBLAS (numpy's and scipy's BLAS: the ridge regression, scikit-learn's DBSCAN) honours
  OPENBLAS_CORETYPE, the kernel family to use;
- numpy's own SIMD loops honour NPY_DISABLE_CPU_FEATURES, the dispatch targets to leave out;
- numba (the sparse DBSCAN neighbourhoods) compiles for NUMBA_CPU_NAME instead of the host, with
  NUMBA_CPU_FEATURES (without it numba adds the host's features, AVX-512 included, to the name's).
onnxruntime (the backbone's features, every engine, int8 included) has none: its MLAS kernels follow
cpuid alone, and 1.32's only ISA switch, ORT_QMOE_CPU_DISABLE_AVX512, concerns a MoE operator this
project never runs. Its AVX2 and SSE paths can be reached by running Python under qemu-user with another
CPU model (`qemu-x86_64 -cpu EPYC python ...`), about 45x slower; AVX-512 paths of another vendor cannot.

A path needs only a CPU at least as capable as it: every setting here names an older x86-64 family
than any machine CI runs on is likely to be (AVX2 or AVX, no AVX-512)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NO_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR"  # numpy 2's dispatch targets above AVX2
NUMBA_OWN_FEATURES = "-avx512f"  # the CPU name's own features (none of them AVX-512)

PATHS: dict[str, dict[str, str]] = {
    # AVX2 + FMA, no AVX-512: Intel Haswell to Comet Lake, AMD Zen 1-3 (OpenBLAS runs Zen on these kernels)
    "haswell": {"OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": NO_AVX512,
                "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": NUMBA_OWN_FEATURES},
    # AVX, no AVX2 or FMA: Sandy Bridge and Ivy Bridge
    "sandybridge": {"OPENBLAS_CORETYPE": "SandyBridge", "NPY_DISABLE_CPU_FEATURES": f"X86_V3 {NO_AVX512}",
                    "NUMBA_CPU_NAME": "sandybridge", "NUMBA_CPU_FEATURES": NUMBA_OWN_FEATURES},
}

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    names = argv or list(PATHS)
    unknown = sorted(set(names) - set(PATHS))
    if unknown:
        print(f"unknown CPU path {', '.join(unknown)}; known: {', '.join(PATHS)}", file=sys.stderr)
        return 2
    verdicts = {}
    for name in names:
        print(f"== tests on the {name} path: {' '.join(f'{k}={v!r}' for k, v in PATHS[name].items())}", flush=True)
        verdicts[name] = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                                         "--dist", "loadfile"],  # as `make test` runs it
                                        cwd=ROOT, env={**os.environ, **PATHS[name]}).returncode
    for name, code in verdicts.items():
        print(f"{name}: {'passed' if code == 0 else f'FAILED (pytest exit {code})'}")
    return max(verdicts.values())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
