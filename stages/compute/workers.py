"""One place decides how many threads the stages' work runs on: image decoding (the tensorfile, calibration,
evaluation), calibration's statistics, evaluation's post-processing, and onnxruntime's own threads.

The count is `backend.workers`, or every core this process may use: os.sched_getaffinity, which follows
`taskset` and a container's cpuset, where os.cpu_count() gives the host's cores (onnxruntime's default,
one thread per physical core of the host, oversubscribes a 2-core share of a 64-core machine)."""
from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger("stages.workers")
_configured: int | None = None  # backend.workers of the running stage (configure())


def configure(requested: int | None) -> None:
    """The stage runner's one call: backend.workers for everything this process runs."""
    global _configured
    worker_count(requested)  # refused here, before any work, if it is not a count
    _configured = requested


def is_count(requested) -> bool:
    """Whether backend.workers names a number of threads (an int of 1 or more; a bool is not one)."""
    return isinstance(requested, int) and not isinstance(requested, bool) and requested >= 1


def allowed_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(requested: int | None = None) -> int:
    """`requested` threads (by default backend.workers, as configured), at most the allowed cores; None:
    every allowed core."""
    cores = allowed_cores()
    requested = _configured if requested is None else requested
    if requested is None:
        return cores
    if not is_count(requested):
        raise ValueError(f"backend.workers is {requested!r}: give 1 or more threads, or null for every core this "
                         f"process may use ({cores})")
    if requested > cores:
        _warn_clamped(requested, cores)
        return cores
    return requested


@functools.cache
def _warn_clamped(requested: int, cores: int) -> None:
    log.warning("backend.workers is %d, but this process may use %d cores (os.sched_getaffinity): using %d",
                requested, cores, cores)
