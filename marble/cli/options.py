"""The options every command shares, declared once: the data, cache and results folders read
``--x-dir``, else their ``MARBLE_*`` environment variable (shown in ``--help``), else ``./x``
(see :mod:`marble.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from marble import settings


def data_dir(help: str = "Dataset root (default ./data).") -> Any:
    return typer.Option(None, "--data-dir", envvar=settings.DATA_ENV, show_envvar=True, help=help)


def cache_dir(help: str = "Root of the feature caches (default ./cache).") -> Any:
    return typer.Option(None, "--cache-dir", envvar=settings.CACHE_ENV, show_envvar=True, help=help)


def results_dir(help: str = "Folder of <model>/<task>/<track>.json results (default ./results).") -> Any:
    return typer.Option(None, "--results-dir", envvar=settings.RESULTS_ENV, show_envvar=True, help=help)


def threads() -> Any:
    return typer.Option(None, "--threads", help="CPU threads torch uses (default: $OMP_NUM_THREADS when set, else "
                        "one per core; on a shared machine fewer are often faster).")


__all__ = ["data_dir", "cache_dir", "results_dir", "threads", "Path"]
