"""The MARBLE table: result files (ours) and published numbers (reported) -> one row per
(model, source), with each task's metrics (x100 for ratios, dB for SDR), its task score and,
when all 14 benchmark tasks are present, the MARBLE score (PROTOCOL §5).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from marble.leaderboard.significance import RULE
from marble.results import ResultError, read_result, result_files
from marble.results.consistency import card_checks_skipped
from marble.results.schema import REFERENCE_CSV, data_dir

CITATION = ("Yuan et al., MARBLE: Music Audio Representation Benchmark for Universal Evaluation, "
            "NeurIPS 2023 Datasets and Benchmarks (Table 4)")


@dataclass
class Cell:
    """One task of one row: metrics and score on the display scale (x100 ratios, dB)."""

    score: float | None
    metrics: dict[str, float]
    score_std: float | None = None
    metrics_std: dict[str, float] = field(default_factory=dict)
    n_seeds: int | None = None
    file: str | None = None
    # how the result departs from the card's constrained protocol (marble.results.conformance);
    # a cell with deviations is shown but is not comparable with published numbers
    deviations: list[str] = field(default_factory=list)
    # the result itself (its per-item outputs rank it) and its place in the task's tie groups
    # (marble.leaderboard.significance.Tie; None when tie groups were not computed)
    result: dict | None = field(default=None, repr=False)
    tie: object = None


@dataclass
class Row:
    model: str
    source: str  # ours | reported
    track: str
    cells: dict[str, Cell] = field(default_factory=dict)
    marble_score: float | None = None
    marble_tie: object = None  # significance.Tie of the MARBLE score

    @property
    def complete(self) -> bool:
        """Every cell follows the full constrained protocol (reported rows count as complete)."""
        return not any(c.deviations for c in self.cells.values())

    def mean_score(self) -> float | None:
        s = [c.score for c in self.cells.values() if c.score is not None]
        return sum(s) / len(s) if s else None


@dataclass
class Leaderboard:
    track: str
    tasks: list[str]  # column order
    metric_names: dict[str, list[str]]  # task -> metric columns (card order)
    benchmark_tasks: list[str]  # the tasks of the MARBLE score
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)
    ties: str | None = None  # how the tie groups were formed (significance.RULE); None: not computed


def reference_csv_path() -> Path:
    return data_dir() / REFERENCE_CSV


def reported_results(cards: dict, csv_path: str | os.PathLike | None = None) -> list[dict]:
    """The published numbers as ``source: "reported"`` result dicts (schema-valid, our scale)."""
    from marble.metrics.aggregate import reported_rows

    csv_path = Path(csv_path) if csv_path else reference_csv_path()
    out = []
    for model, tasks in reported_rows(csv_path, cards):
        for task_id, metrics in tasks.items():
            card = cards[task_id]
            out.append({
                "schema_version": 1, "source": "reported", "model": model, "task": task_id,
                "task_version": card.version, "protocol": card.protocol, "track": "constrained",
                "main_metric": card.metrics.main, "direction": card.metrics.direction,
                "test": metrics,
                "reference": {"citation": CITATION, "file": csv_path.name, "row": model,
                              "columns": {m: card.metrics.reference_columns[m] for m in metrics}},
            })
    return out


#: the deviation a cell of a user task read without its card carries (so it is marked and never ranked)
CARDLESS = "task card not loaded: checks against the card skipped, the main metric stands for the task score (pass --tasks-dir)"


def _cell(result: dict, card, file: str | None) -> Cell:
    from marble.metrics import SCALE
    from marble.metrics.aggregate import aggregate_metrics, task_score

    reported = result["source"] == "reported"
    test = result["test"]
    if card is None:  # a user task read without its card folder (marble.results.consistency.card_checks_skipped)
        metrics = {m: float(v) * SCALE.get(m, 1.0) for m, v in test.items() if v is not None}
        return Cell(score=metrics.get(result["main_metric"]), metrics=metrics, file=file, deviations=[CARDLESS],
                    result=result)
    metrics = {m: float(test[m]) * SCALE[m] for m in card.metrics.names if test.get(m) is not None}
    try:
        score = task_score(card, test, reported=reported)
    except ValueError:
        score = None
    from marble.results.conformance import protocol_deviations

    cell = Cell(score=score, metrics=metrics, file=file, deviations=protocol_deviations(result, card), result=result)
    seeds = result.get("seeds")
    if seeds:
        # seeds re-train the selected configuration: the seeded metric shows mean ± std, and the
        # task score takes the mean in place of the single run (std scaled by its share of the score)
        m, scale = seeds["metric"], SCALE[seeds["metric"]]
        cell.n_seeds = seeds["n"]
        cell.metrics[m] = seeds["mean"] * scale
        cell.metrics_std[m] = seeds["std"] * scale
        agg = aggregate_metrics(card, reported=reported)
        if m in agg:
            cell.score = task_score(card, {**test, m: seeds["mean"]}, reported=reported)
            cell.score_std = seeds["std"] * scale / len(agg)
    return cell


def _task_order(cards: dict, csv_header: list[str]) -> list[str]:
    """Built-in tasks in the published table's column order, then the rest alphabetically."""
    pos = {c: i for i, c in enumerate(csv_header)}

    def key(tid: str):
        cols = [pos[c] for c in cards[tid].metrics.reference_columns.values() if c in pos]
        return (0, min(cols), tid) if cols else (1, 0, tid)

    return sorted(cards, key=key)


