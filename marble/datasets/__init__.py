"""Dataset loaders: ``get_dataset(card)`` returns the loader of the card's ``dataset`` family.

Each loader reads the official on-disk layout below ``<data_dir>/<card.source.subdir>`` and the
shipped split file the card names; ``items(split)`` returns :class:`Item` s, ``check()`` a
per-split report of expected and found counts.
"""

from __future__ import annotations

import importlib
import os

from marble.datasets.base import DataNotFoundError, Item, data_root
from marble.datasets.common import CheckReport, SplitCheck, SplitDataset

# family (the card's ``dataset`` field) -> "module:class"
FAMILIES = {
    "gtzan": "marble.datasets.gtzan:GTZAN",
    "gtzan-beat": "marble.datasets.gtzan_beat:GTZANBeat",
    "mtt": "marble.datasets.mtt:MTT",
    "giantsteps": "marble.datasets.giantsteps:GiantSteps",
    "emomusic": "marble.datasets.emomusic:EmoMusic",
    "nsynth": "marble.datasets.nsynth:NSynth",
    "vocalset": "marble.datasets.vocalset:VocalSet",
    "mtg": "marble.datasets.mtg:MTG",
    "musdb": "marble.datasets.musdb:MUSDB",
    "folder": "marble.datasets.folder:Folder",
}


def get_dataset(card, data_dir: str | os.PathLike | None = None, allow_partial: bool = False) -> SplitDataset:
    """The loader for ``card`` (a :class:`marble.registry.TaskCard`)."""
    if card.dataset not in FAMILIES:
        raise ValueError(f"{card.path}: key 'dataset': unknown dataset family {card.dataset!r} (known: {', '.join(sorted(FAMILIES))})")
    module, cls = FAMILIES[card.dataset].split(":")
    return getattr(importlib.import_module(module), cls)(card, data_dir=data_dir, allow_partial=allow_partial)


def split_items(card, data_dir: str | os.PathLike | None = None, splits=None,
                allow_partial: bool = False) -> tuple[dict[str, list[Item]], dict[str, dict]]:
    """The items of each of ``splits`` (default: the card's) and what each split lists (:meth:`SplitDataset.listed`:
    files listed, those not on disk), for the cache manifest and the result's accounting: one loader reads both."""
    dataset = get_dataset(card, data_dir, allow_partial=allow_partial)
    items = {s: dataset.items(s) for s in (card.splits.names if splits is None else splits)}
    return items, {s: dataset.listed(s) for s in items}


__all__ = ["CheckReport", "DataNotFoundError", "FAMILIES", "Item", "SplitCheck", "SplitDataset", "data_root", "get_dataset",
           "split_items"]
