"""Shipped split and vocabulary files (package data, checksummed in ``data/SHA256SUMS``).

Provenance of every file is in ``README.md`` beside this module; the derivation is
``tools/derive_splits.py`` (reads ``../shared/marble-splits``), so the shipped files can be rebuilt.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from marble.errors import MarbleError
from marble.io import file_sha256

DATA_DIR = Path(__file__).resolve().parent / "data"


class SplitFileError(MarbleError, RuntimeError):
    pass


def data_path(name: str) -> Path:
    """Path of a shipped split file; raises if it is missing or its checksum is wrong."""
    path = DATA_DIR / name
    if not path.exists():
        raise SplitFileError(f"shipped split file {path} is missing: reinstall marble or run tools/derive_splits.py")
    want = checksums().get(name)
    if want is not None and file_sha256(path) != want:
        raise SplitFileError(f"shipped split file {path} does not match its checksum in {DATA_DIR / 'SHA256SUMS'}")
    return path


@lru_cache(maxsize=1)
def checksums() -> dict[str, str]:
    sums = DATA_DIR / "SHA256SUMS"
    if not sums.exists():
        return {}
    out = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip().lstrip("*")] = digest
    return out


@lru_cache(maxsize=None)
def _label_maps() -> dict:
    return json.loads(data_path("label_maps.json").read_text())


def load_vocabulary(card) -> list[str]:
    """Ordered label names of a card (``labels.values`` / ``labels.source`` / ``labels.count``)."""
    labels = card.labels
    if labels.values is not None:
        return list(labels.values)
    if labels.count is not None:
        return [str(i) for i in range(labels.count)]
    file, _, key = labels.source.partition(":")
    if file == "label_maps.json":
        maps = _label_maps()
        if key not in maps or not isinstance(maps[key].get("labels"), list):
            raise SplitFileError(f"{card.path}: labels.source {labels.source!r}: no label list {key!r} in label_maps.json")
        return list(maps[key]["labels"])
    # a user vocabulary file: one label per line, relative to the card
    path = (Path(card.path).parent / file) if card.path else Path(file)
    if not path.exists():
        raise SplitFileError(f"{card.path}: labels.source {labels.source!r}: file {path} not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