def build(results_dir: str | os.PathLike | None = "results", *, track: str = "constrained", reported: bool = True,
          tasks_dir: str | os.PathLike | None = None, skip_invalid: bool = False,
          reference_csv: str | os.PathLike | None = None, files: list[Path] | None = None, ties: bool = True,
          resamples: int | None = None, seed: int | None = None) -> Leaderboard:
    """Read, validate and aggregate every result. An invalid file raises :class:`ResultError`
    (naming the file and field) unless ``skip_invalid``, which records a warning instead. The published
    rows (``reported``) are left out when every result is of a user task: they have no column in common.
    ``ties``: mark the tie groups (:mod:`marble.leaderboard.significance`; ``resamples``, ``seed`` of its bootstrap)."""
    from marble.metrics.aggregate import default_task_ids, marble_score
    from marble.registry import all_cards

    cards = all_cards(tasks_dir)
    warnings: list[str] = []
    results: list[tuple[dict, str | None]] = []

    paths = list(files or [])
    if results_dir is not None and files is None:
        if Path(results_dir).is_dir():
            paths = result_files(results_dir)
        else:
            warnings.append(f"{results_dir}: no results directory (run `marble probe` first, or pass --results-dir)")
    seen: dict[tuple, str] = {}
    for p in paths:
        try:
            r = read_result(p, cards=cards, cardless=True)
            note = card_checks_skipped(r, cards)
            if note:
                warnings.append(f"{p}: {note}")
            problems = []
            if files is None and p.parent.name != r["task"]:
                problems.append(f"field 'task': {r['task']!r} but the file sits in the folder of task {p.parent.name!r}")
            if files is None and p.stem != r["track"]:
                problems.append(f"field 'track': {r['track']!r} but the file is named {p.name!r}")
            key = (r["model"], r["source"], r["task"], r["track"])
            if key in seen:
                problems.append(f"duplicate result for model {r['model']!r}, task {r['task']!r}, track {r['track']!r} "
                                f"(also in {seen[key]})")
            if problems:
                raise ResultError(p, problems)
        except ResultError as e:
            if not skip_invalid:
                raise
            warnings.append(f"skipped invalid result: {e}")
            continue
        seen[key] = str(p)
        if r["track"] == track:
            results.append((r, str(p)))

    ref_path = Path(reference_csv) if reference_csv else reference_csv_path()
    header: list[str] = []
    if ref_path.is_file():
        with ref_path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    # published rows sit beside results of built-in tasks; a folder holding only user tasks gets a table
    # of those tasks alone, not 14 empty built-in columns
    only_user_tasks = bool(results) and not any(r["task"] in cards and cards[r["task"]].origin == "builtin"
                                                for r, _ in results)
    if reported and track == "constrained" and not only_user_tasks:
        if ref_path.is_file():
            for r in reported_results(cards, ref_path):
                results.append((r, None))
        else:
            warnings.append(f"{ref_path}: reference results missing; published rows left out")

    rows: dict[tuple[str, str], Row] = {}
    for r, file in results:
        row = rows.setdefault((r["model"], r["source"]), Row(r["model"], r["source"], r["track"]))
        row.cells[r["task"]] = _cell(r, cards.get(r["task"]), file)

    bench = default_task_ids()
    for row in rows.values():
        row.marble_score = marble_score({t: c.score for t, c in row.cells.items()}, bench)

    used = {t for row in rows.values() for t in row.cells}
    tasks = [t for t in _task_order(cards, header) if t in used] + sorted(used - set(cards))
    metric_names = {t: [m for m in (cards[t].metrics.names if t in cards else sorted(
        {m for row in rows.values() if t in row.cells for m in row.cells[t].metrics}))
        if any(m in row.cells[t].metrics for row in rows.values() if t in row.cells)] for t in tasks}

    def rank(row: Row):
        ms, mean = row.marble_score, row.mean_score()
        return (ms is None, -(ms or 0.0), -len(row.cells), -(mean if mean is not None else -math.inf),
                row.source, row.model)

    lb = Leaderboard(track, tasks, metric_names, bench, sorted(rows.values(), key=rank), warnings)
    if ties:
        mark_ties(lb.rows, cards, bench, resamples=resamples, seed=seed, warnings=warnings if skip_invalid else None)
        lb.ties = RULE
    return lb


def mark_ties(rows: list[Row], cards: dict, benchmark: list[str], *, resamples: int | None = None,
              seed: int | None = None, warnings: list[str] | None = None) -> None:
    """The tie groups of ``rows`` (:func:`marble.leaderboard.significance.assign_ties`). With ``warnings`` a
    result whose test outputs fail their check is left without a group and warned about; else it raises."""
    from marble.leaderboard.significance import DEFAULT_RESAMPLES, DEFAULT_SEED, assign_ties

    assign_ties(rows, cards, benchmark, resamples=resamples or DEFAULT_RESAMPLES,
                seed=DEFAULT_SEED if seed is None else seed, warnings=warnings)
