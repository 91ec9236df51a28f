"""marble: the MARBLE benchmark toolkit (layer-wise feature cache, batched probing, leaderboard).

The Python API (docs/api.md)::

    import marble
    results = marble.evaluate("m-a-p/MERT-v1-95M", tasks="gtzan,emo")   # extract + probe, resumable
    df = marble.load_results("results").to_pandas()                     # tidy frame of every probe

The names below load on first use, so ``import marble`` stays light (no torch import).
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "evaluate": "marble.benchmark",
    "run_benchmark": "marble.benchmark",
    "load_results": "marble.results.collection",
    "Results": "marble.results.collection",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'marble' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
