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
#: appended to a value in the top tie group: the best, or not separable from it (marble.leaderboard.significance)
TOP = "†"


def _fmt(value: float | None, std: float | None = None, digits: int = 2, reduced: bool = False,
         top: bool = False) -> str:
    if value is None:
        return "-"
    s = f"{value:.{digits}f}"
    s = f"{s} ± {std:.{digits}f}" if std is not None else s
    return s + (REDUCED if reduced else "") + (TOP if top else "")


def _top(tie) -> bool:
    return tie is not None and tie.group is True


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
        cells = [_fmt(*_value(row, t, m), digits=digits, reduced=_reduced(row, t),
                      top=m is None and row.cells.get(t) is not None and _top(row.cells[t].tie)) for _, t, m in cols]
        body.append([row.model, row.source] + cells + [_fmt(row.marble_score, digits=digits, reduced=not row.complete,
                                                            top=_top(row.marble_tie))])
    return header, body


def _notes(lb: Leaderboard) -> list[str]:
    notes = [f"{MARBLE}: mean of the {len(lb.benchmark_tasks)} benchmark task scores, shown only when all exist; "
             "task score = mean of the task's metrics (x100 for ratios, dB for SDR); 'reported' = published numbers.",
             "a ± b: mean ± std over seeds of the selected configuration."]
    if any(not r.complete for r in lb.rows):
        notes.append(f"{REDUCED}: reduced protocol (fewer epochs, layers or learning rates than the task card) or "
                     "incomplete data (files of a split not scored): not comparable with published numbers; `marble leaderboard check --submission FILE` says why.")
    if lb.ties:
        notes.append(f"{TOP}: top group of the task (and of the MARBLE score): the best score and every score not "
                     f"separable from it at 95 % ({lb.ties}); `marble compare` gives the intervals.")
        whys: dict[str, list[str]] = {}
        for row in lb.rows:
            for t in lb.tasks:
                tie = row.cells[t].tie if t in row.cells else None
                if tie is not None and tie.group is None:
                    whys.setdefault(tie.why, []).append("reported rows" if row.source == "reported" else f"{row.model} {t}")
        for why, where in whys.items():
            where = list(dict.fromkeys(where))
            shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
            notes.append(f"no tie group ({shown}): {why}.")
    return notes


def to_markdown(lb: Leaderboard, full: bool = False, digits: int = 2) -> str:
    header, body = _text_rows(lb, full, digits=digits)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"**MARBLE leaderboard — {lb.track} track**", "",
             "| " + " | ".join(map(esc, header)) + " |",
             "| " + " | ".join(["---", "---"] + ["---:"] * (len(header) - 2)) + " |"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in body]
    lines += [""] + [f"_{n}_" for n in _notes(lb)]
    return "\n".join(lines) + "\n"


def to_csv(lb: Leaderboard) -> str:
    cols = columns(lb, full=True)
    ties = lb.ties is not None
    header = ["model", "source", "track", "marble_score", "protocol_complete"]
    header += ["marble_top_group", "marble_tie"] if ties else []
    for _, t, m in cols:
        header += [f"{t}.{m}"] if m else [f"{t}.score", f"{t}.score_std"] + ([f"{t}.top_group", f"{t}.tie"] if ties else [])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    num = lambda v: "" if v is None else repr(round(float(v), 9))  # noqa: E731
    group = lambda tie: "" if tie is None or tie.group is None else str(tie.group).lower()  # noqa: E731
    note = lambda tie: "" if tie is None else tie.describe()  # noqa: E731
    for row in lb.rows:
        out = [row.model, row.source, row.track, num(row.marble_score), str(row.complete).lower()]
        out += [group(row.marble_tie), note(row.marble_tie)] if ties else []
        for _, t, m in cols:
            v, s = _value(row, t, m)
            tie = row.cells[t].tie if t in row.cells else None
            out += [num(v)] if m else [num(v), num(s)] + ([group(tie), note(tie)] if ties else [])
        w.writerow(out)
    return buf.getvalue()


