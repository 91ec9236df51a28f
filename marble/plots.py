"""Figures of results: the layer curve of one result and the models x tasks comparison.

Each figure has a data function (plain numbers, what the tests and other renderers such as the leaderboard
site use) and a plotting function that draws exactly those numbers with matplotlib's object API
(``matplotlib.figure.Figure``: no pyplot state, no display needed; a Figure shows itself in a notebook).
Scores are drawn on the MARBLE tables' scale (ratios x100, dB as they are).

* :func:`layer_data` / :func:`plot_layers`: score vs layer, one line per learning rate, the weighted sum on an
  axis of its own beside the layers (a layer number never stands for it), the selected probe starred on whichever
  axis holds it, and the learned layer weights in a panel beside.
* :func:`compare_data` / :func:`plot_compare`: a heat map of task scores, models x tasks, on a fixed colour scale
  per kind of score (x100, dB), reduced or incomplete results marked ``*``, the published rows on request.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from marble.errors import MarbleError
from marble.results.conformance import WEIGHTED  # the sweep's layer value of the weighted-sum probe

FORMATS = ("png", "svg")


class PlotError(MarbleError, ValueError):
    """A figure asked of results that do not hold its data (unknown metric or split, no results)."""


def _scale(metric: str) -> float:
    from marble.metrics import SCALE

    return float(SCALE.get(metric, 1.0))


def _value(v, scale: float) -> float:
    return float("nan") if v is None else float(v) * scale


def layer_data(result: dict, *, split: str = "test", metric: str | None = None) -> dict:
    """The numbers of :func:`plot_layers`: ``layers`` (ints, ascending), ``lines`` ({lr: [score per layer]}),
    ``weighted_points`` ({lr: score} of every weighted-sum probe of the sweep), ``selected`` ((layer, lr, score)
    of the probe chosen on validation, ``layer`` an int or ``"weighted"``; or None), ``weighted`` ({lr, score,
    layers, weights} of the best weighted-sum probe, or None); scores on the table scale."""
    if split not in ("valid", "test"):
        raise PlotError(f"split {split!r}: choose valid or test")
    metric = metric or result["main_metric"]
    scale = _scale(metric)
    rows = result.get("sweep") or []
    known = {m for r in rows for m in (r.get(split) or {})}
    if metric not in known:
        raise PlotError(f"metric {metric!r} is not in the sweep of {result['model']}/{result['task']} "
                         f"(have: {', '.join(sorted(known)) or 'none'})")
    layers = sorted({r["layer"] for r in rows if isinstance(r["layer"], int)})
    lrs = sorted({float(r["lr"]) for r in rows})
    table = {(r["layer"], float(r["lr"])): _value((r.get(split) or {}).get(metric), scale) for r in rows}
    lines = {lr: [table.get((layer, lr), float("nan")) for layer in layers] for lr in lrs
             if any((layer, lr) in table for layer in layers)}
    points = {lr: table[(WEIGHTED, lr)] for lr in lrs if (WEIGHTED, lr) in table}
    from marble.results.selection import choice_for

    sel = choice_for(result, metric) or {}  # the row this metric is reported from (per source for MUSDB)
    selected = None
    if sel.get("layer") is not None and (sel["layer"], float(sel["lr"])) in table:
        selected = (sel["layer"], float(sel["lr"]), table[(sel["layer"], float(sel["lr"]))])
    weighted = None
    ws = result.get("weighted_sum")
    if ws and (WEIGHTED, float(ws["lr"])) in table:
        w = [float(x) for x in ws.get("weights") or []]
        top = (max(layers) + 1) if layers else len(w) + 1
        weighted = {"lr": float(ws["lr"]), "score": table[(WEIGHTED, float(ws["lr"]))],
                    "layers": list(range(top - len(w), top)), "weights": w}  # state 0 is not mixed
    return {"model": result["model"], "task": result["task"], "track": result["track"], "split": split,
            "metric": metric, "scale": scale, "layers": layers, "lines": lines, "weighted_points": points,
            "selected": selected, "weighted": weighted}


def plot_layers(result: dict, *, split: str = "test", metric: str | None = None):
    """Score vs layer of one result (see :func:`layer_data`); returns a ``matplotlib.figure.Figure`` of three
    axes sharing the score scale: the layers (one line per LR, label ``lr <value>``; the best weighted-sum score
    as a dashed reference, label ``weighted sum ...``), the weighted sum on an axis of its own (one point per LR,
    x tick ``weighted sum``) and the learned layer weights. The selected probe (label ``selected: ...``) is a star
    on the layer axis at its layer, or on the weighted-sum axis when the weighted sum was selected; a layer
    number never stands for the weighted sum."""
    from matplotlib.figure import Figure

    d = layer_data(result, split=split, metric=metric)
    fig = Figure(figsize=(10.8, 4.2), layout="constrained")
    ax, axs, axw = fig.subplots(1, 3, width_ratios=[3, 0.45, 1.2])
    axs.sharey(ax)
    colours = {}
    for lr, ys in d["lines"].items():
        (ln,) = ax.plot(d["layers"], ys, marker="o", markersize=3, linewidth=1.2, label=f"lr {lr:g}")
        colours[lr] = ln.get_color()
    if d["weighted"] is not None:
        ax.axhline(d["weighted"]["score"], linestyle="--", color="0.3", linewidth=1,
                   label=f"weighted sum (lr {d['weighted']['lr']:g})")
    for lr, score in d["weighted_points"].items():
        axs.plot([0], [score], linestyle="none", marker="o", markersize=5, color=colours.get(lr, "0.3"),
                 label=f"weighted sum, lr {lr:g}")
    if d["selected"] is not None:
        layer, lr, score = d["selected"]
        on = axs if layer == WEIGHTED else ax
        what = "weighted sum" if layer == WEIGHTED else f"layer {layer}"
        on.plot([0 if layer == WEIGHTED else layer], [score], linestyle="none", marker="*", markersize=16,
                color="crimson", zorder=5, label=f"selected: {what}, lr {lr:g}")
    unit = "dB" if d["scale"] == 1.0 else "x100"
    ax.set_xlabel("layer (hidden state)")
    ax.set_ylabel(f"{d['split']} {d['metric']} ({unit})")
    ax.set_title(f"{d['model']} / {d['task']} / {d['track']}")
    if d["layers"]:
        ax.set_xticks(d["layers"])
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if d["selected"] is not None and d["selected"][0] == WEIGHTED:  # the star's legend entry, whichever axes
        h, lab = axs.get_legend_handles_labels()
        handles, labels = handles + h[-1:], labels + lab[-1:]
    ax.legend(handles, labels, fontsize=7, loc="best")
    if d["weighted_points"]:
        axs.set_xlim(-1, 1)
        axs.set_xticks([0], ["weighted\nsum"])
        axs.tick_params(axis="y", labelleft=False)
        axs.grid(alpha=0.3, axis="y")
    else:
        axs.set_axis_off()
    if d["weighted"] is not None:
        axw.bar(d["weighted"]["layers"], d["weighted"]["weights"], color="0.45")
        axw.set_title(f"weighted sum: {d['weighted']['score']:.2f}", fontsize=10)
        axw.set_xlabel("layer")
        axw.set_ylabel("learned weight (softmax)")
        axw.set_xticks(d["weighted"]["layers"])
    else:
        axw.set_axis_off()
        axw.text(0.5, 0.5, "no weighted-sum probe", ha="center", va="center", transform=axw.transAxes)
    return fig


#: the fixed colour range of each kind of task score, so a colour means one number whatever else is drawn
#: (an auto-ranged scale made 89.6 look like 0 beside a dB column): ratios x100 on 0..100, SDR on 0..10 dB
KIND_RANGES = {"x100": (0.0, 100.0), "dB": (0.0, 10.0)}
KIND_LABELS = {"x100": "score (x100)", "dB": "SDR (dB)"}
KIND_CMAPS = {"x100": "viridis", "dB": "magma"}
REDUCED_MARK = "*"


def _kind(card, result: dict) -> str:
    """``dB`` when the task score is in dB (SDR), else ``x100``."""
    names = list(card.metrics.aggregate) if card is not None else [result["main_metric"]]
    return "dB" if names and all(_scale(m) == 1.0 for m in names) else "x100"


def compare_data(results: Iterable[dict], *, tasks_dir=None, track: str = "constrained",
                 published: bool = False) -> dict:
    """``models`` x ``tasks`` task scores (the leaderboard's: mean of the card's aggregate metrics on the
    table scale; for a user task read without its card, its main metric); ``scores[i][j]`` is NaN where model i
    has no result for task j. ``reduced[i][j]``: the result departs from the card's protocol or misses data (the
    leaderboard's ``*``); ``kinds[j]``: ``x100`` or ``dB``, the colour scale of column j (:data:`KIND_RANGES`).
    ``published``: add the published rows (constrained track) of the tasks compared, named ``<model> (published)``."""
    from marble.metrics.aggregate import task_score
    from marble.registry import all_cards
    from marble.results.conformance import protocol_deviations

    cards = all_cards(tasks_dir)
    results = [r for r in results if r["track"] == track]
    if published and track == "constrained":
        from marble.leaderboard.table import reported_results

        ours = {r["task"] for r in results}  # published rows for the tasks compared, not 14 extra columns
        results += [r for r in reported_results(cards) if r["task"] in ours]
    cell: dict[tuple[str, str], float] = {}
    reduced: dict[tuple[str, str], bool] = {}
    kinds: dict[str, str] = {}
    for r in results:
        card = cards.get(r["task"])
        reported = r["source"] == "reported"
        key = (f"{r['model']} (published)" if reported else r["model"], r["task"])
        kinds.setdefault(r["task"], _kind(card, r))
        if card is None:  # a user task read without its card: its main metric stands for the task score
            cell[key] = _value((r.get("test") or {}).get(r["main_metric"]), _scale(r["main_metric"]))
            reduced[key] = True
            continue
        try:
            cell[key] = task_score(card, r.get("test") or {}, reported=reported)
        except ValueError:
            cell[key] = float("nan")
        reduced[key] = not reported and bool(protocol_deviations(r, card))
    order = list(cards)
    models = sorted({m for m, _ in cell}, key=lambda m: (m.endswith(" (published)"), m))
    tasks = sorted({t for _, t in cell}, key=lambda t: (order.index(t) if t in order else len(order), t))
    scores = [[cell.get((m, t), float("nan")) for t in tasks] for m in models]
    marks = [[reduced.get((m, t), False) for t in tasks] for m in models]
    return {"track": track, "models": models, "tasks": tasks, "scores": scores, "reduced": marks,
            "kinds": [kinds[t] for t in tasks]}


def plot_compare(results: Iterable[dict], *, tasks_dir=None, track: str = "constrained", published: bool = False):
    """Heat map of task scores, one row per model and one column per task, each cell annotated (``*``: reduced
    protocol or incomplete data). Each kind of score has its fixed colour scale and colour bar
    (:data:`KIND_RANGES`): one image per kind, ``x100`` first."""
    import numpy as np
    from matplotlib.figure import Figure

    d = compare_data(results, tasks_dir=tasks_dir, track=track, published=published)
    if not d["models"]:
        raise PlotError(f"no {track} results to compare")
    a = np.array(d["scores"], dtype=float)
    longest = max(len(m) for m in d["models"])
    fig = Figure(figsize=(max(6.0, 1.5 + 0.08 * longest + 0.9 * len(d["tasks"])), 2.0 + 0.45 * len(d["models"])),
                 layout="constrained")
    ax = fig.subplots()
    for kind in KIND_RANGES:
        cols = np.array([k == kind for k in d["kinds"]])
        if not cols.any():
            continue
        lo, hi = KIND_RANGES[kind]
        masked = np.ma.masked_where(~np.isfinite(a) | ~cols[None, :], a)
        im = ax.imshow(masked, cmap=KIND_CMAPS[kind], vmin=lo, vmax=hi, aspect="auto")
        im.set_label(kind)
        fig.colorbar(im, ax=ax, shrink=0.8, label=KIND_LABELS[kind])
        for i in range(a.shape[0]):
            for j in np.flatnonzero(cols):
                if math.isfinite(a[i, j]):
                    bright = (min(max(a[i, j], lo), hi) - lo) / (hi - lo) > 0.6  # both maps are light at the top
                    mark = REDUCED_MARK if d["reduced"][i][j] else ""
                    ax.text(j, i, f"{a[i, j]:.1f}{mark}", ha="center", va="center", fontsize=8,
                            color="black" if bright else "white")
    ax.set_xticks(range(len(d["tasks"])), d["tasks"], rotation=45, ha="right")
    ax.set_yticks(range(len(d["models"])), d["models"])
    title = f"task scores, {track} track"
    if any(any(row) for row in d["reduced"]):
        title += f"  ({REDUCED_MARK} reduced protocol or incomplete data)"
    ax.set_title(title, fontsize=10)
    return fig


def save(fig, stem: str | os.PathLike, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``<stem>.<format>`` for each format (png, svg, pdf); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=150)
        out.append(path)
    return out
