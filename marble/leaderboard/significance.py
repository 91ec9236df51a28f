"""Paired comparisons of models on the same test items: score differences with bootstrap intervals and
p-values (``marble compare``), and the leaderboard's tie groups.

**Paired bootstrap.** Two results of one task (same track, card version, scored items and references) are compared on
the per-item test outputs they carry (:mod:`marble.results.artifacts`). The items (files; songs for GS; tracks for
gtzan-beat and MUSDB) are resampled with replacement, the same draws for both models (:mod:`marble.metrics.resample`:
resample ``b`` is the ``b``-th ``rng.integers(0, n, n)`` of ``numpy.random.default_rng(seed)``), and on every
resample each model's **task score** (the mean of the card's aggregate metrics, x100 for ratios, as the MARBLE table)
is recomputed from the drawn items. The difference's 95 % interval is the 2.5th and 97.5th percentiles of the
resampled differences (percentile bootstrap); its two-sided p-value inverts that interval,
``p = min(1, 2 min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1))``, so ``p < 0.05`` exactly when the interval (nearly)
excludes 0. Across tasks, resample ``b`` of every task is taken together (the tasks are independent test sets) and the
difference of the mean task score (the MARBLE score when all 14 tasks are there) gets its interval the same way.

**Tie groups** (per task, and for the MARBLE score). The best model (highest score of its shipped probe on the
full test set) is compared with each other model that has per-item outputs on the same items; the ``m``
p-values are adjusted with **Holm's step-down rule** (Holm 1979: family-wise error at most 5 %). The top group is
the best model and every model whose difference from it is not significant after adjustment: models not
separable from the best at 95 %. Results without per-item outputs (published numbers, older results), reduced
or incomplete runs, and results scored on other items have no group, and say why. So that the smallest
attainable p-value ``2 / (B + 1)`` can pass Holm's first threshold ``0.05 / m``, a tie computation uses at least
``40 m`` resamples.

Seeds: the outputs are those of the shipped probe (the selected configuration at the run's seed); where a
result has ``--seeds``, its seed mean and spread are reported beside the comparison, not mixed into it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marble.errors import MarbleError
from marble.metrics.resample import DEFAULT_RESAMPLES, DEFAULT_SEED, indices, on_resamples

ALPHA = 0.05
RULE = "paired bootstrap over the test items, Holm-adjusted at 5 %"


class CompareError(MarbleError, ValueError):
    """Two results cannot be compared item by item; the message names the difference."""


@dataclass
class Scored:
    """One model's result of one task, with its per-item test outputs."""

    model: str
    path: Path
    result: dict
    outputs: object  # marble.results.artifacts.TestOutputs

    @property
    def task(self) -> str:
        return self.result["task"]


def load_scored(path: str | os.PathLike, result: dict, model: str | None = None) -> Scored:
    """A result with its test outputs (hash-checked; :class:`marble.results.ResultError` otherwise)."""
    from marble.results.artifacts import read_test_outputs

    return Scored(model or result["model"], Path(path), result, read_test_outputs(path, result))


def why_not_comparable(a: Scored, b: Scored) -> str | None:
    """Why ``a`` and ``b`` cannot be compared item by item (None: they can)."""
    ra, rb = a.result, b.result
    for key, what in (("task", "tasks"), ("track", "tracks"), ("task_version", "task card versions")):
        if ra.get(key) != rb.get(key):
            return f"different {what}: {a.model} has {ra.get(key)!r}, {b.model} has {rb.get(key)!r}"
    oa, ob = a.outputs, b.outputs
    if oa.unit != ob.unit:
        return f"scored per {oa.unit} ({a.model}) and per {ob.unit} ({b.model})"
    ka, kb = set(oa.keys), set(ob.keys)
    if ka != kb:
        only_a, only_b = sorted(ka - kb), sorted(kb - ka)
        parts = [f"{len(only_a)} only in {a.model} (e.g. {only_a[0]})"] if only_a else []
        parts += [f"{len(only_b)} only in {b.model} (e.g. {only_b[0]})"] if only_b else []
        return f"scored on different {oa.unit}s ({len(ka)} vs {len(kb)}: {'; '.join(parts)})"
    if oa.scores != ob.scores:
        what = {True: "scores", False: "outputs"}
        return f"per-item {what[oa.scores]} ({a.model}) and {what[ob.scores]} ({b.model})"
    pos = {k: i for i, k in enumerate(ob.keys)}
    bad = None if oa.scores else next((k for i, k in enumerate(oa.keys)
                                       if not np.array_equal(oa.reference[i], ob.reference[pos[k]])), None)
    if bad is not None:
        return f"the reference of {oa.unit} {bad!r} differs ({a.model} vs {b.model}): not the same labels"
    if oa.frame_rate != ob.frame_rate:
        return f"references rounded to {oa.frame_rate} ({a.model}) and {ob.frame_rate} ({b.model}) frames/s"
    return None