def to_dict(lb: Leaderboard) -> dict:
    return {
        "track": lb.track,
        "tasks": lb.tasks,
        "benchmark_tasks": lb.benchmark_tasks,
        "tie_groups": lb.ties,
        "rows": [{
            "model": r.model, "source": r.source, "track": r.track, "marble_score": r.marble_score,
            "protocol_complete": r.complete,
            "marble_tie": r.marble_tie.to_dict() if r.marble_tie is not None else None,
            "tasks": {t: {"score": c.score, "score_std": c.score_std, "metrics": c.metrics,
                          "metrics_std": c.metrics_std, "n_seeds": c.n_seeds, "file": c.file,
                          "deviations": c.deviations, "tie": c.tie.to_dict() if c.tie is not None else None}
                      for t, c in r.cells.items()},
        } for r in lb.rows],
        "warnings": lb.warnings,
    }


def to_json(lb: Leaderboard) -> str:
    return json.dumps(to_dict(lb), indent=2) + "\n"


def _header_label(h: str) -> str:
    # task ids break at '-' and "task: metric" at ': ', so columns stay narrow; values never fold
    return h.replace(": ", "\n").replace("-", "\n")


def _column_width(h: str, values: list[str]) -> int:
    return max([len(t) for t in _header_label(h).split("\n")] + [len(v) for v in values] + [5])


def to_rich(lb: Leaderboard, full: bool = False, width: int | None = None):
    """The table as ``rich`` renderables: one table, or, when ``width`` is given and the task columns do
    not fit, several tables of consecutive task columns (each repeating Model and Source; MARBLE in
    the last), the way pandas wraps a wide frame. Cells are never cut."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    header, body = _text_rows(lb, full, digits=1)
    fixed = [max([len(header[i])] + [len(r[i]) for r in body]) for i in (0, 1)]
    widths = [_column_width(header[i], [r[i] for r in body]) for i in range(2, len(header))]
    blocks: list[list[int]] = [[]]  # indices into header of the task columns of each table
    gap = 3  # rich's cell padding (1 + 1) and the column divider of box.SIMPLE_HEAD
    budget = (width or 10**6) - sum(w + gap for w in fixed)
    used = 0
    for i, w in zip(range(2, len(header)), widths):
        if blocks[-1] and used + w + gap > budget:
            blocks.append([])
            used = 0
        blocks[-1].append(i)
        used += w + gap

    tables = []
    for k, cols in enumerate(blocks):
        title = f"MARBLE leaderboard — {lb.track} track" + (f" ({k + 1}/{len(blocks)})" if len(blocks) > 1 else "")
        last = k == len(blocks) - 1
        table = Table(title=title, caption="\n".join(_notes(lb)) if last else None, caption_justify="left",
                      header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column(header[0], no_wrap=True, style="bold")
        table.add_column(header[1], no_wrap=True, style="dim")
        for i in cols:
            h = header[i]
            table.add_column(_header_label(h), justify="right", no_wrap=True, min_width=widths[i - 2],
                             style="bold cyan" if h == MARBLE else None)
        for r, row in zip(body, lb.rows):
            table.add_row(r[0], r[1], *[r[i] for i in cols], style=None if row.source == "ours" else "dim")
        tables.append(table)
    return tables[0] if len(tables) == 1 else Group(*tables)


def render(lb: Leaderboard, fmt: str, full: bool = False, width: int | None = None, digits: int = 2) -> str:
    """The leaderboard as text in one of :data:`FORMATS` (``digits``: decimals of Markdown; the terminal table
    shows 1, as the MARBLE tables do)."""
    if fmt == "markdown":
        return to_markdown(lb, full, digits=digits)
    if fmt == "csv":
        return to_csv(lb)
    if fmt == "json":
        return to_json(lb)
    if fmt == "table":
        from rich.console import Console

        console = Console(file=io.StringIO(), width=width or 400, record=True, force_terminal=False)
        console.print(to_rich(lb, full, width=width or 400))
        return console.export_text()
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
