"""Metric caveats summed up: one line per task instead of Python's two-line warning (file, line number, and the
source line) each time a metric is computed, which on a multilabel task (MTT, MTG) broke the sweep's progress.

    with summarised("mtt", say):     # say("mtt: roc_auc_macro, ap_macro: 2 of 50 labels have ... (x, y); 84 times")
        ... score probes ...

Only :class:`~marble.metrics._common.MetricWarning` is summed up; every other warning shows as it would have.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

from marble.metrics._common import MetricWarning


@contextmanager
def summarised(task: str, say: Callable[[str], None]) -> Iterator[None]:
    """Collect the metric warnings raised inside the block; at its end, ``say`` one line for ``task`` naming each
    distinct caveat once (with the metrics it concerns) and how many times it was raised."""
    seen: dict[str, dict] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("always", MetricWarning)
        show = warnings.showwarning

        def collect(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, MetricWarning):
                return show(message, category, filename, lineno, file, line)
            metric, _, what = str(message).partition(": ")
            entry = seen.setdefault(what or metric, {"metrics": [], "n": 0})
            entry["n"] += 1
            if what and metric not in entry["metrics"]:
                entry["metrics"].append(metric)

        warnings.showwarning = collect
        try:
            yield
        finally:
            if seen:
                parts = [f"{', '.join(e['metrics']) + ': ' if e['metrics'] else ''}{what} ({e['n']} time"
                         f"{'s' if e['n'] > 1 else ''})" for what, e in list(seen.items())[:4]]
                more = f"; and {len(seen) - 4} more" if len(seen) > 4 else ""
                say(f"{task}: metric caveats: " + "; ".join(parts) + more)
