"""Which sweep row a result reports: one (layer, LR) row chosen on validation for most tasks, or,
for a task that selects per source (MUSDB, task card ``metrics.per_source``), one row per source,
each source's metrics reported from its own row (``selected.per_source``; the main metric is then
the mean of the sources' scores, so it comes from no single row)."""

from __future__ import annotations

import math


def choices(result: dict) -> dict:
    """``{None: selected}`` for a row selection, ``{source: its choice}`` per source, ``{}`` for none
    (published rows)."""
    sel = result.get("selected") or {}
    if "per_source" in sel:
        return dict(sel["per_source"])
    return {None: sel} if sel.get("layer") is not None else {}


def choice_for(result: dict, metric: str) -> dict | None:
    """The choice (``layer``, ``lr``, ...) whose sweep row the reported ``metric`` comes from; None when
    no single row gives it (the per-source mean, or a published row)."""
    sel = result.get("selected") or {}
    if "per_source" in sel:
        return next((c for c in sel["per_source"].values() if metric in c.get("metrics", ())), None)
    return sel if sel.get("layer") is not None else None


def is_row(choice: dict | None, row: dict) -> bool:
    """Is sweep ``row`` the one of ``choice``?"""
    return choice is not None and row["layer"] == choice["layer"] and math.isclose(float(row["lr"]), float(choice["lr"]),
                                                                                  rel_tol=1e-9)


def describe(result: dict) -> str:
    """``layer 7, lr 0.001`` or ``vocals: layer 7, lr 0.001; drums: ...`` (``-`` for none)."""
    c = choices(result)
    if not c:
        return "-"
    text = {k: f"layer {v['layer']}, lr {float(v['lr']):g}" for k, v in c.items()}
    return text[None] if None in text else "; ".join(f"{k}: {v}" for k, v in text.items())