def check_comparable(items: list[Scored]) -> None:
    for other in items[1:]:
        why = why_not_comparable(items[0], other)
        if why:
            raise CompareError(f"{items[0].task}: cannot compare {items[0].model} and {other.model} item by item: "
                               f"{why}")


def _aligned(s: Scored, keys: list[str], name: str):
    """Metric ``name``'s inputs (reference, estimate) of ``s`` with items in ``keys`` order."""
    pos = {k: i for i, k in enumerate(s.outputs.keys)}
    order = np.asarray([pos[k] for k in keys])
    ref, est = s.outputs.metric_inputs(name)
    return (None if ref is None else ref[order]), est[order]


def task_score(card, s: Scored) -> float:
    """The task score (x100 / dB) of ``s``'s test outputs on all items."""
    from marble.metrics import SCALE
    from marble.metrics.aggregate import aggregate_metrics

    names = aggregate_metrics(card)
    full = s.outputs.metrics(names)
    if any(full[n] is None for n in names):
        raise CompareError(f"{s.path}: a metric of the task score is undefined on the test outputs")
    return sum(full[n] * SCALE[n] for n in names) / len(names)


def task_score_resamples(card, s: Scored, keys: list[str], resamples: int = DEFAULT_RESAMPLES,
                         seed: int = DEFAULT_SEED) -> tuple[float, np.ndarray]:
    """``(task score on all items, task score on each resample [B])`` of ``s`` with items in ``keys`` order."""
    from marble.metrics import SCALE
    from marble.metrics.aggregate import aggregate_metrics

    names = aggregate_metrics(card)
    vocab = list(s.outputs.vocabulary) or card.vocabulary()
    fns = [on_resamples(n, *_aligned(s, keys, n), vocab, metric=s.outputs.metric_fn(n)) for n in names]
    score = task_score(card, s)
    parts = []
    for idx in indices(len(keys), resamples, seed):
        parts.append(sum(f(idx) * SCALE[n] for f, n in zip(fns, names)) / len(names))
    return score, np.concatenate(parts)


@dataclass
class Interval:
    """A difference ``diff = a - b`` (task-score scale), its 95 % percentile interval and p-value."""

    diff: float
    lo: float
    hi: float
    p: float
    resamples: int  # resamples with a defined difference
    undefined: int = 0  # resamples where a metric was undefined (dropped)
    p_holm: float | None = None

    @property
    def separable(self) -> bool:
        return (self.p_holm if self.p_holm is not None else self.p) < ALPHA


def interval(diff: float, boot: np.ndarray) -> Interval:
    ok = boot[np.isfinite(boot)]
    if not len(ok):
        return Interval(diff, math.nan, math.nan, math.nan, 0, len(boot))
    lo, hi = np.percentile(ok, [2.5, 97.5])
    B = len(ok)
    p = min(1.0, 2.0 * min(int((ok <= 0).sum()) + 1, int((ok >= 0).sum()) + 1) / (B + 1))
    return Interval(float(diff), float(lo), float(hi), p, B, len(boot) - B)


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (in the input order): ``p_(i) * (m - i + 1)``, made monotone, at most 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


# ------------------------------------------------------------------------------------------------
# marble compare


@dataclass
class TaskComparison:
    task: str
    unit: str
    n: int
    scores: dict[str, float]  # model -> task score of its shipped probe on all items
    vs_first: dict[str, Interval]  # other model -> (other - first)
    seeds: dict[str, dict | None] = field(default_factory=dict)


@dataclass
class Comparison:
    models: list[str]
    tasks: list[TaskComparison]
    across: dict[str, Interval]  # other model -> difference of the mean task score over the common tasks
    across_is_marble: bool
    resamples: int
    seed: int
    skipped: list[str] = field(default_factory=list)  # tasks not compared, with why


def _seed_spread(result: dict, card) -> dict | None:
    from marble.metrics import SCALE

    s = result.get("seeds")
    if not s or s.get("n", 1) < 2:
        return None
    f = SCALE[s["metric"]]
    return {"metric": s["metric"], "n": s["n"], "mean": s["mean"] * f, "std": s["std"] * f}


