"""Where marble reads and writes, in one place: an explicit argument, else the environment, else ``./``.

==========================  =====================  =========
setting                     environment variable   default
==========================  =====================  =========
datasets (``--data-dir``)   ``MARBLE_DATA_DIR``    ``data``
caches (``--cache-dir``)    ``MARBLE_CACHE_DIR``   ``cache``
results (``--results-dir``) ``MARBLE_RESULTS_DIR`` ``results``
user task cards             ``MARBLE_TASKS_DIR``   (none)
==========================  =====================  =========

Every command and the Python API (``marble.evaluate``) resolve their folders through these functions,
so one ``export MARBLE_CACHE_DIR=/scratch/cache`` is enough for ``extract``, ``probe`` and ``run``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV, CACHE_ENV, RESULTS_ENV, TASKS_ENV = "MARBLE_DATA_DIR", "MARBLE_CACHE_DIR", "MARBLE_RESULTS_DIR", "MARBLE_TASKS_DIR"


def _pick(value, env: str, default: str) -> Path:
    return Path(value or os.environ.get(env) or default).expanduser()


def data_dir(value: str | os.PathLike | None = None) -> Path:
    """``value``, else ``$MARBLE_DATA_DIR``, else ``./data``."""
    return _pick(value, DATA_ENV, "data")


def cache_dir(value: str | os.PathLike | None = None) -> Path:
    """``value``, else ``$MARBLE_CACHE_DIR``, else ``./cache``."""
    return _pick(value, CACHE_ENV, "cache")


def results_dir(value: str | os.PathLike | None = None) -> Path:
    """``value``, else ``$MARBLE_RESULTS_DIR``, else ``./results``."""
    return _pick(value, RESULTS_ENV, "results")
