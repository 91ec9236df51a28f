"""What identifies a cache's input: checksums of a split's item list and of the shipped split file, the
audio variants its items were read from (recorded in the manifest, compared on resume)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from marble.io import file_sha256


def normalise(obj: Any) -> Any:
    """JSON round trip, so values compare the way they are stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def items_sha256(items: Sequence) -> str:
    """Checksum of a split's item list (uid, file name, label, excerpt, group), independent of
    where the data folder lives."""
    h = hashlib.sha256()
    for it in items:
        row = [it.uid, Path(it.path).name, it.label, it.offset, it.duration, it.group]
        h.update(json.dumps(normalise(row)).encode() + b"\n")
    return h.hexdigest()


def audio_variants(items: Sequence) -> dict[str, int]:
    """How many items were read from each audio variant their loader reports (``extra["audio_variant"]``,
    e.g. MTG's ``audio-low`` / ``full-quality`` mp3s); empty when the loader reports none."""
    counts: dict[str, int] = {}
    for it in items:
        v = (getattr(it, "extra", None) or {}).get("audio_variant")
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))


def split_file_sha256(card, split: str) -> str | None:
    """sha256 of the shipped split file of the card (None for user tasks or a missing file)."""
    try:
        from marble.splits import DATA_DIR

        path = DATA_DIR / card.splits.source.format(split=split)
        return file_sha256(path) if path.is_file() else None
    except Exception:
        return None
