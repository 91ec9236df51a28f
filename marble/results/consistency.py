"""Checks a schema-valid result against its task card and against itself.

The schema says a result is well formed; these checks say it is *honest*: the task exists (at the
card's version or an older one: older results stay readable, and ``marble.results.conformance``
marks them), the metrics are the card's, and the reported ``selected``/``valid``/``test`` are
exactly the sweep row with the best validation main score (so a hand-edited number, or a
configuration picked on test, is caught). A task that selects per source (MUSDB, card
``metrics.per_source``) reports each source's metrics from its own best-on-validation row and the
main metric as their mean.
"""

from __future__ import annotations

import math
from typing import Any

REL_TOL = 1e-9
ABS_TOL = 1e-12


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _metrics_equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(_close(a[k], b[k]) for k in a)


def _valid_score(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _out_of_range(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be a score of metric ``name`` (None: it can)."""
    from marble.metrics import RANGE

    if name not in RANGE or not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    lo, hi = RANGE[name]
    if math.isnan(value) or value < lo - ABS_TOL or value > hi + ABS_TOL:
        span = f"[{lo:g}, {hi:g}]" if math.isfinite(lo) else f"at most {hi:g}"
        return f"{value} is outside the range of {name} ({span}; ratios are stored in 0..1, not x100)"
    return None


def range_errors(result: dict) -> list[str]:
    """Every metric value of the result (selected, sweep rows, seeds and their interval) within its
    metric's range: an accuracy of 1.7 or a confidence interval reaching past 1 is refused."""
    out = []
    blocks = [("valid", result.get("valid")), ("test", result.get("test"))]
    blocks += [(f"sweep[{i}].{s}", row.get(s)) for i, row in enumerate(result.get("sweep") or []) for s in ("valid", "test")]
    for where, metrics in blocks:
        for name, value in (metrics or {}).items():
            why = _out_of_range(name, value)
            if why:
                out.append(f"field '{where}.{name}': {why}")
    seeds = result.get("seeds") or {}
    metric = seeds.get("metric")
    for key in ("values", "ci95"):
        for i, value in enumerate(seeds.get(key) or []):
            why = _out_of_range(metric, value)
            if why:
                out.append(f"field 'seeds.{key}[{i}]': {why}")
    why = _out_of_range(metric, seeds.get("mean"))
    if why:
        out.append(f"field 'seeds.mean': {why}")
    return out


def check_consistency(result: dict, cards: dict, *, cardless: bool = False) -> list[str]:
    """Problems as ``"field '<path>': <message>"`` strings (empty when consistent).

    ``cards`` maps task id -> :class:`marble.registry.TaskCard` (``marble.registry.all_cards()``).
    ``result`` must already be schema-valid. ``cardless``: a computed result of a user task whose card is not in
    ``cards`` is checked by itself only (:func:`card_checks_skipped`), not refused as an unknown task.
    """
    task = result["task"]
    card = cards.get(task)
    if card is None and cardless and user_task_result(result):
        # a user task whose card folder is not given: its own checks (metric names, selection on validation,
        # sweep, seeds) only; card_checks_skipped says what was left out
        per_source = {k: list(v.get("metrics") or []) for k, v in (result["selected"].get("per_source") or {}).items()}
        m = _Metrics(result["main_metric"], result["direction"], tuple(result["test"]), per_source)
        return range_errors(result) + _self_consistency(result, m)
    if card is None:
        from marble.suggest import did_you_mean

        return [f"field 'task': unknown task {task!r};{did_you_mean(task, list(cards))} known tasks: {', '.join(sorted(cards))} "
                "(user tasks need --tasks-dir)"]
    errors: list[str] = []
    m = card.metrics
    if "task_version" in result and result["task_version"] > card.version:
        errors.append(f"field 'task_version': {result['task_version']} but the task card {card.path} is version "
                      f"{card.version}; re-run the probe with the current card (or update marble)")
    if result.get("protocol") is not None and result["protocol"] != card.protocol:
        errors.append(f"field 'protocol': {result['protocol']!r} but the task card says {card.protocol!r}")
    if result["main_metric"] != m.main:
        errors.append(f"field 'main_metric': {result['main_metric']!r} but the card's main metric is {m.main!r}")
    if result["direction"] != m.direction:
        errors.append(f"field 'direction': {result['direction']!r} but the card says {m.direction!r}")

    errors += range_errors(result)
    names = set(m.names)
    if result["source"] == "reported":
        extra = sorted(set(result["test"]) - names)
        if extra:
            errors.append(f"field 'test': metric(s) {', '.join(extra)} are not the card's metrics ({', '.join(m.names)})")
        return errors
    return errors + _self_consistency(result, m, stop_after_names=bool(errors), card_version=card.version)


class _Metrics:
    """What the self-consistency checks need of a card's metrics, taken from a result without its card."""

    def __init__(self, main: str, direction: str, names: tuple, per_source: dict):
        self.main, self.direction, self.names, self.per_source = main, direction, names, per_source


def user_task_result(result: dict) -> bool:
    """A computed result of a task this toolkit does not ship (it records its card's hash): readable without the
    card, with the checks that need the card skipped (:func:`card_checks_skipped`)."""
    from marble.registry import builtin_cards_dir

    sha = (result.get("manifest") or {}).get("task_sha256")
    return (result.get("source") == "ours" and isinstance(sha, str) and bool(sha)
            and not (builtin_cards_dir() / f"{result.get('task')}.toml").exists())


def card_checks_skipped(result: dict, cards: dict) -> str | None:
    """The note a reader of a user task's result gets when its card is not loaded (None when it is)."""
    if result.get("task") in cards or not user_task_result(result):
        return None
    return (f"task {result['task']!r} is a user task whose card is not loaded (card sha256 "
            f"{result['manifest']['task_sha256'][:12]}...): checks against the card (card version, metric names, "
            "protocol, data completeness) skipped; pass --tasks-dir (or set $MARBLE_TASKS_DIR) to run them")


def _self_consistency(result: dict, m, *, stop_after_names: bool = False, card_version: int | None = None) -> list[str]:
    """What a result must satisfy by itself, given its metrics ``m`` (``main``, ``direction``, ``names``,
    ``per_source``) and its card's version (None: the card is not loaded). ``stop_after_names``: other problems
    were found, so only the metric names are checked (as before)."""
    errors: list[str] = []
    task = result["task"]
    names = set(m.names)

    def check_names(metrics: dict, where: str) -> None:
        if set(metrics) != names:
            missing, extra = sorted(names - set(metrics)), sorted(set(metrics) - names)
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(extra)}"] if extra else [])
            errors.append(f"field '{where}': metrics must be the card's ({', '.join(m.names)}): {'; '.join(parts)}")

    check_names(result["valid"], "valid")
    check_names(result["test"], "test")
    for split in ("valid", "test"):  # other metrics may be null (not computed), the main one never
        if m.main in result[split] and not isinstance(result[split][m.main], (int, float)):
            errors.append(f"field '{split}.{m.main}': the main metric must be a number, got {result[split][m.main]!r}")
    sweep = result["sweep"]
    for i, row in enumerate(sweep):
        check_names(row["valid"], f"sweep[{i}].valid")
        check_names(row["test"], f"sweep[{i}].test")
    if errors or stop_after_names:
        return errors

    sel = result["selected"]
    current = card_version is not None and result.get("task_version", card_version) == card_version
    if "per_source" in sel:
        if not m.per_source:
            return [f"field 'selected.per_source': task {task!r} selects one (layer, LR) row (its card has no "
                    "metrics.per_source)"]
        errors += _per_source_errors(result, m)
    elif m.per_source and current:
        return [f"field 'selected': task {task!r} (card version {card_version}) selects a (layer, LR) per source "
                "(metrics.per_source); a single row is the selection of an older card version"]
    else:
        errors += _row_errors(result, m)
    return errors + _sweep_errors(result, m)


def _row_errors(result: dict, m) -> list[str]:
    """selected == the best valid row of the sweep, and valid/test are copied from it unchanged."""
    errors: list[str] = []
    sweep, sel, main = result["sweep"], result["selected"], m.main
    scored = [(i, _valid_score(r["valid"].get(main))) for i, r in enumerate(sweep)]
    scored = [(i, s) for i, s in scored if s is not None]
    if not scored:
        return [f"field 'sweep': no row has a valid {main} score"]
    best = (max if m.direction == "max" else min)(s for _, s in scored)
    rows = [i for i, r in enumerate(sweep) if r["layer"] == sel["layer"] and _close(r["lr"], sel["lr"])
            and r.get("group_rule", sel["group_rule"]) == sel["group_rule"]]
    if not rows:
        errors.append(f"field 'selected': (layer {sel['layer']!r}, lr {sel['lr']}) is not a row of the sweep")
        return errors
    row = sweep[rows[0]]
    where = f"sweep[{rows[0]}]"
    if not _close(sel["valid_score"], row["valid"][main]):
        errors.append(f"field 'selected.valid_score': {sel['valid_score']} but {where}.valid.{main} is {row['valid'][main]}")
    if not _close(sel["valid_score"], best):
        errors.append(f"field 'selected': valid {main} {sel['valid_score']} is not the best of the sweep ({best}); "
                      "the configuration must be chosen on validation")
    for k in ("best_epoch", "epochs"):
        if sel[k] != row[k]:
            errors.append(f"field 'selected.{k}': {sel[k]} but {where}.{k} is {row[k]}")
    for split in ("valid", "test"):
        for name, value in result[split].items():
            if not _close(value, row[split][name]):
                errors.append(f"field '{split}.{name}': {value} differs from the selected sweep row "
                              f"({where}.{split}.{name} = {row[split][name]})")
    return errors


def _per_source_errors(result: dict, m) -> list[str]:
    """Each source's (layer, LR) is the sweep row with the best validation score of that source's
    first metric; its metrics in valid/test are copied from that row; the main metric is the mean of
    the sources' first metrics, and selected.valid_score is its validation value."""
    errors: list[str] = []
    sweep, sel, main = result["sweep"], result["selected"], m.main
    chosen = sel["per_source"]
    if sorted(chosen) != sorted(m.per_source):
        return [f"field 'selected.per_source': sources {sorted(chosen)} but the card's are {sorted(m.per_source)}"]
    for source, names in m.per_source.items():
        c, first = chosen[source], names[0]
        if list(c["metrics"]) != list(names):
            errors.append(f"field 'selected.per_source.{source}.metrics': {c['metrics']} but the card's are {names}")
        rows = [i for i, r in enumerate(sweep) if r["layer"] == c["layer"] and _close(r["lr"], c["lr"])]
        if not rows:
            errors.append(f"field 'selected.per_source.{source}': (layer {c['layer']!r}, lr {c['lr']}) is not a row of "
                          "the sweep")
            continue
        row, where = sweep[rows[0]], f"sweep[{rows[0]}]"
        scores = [s for s in (_valid_score(r["valid"].get(first)) for r in sweep) if s is not None]
        if not scores:
            errors.append(f"field 'sweep': no row has a valid {first} score")
            continue
        best = (max if m.direction == "max" else min)(scores)
        if not _close(c["valid_score"], row["valid"][first]):
            errors.append(f"field 'selected.per_source.{source}.valid_score': {c['valid_score']} but "
                          f"{where}.valid.{first} is {row['valid'][first]}")
        if not _close(c["valid_score"], best):
            errors.append(f"field 'selected.per_source.{source}': valid {first} {c['valid_score']} is not the best of "
                          f"the sweep ({best}); each source's configuration must be chosen on validation")
        for split in ("valid", "test"):
            for name in names:
                if not _close(result[split][name], row[split][name]):
                    errors.append(f"field '{split}.{name}': {result[split][name]} differs from the row selected for "
                                  f"{source} ({where}.{split}.{name} = {row[split][name]})")
    for split in ("valid", "test"):
        parts = [result[split][names[0]] for names in m.per_source.values()]
        if any(not isinstance(p, (int, float)) for p in parts):
            errors.append(f"field '{split}': every source's {', '.join(n[0] for n in m.per_source.values())} must be "
                          "a number")
            continue
        mean = sum(parts) / len(parts)
        if not math.isclose(result[split][main], mean, rel_tol=1e-9, abs_tol=1e-9):
            errors.append(f"field '{split}.{main}': {result[split][main]} is not the mean of the selected sources' "
                          f"scores ({mean})")
    if not _close(sel["valid_score"], result["valid"][main]):
        errors.append(f"field 'selected.valid_score': {sel['valid_score']} but valid.{main} is {result['valid'][main]}")
    return errors


def _sweep_errors(result: dict, m) -> list[str]:
    """The sweep's grid and layers, the weighted-sum weights and the seeds' summary."""
    errors: list[str] = []
    sweep = result["sweep"]
    names = set(m.names)
    grid = (result.get("training") or {}).get("learning_rates")
    if result["track"] == "constrained" and isinstance(grid, list) and grid:
        for i, r in enumerate(sweep):
            if not any(_close(r["lr"], g) for g in grid):
                errors.append(f"field 'sweep[{i}].lr': {r['lr']} is not in training.learning_rates {grid}")
    num_states = ((result.get("manifest") or {}).get("encoder") or {}).get("num_states")
    if isinstance(num_states, int):
        for i, r in enumerate(sweep):
            if isinstance(r["layer"], int) and r["layer"] >= num_states:
                errors.append(f"field 'sweep[{i}].layer': {r['layer']} but the encoder has {num_states} states (0..{num_states - 1})")

    ws = result.get("weighted_sum")
    if ws is not None:
        if not any(r["layer"] == "weighted" and _close(r["lr"], ws["lr"]) for r in sweep):
            errors.append(f"field 'weighted_sum.lr': {ws['lr']} has no weighted row in the sweep")
        total = sum(ws["weights"])
        if not math.isclose(total, 1.0, abs_tol=1e-3):
            errors.append(f"field 'weighted_sum.weights': softmax weights sum to {total:.6f}, not 1")
        if isinstance(num_states, int) and len(ws["weights"]) != num_states - 1:
            errors.append(f"field 'weighted_sum.weights': {len(ws['weights'])} weights but the encoder has "
                          f"{num_states - 1} states 1..L")

    seeds = result.get("seeds")
    if seeds is not None:
        n = seeds["n"]
        if len(seeds["values"]) != n or len(seeds["seeds"]) != n:
            errors.append(f"field 'seeds': n = {n} but {len(seeds['seeds'])} seeds and {len(seeds['values'])} values")
        elif not math.isclose(seeds["mean"], sum(seeds["values"]) / n, rel_tol=1e-6, abs_tol=1e-9):
            errors.append(f"field 'seeds.mean': {seeds['mean']} is not the mean of seeds.values")
        if seeds["metric"] not in names:
            errors.append(f"field 'seeds.metric': {seeds['metric']!r} is not a metric of the card ({', '.join(m.names)})")
    return errors
