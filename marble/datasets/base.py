"""The dataset contract: a loader yields :class:`Item` s for a split of a task.

A loader knows its dataset's official on-disk layout below ``<data_dir>/<card.source.subdir>``
and the shipped split file named by the card. Missing or incomplete data raises
:class:`DataNotFoundError` naming the expected path, what is missing (counts) and where the data
comes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from marble.errors import MarbleError


class DataNotFoundError(MarbleError, FileNotFoundError):
    pass


class DataFormatError(MarbleError, ValueError):
    """A metadata or split file that cannot be used as is (bad row, unknown label, a path leaving the
    dataset folder); the message names the file and the row."""


@dataclass(frozen=True)
class Item:
    """One audio file (or excerpt) of a split.

    ``uid`` is unique within the task and split and is the unit of per-file scoring (window
    logits are averaged per uid). ``label`` is an int class index (multiclass), a list of class
    indices (multilabel), a list of floats (regression) or ``None`` for frame tasks, whose
    annotations live in ``extra``. ``group`` is the unit of song-level scoring (GS) when not
    the uid itself. ``offset``/``duration`` select an excerpt in seconds (crop before resample).
    """

    uid: str
    path: Path
    label: Any = None
    offset: float = 0.0
    duration: float | None = None
    group: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def data_root(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir``, else ``$MARBLE_DATA_DIR``, else ``./data`` (:mod:`marble.settings`)."""
    from marble.settings import data_dir as _data_dir

    return _data_dir(data_dir)


def label_array(card, items: Sequence[Item]) -> np.ndarray:
    """The labels of ``items`` as one array, as caches store them and probes read them: int64 class indices [N]
    (multiclass) | uint8 multi-hot [N, C] (multilabel) | float32 [N, D] (regression); a bad label raises ValueError."""
    n = len(items)
    if card.prediction == "multiclass":
        out = np.empty(n, np.int64)
        for i, it in enumerate(items):
            if isinstance(it.label, bool) or not isinstance(it.label, (int, np.integer)):
                raise ValueError(f"{it.path}: item {it.uid!r} has label {it.label!r}; a multiclass task needs a class index")
            out[i] = it.label
        return out
    if card.prediction == "multilabel":
        c = card.num_outputs
        out = np.zeros((n, c), np.uint8)
        for i, it in enumerate(items):
            idx = list(it.label) if it.label is not None else None
            if idx is None or any(not 0 <= int(j) < c for j in idx):
                raise ValueError(f"{it.path}: item {it.uid!r} has label {it.label!r}; a multilabel task needs class indices in 0..{c - 1}")
            out[i, [int(j) for j in idx]] = 1
        return out
    if card.prediction == "regression":
        rows = []
        for it in items:
            if it.label is None:
                raise ValueError(f"{it.path}: item {it.uid!r} has no regression target")
            rows.append(np.asarray(it.label, np.float32).reshape(-1))
        if len({r.shape for r in rows}) > 1:
            raise ValueError(f"task {card.id}: regression targets have different lengths")
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    return np.zeros(n, np.int64)  # frame tasks: labels live with the dataset, not the cache
