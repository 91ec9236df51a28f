"""Many results at once, for analysis: :class:`Results` and :func:`load_results`.

``Results.to_pandas()`` is the tidy frame of every probe of every result (one row per model, task, track,
layer, learning rate, seed, split and metric), the shape pandas, seaborn and plotting code want::

    model  task   track        layer  weighted  lr     seed  split  metric    value  scale  selected
    tiny   gtzan  constrained  0      False     0.001  1234  valid  accuracy  0.45   100    False
    tiny   gtzan  constrained  <NA>   True      0.001  1234  test   accuracy  0.52   100    True

``layer`` is an integer column (pandas ``Int64``); the learned weighted sum of all layers is kept apart, as
``weighted=True`` with ``layer=<NA>``, so ``df[~df.weighted].groupby("layer")`` is a plain layer curve. ``value``
is on the metric's own scale (a ratio in [0, 1], or dB); ``scale`` is the factor the MARBLE tables use (100 for
ratios, 1 for dB). ``selected`` marks the probe chosen on validation, whose test row is the reported score (per
metric: a task that selects per source, MUSDB, marks each source's metrics on its own row,
:mod:`marble.results.selection`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from marble.results.selection import choice_for, describe, is_row

COLUMNS = ["model", "task", "track", "layer", "weighted", "lr", "seed", "split", "metric", "value", "scale", "selected"]


class Results:
    """Result dicts (schema-validated JSON, one per model x task x track) and where they came from."""

    def __init__(self, results: list[dict], paths: list[Path | None] | None = None, notes: list[str] | None = None):
        self.results = list(results)
        self.paths = list(paths) if paths is not None else [None] * len(self.results)
        #: what reading left unchecked, one ``"<file>: <why>"`` line each (a user task read without its card)
        self.notes = list(notes or [])

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.results)

    def __getitem__(self, key) -> dict:
        """``results[0]``, or ``results["gtzan"]`` / ``results["model", "gtzan"]`` when that is unambiguous."""
        if isinstance(key, int):
            return self.results[key]
        model, task = key if isinstance(key, tuple) else (None, key)
        hits = [r for r in self.results if r["task"] == task and (model is None or r["model"] == model)]
        if len(hits) != 1:
            raise KeyError(f"{key!r}: {len(hits)} results match (have: "
                           f"{', '.join(sorted({r['model'] + '/' + r['task'] for r in self.results})) or 'none'})")
        return hits[0]

    def __repr__(self) -> str:
        return f"Results({len(self)} results: models {self.models}, tasks {self.tasks})"

    @property
    def models(self) -> list[str]:
        return sorted({r["model"] for r in self.results})

    @property
    def tasks(self) -> list[str]:
        return sorted({r["task"] for r in self.results})

    def to_pandas(self):
        """The tidy frame of every probe (see the module docstring for the columns)."""
        import pandas as pd

        from marble.metrics import SCALE

        rows: list[dict[str, Any]] = []
        for r in self.results:
            seed = (r.get("manifest") or {}).get("seed")
            for probe in r.get("sweep") or []:
                weighted = not isinstance(probe["layer"], int)
                for split in ("valid", "test"):
                    for metric, value in (probe.get(split) or {}).items():
                        chosen = is_row(choice_for(r, metric), probe)
                        rows.append({"model": r["model"], "task": r["task"], "track": r["track"],
                                     "layer": None if weighted else probe["layer"], "weighted": weighted,
                                     "lr": float(probe["lr"]), "seed": probe.get("seed", seed), "split": split,
                                     "metric": metric, "value": float("nan") if value is None else float(value),
                                     "scale": SCALE.get(metric, 1.0), "selected": bool(chosen)})
        df = pd.DataFrame(rows, columns=COLUMNS)
        df["layer"] = df["layer"].astype("Int64")
        df["seed"] = df["seed"].astype("Int64")
        df["weighted"] = df["weighted"].astype(bool)
        df["selected"] = df["selected"].astype(bool)
        return df

    def scores(self):
        """One row per result: the selected probe's test value of the task's main metric."""
        import pandas as pd

        rows = []
        for r in self.results:
            sel = r.get("selected") or {}
            rows.append({"model": r["model"], "task": r["task"], "track": r["track"], "metric": r["main_metric"],
                         "value": (r.get("test") or {}).get(r["main_metric"]), "layer": sel.get("layer"),
                         "lr": sel.get("lr"), "selection": describe(r)})
        return pd.DataFrame(rows, columns=["model", "task", "track", "metric", "value", "layer", "lr", "selection"])


def load_results(path: str | os.PathLike, *, check: bool = True, tasks_dir: str | os.PathLike | None = None) -> Results:
    """A result file, or every ``<model>/<task>/<track>.json`` under a results folder (or every result of one
    model's or one task's folder), validated on read. A user task's result reads without its card folder (the
    result records the card's hash): the checks that need the card are skipped and ``Results.notes`` says so;
    pass ``tasks_dir`` to run them."""
    from marble.errors import MarbleError
    from marble.registry import all_cards
    from marble.results import read_result, result_files
    from marble.results.consistency import card_checks_skipped

    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        # a results folder (<model>/<task>/<track>.json), one model's folder, or one task's folder
        files = result_files(path) or sorted(path.glob("*/*.json")) or sorted(path.glob("*.json"))
    else:
        raise MarbleError(f"{path}: no such result file or results folder")
    cards = all_cards(tasks_dir)
    results = [read_result(f, check=check, cards=cards, cardless=True) for f in files]
    notes = [f"{f}: {n}" for f, r in zip(files, results) if (n := card_checks_skipped(r, cards))]
    return Results(results, files, notes)
