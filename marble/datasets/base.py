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
from typing import Any

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