def compare(results: dict[str, dict[str, tuple[Path, dict]]], cards: dict, *, tasks: list[str] | None = None,
            resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Comparison:
    """Compare models (``{model: {task: (path, result)}}``, the first model the baseline) on their common tasks:
    per task each other model's task-score difference from the first with its paired-bootstrap interval and
    p-value (Holm-adjusted over the other models when there are several), and across the common tasks the
    difference of the mean task score. Raises :class:`CompareError` naming what differs."""
    from marble.metrics.aggregate import default_task_ids

    models = list(results)
    if len(models) < 2:
        raise CompareError("compare needs at least two models")
    common = [t for t in results[models[0]] if all(t in results[m] for m in models[1:])]
    if tasks is not None:
        missing = {t: [m for m in models if t not in results[m]] for t in tasks}
        missing = {t: ms for t, ms in missing.items() if ms}
        if missing:
            raise CompareError("no result of " + "; ".join(f"task {t} for {', '.join(ms)}" for t, ms in missing.items()))
        common = list(tasks)
    if not common:
        raise CompareError(f"the models have no task in common ({'; '.join(f'{m}: ' + ', '.join(sorted(results[m])) for m in models)})")
    out = Comparison(models, [], {}, False, resamples, seed)
    boots: dict[str, list[np.ndarray]] = {m: [] for m in models}
    fulls: dict[str, list[float]] = {m: [] for m in models}
    for t in sorted(common):
        card = cards[t]
        scored = []
        for m in models:
            path, r = results[m][t]
            if not (r.get("artifacts") or {}).get("test_outputs"):
                raise CompareError(f"{path}: {m} / {t} carries no per-item test outputs ("
                                   + ("published numbers have none" if r.get("source") == "reported" else
                                      "a result of an older marble: re-run `marble probe`") + "); it cannot be compared item by item")
            scored.append(load_scored(path, r, m))
        check_comparable(scored)
        keys = sorted(scored[0].outputs.keys)
        tc = TaskComparison(t, scored[0].outputs.unit, len(keys), {}, {},
                            {s.model: _seed_spread(s.result, card) for s in scored})
        per = {}
        for s in scored:
            full, boot = task_score_resamples(card, s, keys, resamples, seed)
            tc.scores[s.model], per[s.model] = full, boot
            fulls[s.model].append(full)
            boots[s.model].append(boot)
        for m in models[1:]:
            tc.vs_first[m] = interval(tc.scores[m] - tc.scores[models[0]], per[m] - per[models[0]])
        _adjust(list(tc.vs_first.values()))
        out.tasks.append(tc)
    mean = {m: np.mean(np.stack(boots[m]), axis=0) for m in models}
    for m in models[1:]:
        out.across[m] = interval(float(np.mean(fulls[m]) - np.mean(fulls[models[0]])), mean[m] - mean[models[0]])
    _adjust(list(out.across.values()))
    out.across_is_marble = set(default_task_ids()) <= set(common)
    return out


def _adjust(ints: list[Interval]) -> None:
    if len(ints) > 1:
        for i, p in zip(ints, holm([x.p for x in ints])):
            i.p_holm = p


def format_comparison(c: Comparison) -> str:
    """The comparison as a plain-text table (differences on the MARBLE table's scale: x100, dB for SDR)."""
    base = c.models[0]
    several = len(c.models) > 2
    lines = [f"paired bootstrap: {c.resamples} resamples of the test items, seed {c.seed}; differences are "
             f"<model> - {base} (x100 / dB); 95% percentile interval; p two-sided"
             + ("; p_holm: Holm-adjusted over the models compared with the first" if several else "")]
    head = ["task", "items", *c.models] + [f"{m} - {base}" for m in c.models[1:]]
    rows = []
    for tc in c.tasks:
        cells = [tc.task, f"{tc.n} {tc.unit}s"] + [f"{tc.scores[m]:.2f}" for m in c.models]
        cells += [_fmt_interval(tc.vs_first[m]) for m in c.models[1:]]
        rows.append(cells)
    what = "MARBLE score" if c.across_is_marble else f"mean of {len(c.tasks)} task score(s)"
    cells = [what, ""] + ["" for _ in c.models] + [_fmt_interval(c.across[m]) for m in c.models[1:]]
    rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(cells, widths)))  # noqa: E731
    lines += ["", fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    seeded = [(tc.task, m, s) for tc in c.tasks for m, s in tc.seeds.items() if s]
    if seeded:
        lines += ["", "seed spread (selected configuration re-trained with --seeds; not part of the bootstrap):"]
        lines += [f"  {t} {m}: {s['metric']} {s['mean']:.2f} +- {s['std']:.2f} over {s['n']} seeds" for t, m, s in seeded]
    return "\n".join(lines) + "\n"


def _fmt_interval(i: Interval) -> str:
    if not math.isfinite(i.lo):
        return f"{i.diff:+.2f} (no defined resample)"
    p = f"p={i.p:.3g}" + (f", p_holm={i.p_holm:.3g}" if i.p_holm is not None else "")
    return f"{i.diff:+.2f} [{i.lo:+.2f}, {i.hi:+.2f}] {p}"


def comparison_dict(c: Comparison) -> dict:
    from dataclasses import asdict

    return {"models": c.models, "resamples": c.resamples, "seed": c.seed, "method": RULE,
            "difference": f"<model> - {c.models[0]} on the task-score scale (x100 for ratios, dB)",
            "tasks": [{"task": t.task, "unit": t.unit, "n": t.n, "scores": t.scores,
                       "vs_first": {m: asdict(i) for m, i in t.vs_first.items()}, "seeds": t.seeds} for t in c.tasks],
            "across": {"what": "marble_score" if c.across_is_marble else "mean_task_score",
                       "tasks": [t.task for t in c.tasks], "vs_first": {m: asdict(i) for m, i in c.across.items()}}}


# ------------------------------------------------------------------------------------------------
# tie groups of the leaderboard


@dataclass
class Tie:
    """A cell's (or a MARBLE score's) place in the tie groups: ``group`` True = in the top group (the best, or
    not separable from it), False = separated from the best, None = no group (``why`` says why)."""

    group: bool | None
    why: str | None = None
    best: str | None = None  # the model with the best score (ranked on the shipped probes' test outputs)
    score: float | None = None  # this model's score on the test outputs (task-score scale)
    vs_best: Interval | None = None  # best - this

    def describe(self) -> str:
        """One line for a tooltip or a table note."""
        if self.group is None:
            return f"no tie group: {self.why}"
        if self.vs_best is None:
            return f"top group: best score ({self.score:.2f})"
        i = self.vs_best
        head = "top group: not separable from the best" if self.group else "separated from the best"
        return (f"{head} ({self.best}): {self.best} - this = {i.diff:+.2f}, 95% CI [{i.lo:+.2f}, {i.hi:+.2f}], "
                f"p={i.p:.3g}, Holm-adjusted p={i.p_holm if i.p_holm is not None else i.p:.3g} ({i.resamples} resamples)")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"group": self.group, "why": self.why, "best": self.best, "score": self.score,
                "vs_best": asdict(self.vs_best) if self.vs_best else None}


