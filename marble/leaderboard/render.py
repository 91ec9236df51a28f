"""Render a :class:`~marble.leaderboard.table.Leaderboard` as a rich terminal table, Markdown, CSV or
JSON. Terminal and Markdown show task scores (``full``: every metric too); CSV and JSON always hold
every number, unrounded, so they parse back exactly.
"""

from __future__ import annotations

import csv
import io
import json

from marble.leaderboard.table import Leaderboard, Row

FORMATS = ("table", "markdown", "csv", "json")
MARBLE = "MARBLE"


#: appended to a value from a result that departs from the constrained protocol (reduced sweep)
REDUCED = "*"


def _fmt(value: float | None, std: float | None = None, digits: int = 2, reduced: bool = False) -> str:
    if value is None:
        return "-"
    s = f"{value:.{digits}f}"
    s = f"{s} ± {std:.{digits}f}" if std is not None else s
    return s + REDUCED if reduced else s


def columns(lb: Leaderboard, full: bool = False) -> list[tuple[str, str, str | None]]:
    """``[(header, task, metric-or-None-for-score)]`` of the per-task columns."""
    cols = []
    for t in lb.tasks:
        if full:
            cols += [(f"{t}: {m}", t, m) for m in lb.metric_names[t]]
            cols.append((f"{t}: score", t, None))
        else:
            cols.append((t, t, None))
    return cols


def _value(row: Row, task: str, metric: str | None) -> tuple[float | None, float | None]:
    cell = row.cells.get(task)
    if cell is None:
        return None, None
    if metric is None:
        return cell.score, cell.score_std
    return cell.metrics.get(metric), cell.metrics_std.get(metric)


def _reduced(row: Row, task: str) -> bool:
    cell = row.cells.get(task)
    return bool(cell and cell.deviations)


def _text_rows(lb: Leaderboard, full: bool, digits: int = 2) -> tuple[list[str], list[list[str]]]:
    cols = columns(lb, full)
    header = ["Model", "Source"] + [c[0] for c in cols] + [MARBLE]
    body = []
    for row in lb.rows:
        cells = [_fmt(*_value(row, t, m), digits=digits, reduced=_reduced(row, t)) for _, t, m in cols]
        body.append([row.model, row.source] + cells + [_fmt(row.marble_score, digits=digits, reduced=not row.complete)])
    return header, body


def _notes(lb: Leaderboard) -> list[str]:
    notes = [f"{MARBLE}: mean of the {len(lb.benchmark_tasks)} benchmark task scores, shown only when all exist; "
             "task score = mean of the task's metrics (x100 for ratios, dB for SDR); 'reported' = published numbers.",
             "a ± b: mean ± std over seeds of the selected configuration."]
    if any(not r.complete for r in lb.rows):
        notes.append(f"{REDUCED}: reduced protocol (fewer epochs, layers or learning rates than the task card): not "
                     "comparable with published numbers; `marble leaderboard check --submission FILE` says why.")
    return notes


def to_markdown(lb: Leaderboard, full: bool = False) -> str:
    header, body = _text_rows(lb, full)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"**MARBLE leaderboard — {lb.track} track**", "",
             "| " + " | ".join(map(esc, header)) + " |",
             "| " + " | ".join(["---", "---"] + ["---:"] * (len(header) - 2)) + " |"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in body]
    lines += [""] + [f"_{n}_" for n in _notes(lb)]
    return "\n".join(lines) + "\n"


def to_csv(lb: Leaderboard) -> str:
    cols = columns(lb, full=True)
    header = ["model", "source", "track", "marble_score", "protocol_complete"]
    for _, t, m in cols:
        header += [f"{t}.{m}"] if m else [f"{t}.score", f"{t}.score_std"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    num = lambda v: "" if v is None else repr(round(float(v), 9))  # noqa: E731
    for row in lb.rows:
        out = [row.model, row.source, row.track, num(row.marble_score), str(row.complete).lower()]
        for _, t, m in cols:
            v, s = _value(row, t, m)
            out += [num(v)] if m else [num(v), num(s)]
        w.writerow(out)
    return buf.getvalue()


def to_dict(lb: Leaderboard) -> dict:
    return {
        "track": lb.track,
        "tasks": lb.tasks,
        "benchmark_tasks": lb.benchmark_tasks,
        "rows": [{
            "model": r.model, "source": r.source, "track": r.track, "marble_score": r.marble_score,
            "protocol_complete": r.complete,
            "tasks": {t: {"score": c.score, "score_std": c.score_std, "metrics": c.metrics,
                          "metrics_std": c.metrics_std, "n_seeds": c.n_seeds, "file": c.file,
                          "deviations": c.deviations}
                      for t, c in r.cells.items()},
        } for r in lb.rows],
        "warnings": lb.warnings,
    }


def to_json(lb: Leaderboard) -> str:
    return json.dumps(to_dict(lb), indent=2) + "\n"


def to_rich(lb: Leaderboard, full: bool = False):
    """A ``rich.table.Table`` (task scores; ``full`` adds every metric)."""
    from rich import box
    from rich.table import Table

    header, body = _text_rows(lb, full, digits=1)
    table = Table(title=f"MARBLE leaderboard — {lb.track} track", caption="\n".join(_notes(lb)),
                  caption_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for i, h in enumerate(header):
        if i < 2:
            table.add_column(h, no_wrap=True, style="bold" if i == 0 else "dim")
        else:
            # task ids break at '-' so a 14-task table fits a normal terminal; values never fold
            table.add_column(h.replace(": ", "\n").replace("-", "\n"), justify="right", overflow="fold",
                             min_width=5, style="bold cyan" if h == MARBLE else None)
    for r, row in zip(body, lb.rows):
        table.add_row(*r, style=None if row.source == "ours" else "dim")
    return table


def render(lb: Leaderboard, fmt: str, full: bool = False, width: int | None = None) -> str:
    """The leaderboard as text in one of :data:`FORMATS`."""
    if fmt == "markdown":
        return to_markdown(lb, full)
    if fmt == "csv":
        return to_csv(lb)
    if fmt == "json":
        return to_json(lb)
    if fmt == "table":
        from rich.console import Console

        console = Console(file=io.StringIO(), width=width or 400, record=True, force_terminal=False)
        console.print(to_rich(lb, full))
        return console.export_text()
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
