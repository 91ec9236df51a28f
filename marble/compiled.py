"""Plain Python loops compiled by numba for the CPU: one place for how the project compiles them.

The DBN's Viterbi recursion (:mod:`marble.beat.dbn`) and the Wiener EM's elementwise work
(:mod:`marble.separation.em_loops`) are written as loops with torch's exact arithmetic; numba compiles them on first
use, once per process, with the compiled code cached on disk (``cache=True``) and the GIL released (``nogil``), so
worker threads run them side by side. numba is a core dependency; without it the callers keep their torch paths.
"""

from __future__ import annotations

import functools


@functools.cache
def cpu_loops(*fns, error_model: str = "python") -> tuple | None:
    """``fns`` compiled by ``numba.njit`` (in order), or None when numba cannot be imported. ``error_model="numpy"``:
    a float division by zero gives IEEE inf/nan instead of raising (numba's default, "python")."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a core dependency
        return None
    jit = numba.njit(cache=True, nogil=True, error_model=error_model)
    return tuple(jit(fn) for fn in fns)