NO_OUTPUTS_REPORTED = "published numbers carry no per-item test outputs"
NO_OUTPUTS_OLD = "the result carries no per-item test outputs (written by an older marble); re-run `marble probe`"
REDUCED = "reduced protocol or incomplete data: not ranked"
ALONE = "the only result here with per-item outputs on these items: nothing to be tied with"


def _candidate(row, cell) -> str | None:
    """Why a cell cannot be ranked (None: it can)."""
    if row.source == "reported":
        return NO_OUTPUTS_REPORTED
    r = getattr(cell, "result", None) or {}
    if not (r.get("artifacts") or {}).get("test_outputs") or not cell.file:
        return NO_OUTPUTS_OLD
    if cell.deviations:
        return REDUCED
    return None


def assign_ties(rows: list, cards: dict, benchmark: list[str], *, resamples: int = DEFAULT_RESAMPLES,
                seed: int = DEFAULT_SEED, warnings: list[str] | None = None) -> None:
    """Set ``cell.tie`` of every cell and ``row.marble_tie`` of every row (rows of one track at a time), as the
    module docstring describes. Test outputs that do not hash or recompute their score raise
    :class:`marble.results.ResultError` naming the file; with ``warnings`` (a list) that cell is left without a
    group instead and the problem appended."""
    for track in sorted({r.track for r in rows}):
        _assign_track([r for r in rows if r.track == track], cards, benchmark, resamples, seed, warnings)


def _assign_track(rows: list, cards: dict, benchmark: list[str], resamples: int, seed: int,
                  warnings: list[str] | None) -> None:
    from marble.results import ResultError
    from marble.results.artifacts import artifact_errors

    tasks = sorted({t for r in rows for t in r.cells})
    scored: dict[tuple[int, str], Scored] = {}
    for t in tasks:
        for i, row in enumerate(rows):
            cell = row.cells.get(t)
            if cell is None:
                continue
            why = _candidate(row, cell)
            cell.tie = Tie(None, why) if why else None
            if why is None:
                errors = artifact_errors(cell.file, cell.result, cards[t])  # hashes + the score recomputes
                if errors and warnings is None:
                    raise ResultError(cell.file, errors)
                if errors:
                    warnings.append(f"{cell.file}: left out of the tie groups: {errors[0]}")
                    cell.tie = Tie(None, f"its test outputs fail their check ({errors[0]})")
                    continue
                scored[(i, t)] = load_scored(cell.file, cell.result, row.model)
    most = max([sum(1 for key in scored if key[1] == t) for t in tasks] + [len({i for i, _ in scored}), 1])
    B = max(resamples, 40 * (most - 1))  # the most comparisons with one best: the smallest p can pass Holm
    boots: dict[tuple[int, str], tuple[float, np.ndarray]] = {}

    def boot(i: int, t: str):
        if (i, t) not in boots:
            s = scored[(i, t)]
            boots[(i, t)] = task_score_resamples(cards[t], s, sorted(s.outputs.keys), B, seed)
        return boots[(i, t)]

    best_of: dict[str, int] = {}
    for t in tasks:
        cands = [i for i in range(len(rows)) if (i, t) in scored]
        if not cands:
            continue
        sign = 1.0 if cards[t].metrics.direction == "max" else -1.0
        scores = {i: task_score(cards[t], scored[(i, t)]) for i in cands}
        best = max(cands, key=lambda i: (sign * scores[i], -i))
        best_of[t] = best
        others, why = [], {}
        for i in cands:
            if i == best:
                continue
            w = why_not_comparable(scored[(best, t)], scored[(i, t)])
            if w:
                rows[i].cells[t].tie = Tie(None, f"scored on other items than the best ({rows[best].model}): {w}",
                                           rows[best].model, scores[i])
            else:
                others.append(i)
        ints = {}
        for i in others:
            (bfull, bboot), (full_i, boot_i) = boot(best, t), boot(i, t)
            ints[i] = interval(sign * (bfull - full_i), sign * (bboot - boot_i))
        for i, p in zip(others, holm([ints[i].p for i in others])):
            ints[i].p_holm = p
        rows[best].cells[t].tie = (Tie(True, None, rows[best].model, scores[best]) if others else
                                   Tie(None, ALONE, rows[best].model, scores[best]))
        for i in others:
            rows[i].cells[t].tie = Tie(not ints[i].separable, None, rows[best].model, scores[i], ints[i])

    # the MARBLE score: rows whose benchmark tasks are all ranked on the same items as the per-task bests
    full_rows: dict[int, float] = {}
    for i, row in enumerate(rows):
        if row.marble_score is None:
            row.marble_tie = Tie(None, NO_OUTPUTS_REPORTED if row.source == "reported" else
                                 "no MARBLE score (not every benchmark task has a score)")
            continue
        missing = [t for t in benchmark if (i, t) not in scored]
        if missing:
            whys = sorted({row.cells[t].tie.why for t in missing if row.cells[t].tie is not None and row.cells[t].tie.why})
            row.marble_tie = Tie(None, f"tasks {', '.join(missing)} cannot be ranked ({'; '.join(whys) or 'no outputs'})")
            continue
        full_rows[i] = float(np.mean([task_score(cards[t], scored[(i, t)]) for t in benchmark]))
    if not full_rows:
        return
    best = max(full_rows, key=lambda i: (full_rows[i], -i))
    bb = np.mean(np.stack([boot(best, t)[1] for t in benchmark]), axis=0) if len(full_rows) > 1 else None
    others, ints = [], {}
    for i in full_rows:
        if i == best:
            continue
        w = next((f"{t}: {x}" for t in benchmark if (x := why_not_comparable(scored[(best, t)], scored[(i, t)]))), None)
        if w:
            rows[i].marble_tie = Tie(None, f"scored on other items than the best ({rows[best].model}), {w}",
                                     rows[best].model, full_rows[i])
            continue
        others.append(i)
        ints[i] = interval(full_rows[best] - full_rows[i], bb - np.mean(np.stack([boot(i, t)[1] for t in benchmark]), 0))
    for i, p in zip(others, holm([ints[i].p for i in others])):
        ints[i].p_holm = p
    rows[best].marble_tie = (Tie(True, None, rows[best].model, full_rows[best]) if others else
                             Tie(None, ALONE, rows[best].model, full_rows[best]))
    for i in others:
        rows[i].marble_tie = Tie(not ints[i].separable, None, rows[best].model, full_rows[i], ints[i])
