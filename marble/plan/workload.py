"""What one task asks of a model: its items per split, their audio seconds and the encoder windows they make.

With the data on disk the items are exactly the ones ``marble run`` extracts (the same dataset loader, the
same ``--allow-partial`` rule) and each item's length comes from its file header (nothing is decoded). Without
the data the counts come from the official lists (the shipped split files, or the count the loader knows) and
the lengths from the nominal durations below; such a row says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

#: typical seconds per listed file where the data is not on disk (before the card's crop); MTG's come from the
#: shipped split files' DURATION column (the mean over the task's tracks)
NOMINAL_SECONDS = {
    "gtzan": 30.0,  # 30 s clips
    "gtzan-beat": 30.0,
    "mtt": 29.1,  # MagnaTagATune clips
    "giantsteps": 30.0,  # items are 30 s clips of the 2-minute previews
    "emomusic": 45.0,  # 45 s clips (the card keeps the first 30 s)
    "nsynth": 4.0,  # 4 s notes
    "vocalset": 3.0,  # items are 3 s chunks
    "musdb": 236.0,  # MUSDB18: about 10 h for 150 tracks
}


@dataclass
class SplitLoad:
    """One split: ``items`` (what extraction counts as files; None: unknown without the data), their audio
    seconds after the card's crop, and the encoder windows as {window length in samples: count}."""

    split: str
    items: int | None
    seconds: float
    windows: dict[int, int] = field(default_factory=dict)
    cached: bool = True  # False: a frame task's training split, encoded on the fly by the probe


@dataclass
class TaskLoad:
    task: str
    card: object
    source: str  # "data" (the files on disk) | "official list" | "unknown"
    splits: dict[str, SplitLoad]
    note: str = ""

    @property
    def items(self) -> int | None:
        n = [s.items for s in self.splits.values()]
        return None if any(x is None for x in n) else sum(n)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.splits.values())


def item_seconds(card, item, file_seconds: float | None) -> float:
    """Seconds of audio extraction reads for ``item`` (the excerpt, then the card's crop, PROTOCOL §2)."""
    a = card.audio
    lengths = []
    if item.duration is not None:
        lengths.append(float(item.duration))
    elif file_seconds is not None:
        lengths.append(max(file_seconds - float(item.offset or 0.0), 0.0))
    left = [x - a.crop_offset_seconds for x in lengths] or [float("inf")]
    if a.crop_seconds is not None:
        left.append(a.crop_seconds)
    s = min(left)
    return max(s, 0.0) if math.isfinite(s) else 0.0


def add_windows(windows: dict[int, int], card, seconds: float, sample_rate: int, max_chunk_seconds: float = 60.0) -> None:
    """The windows (and the chunks of windows longer than ``max_chunk_seconds``) extraction cuts from one item
    (``marble.audio.windows``; frame tasks keep whole tracks, encoded in pieces)."""
    from marble.audio import windows as cut

    n = int(round(seconds * sample_rate))
    if n <= 0:
        return
    a = card.audio
    wins = cut(n, sample_rate, a.window_seconds if card.is_clip_level else None, a.min_window_seconds)
    max_len = max(1, int(round(max_chunk_seconds * sample_rate)))
    for s, b in wins:
        k = max(1, math.ceil((b - s) / max_len))
        edges = [s + round(i * (b - s) / k) for i in range(k + 1)]
        for lo, hi in zip(edges[:-1], edges[1:]):
            windows[hi - lo] = windows.get(hi - lo, 0) + 1


def _nominal(card) -> float | None:
    if card.dataset == "mtg":  # the official TSVs: TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION, TAGS...
        from marble.datasets.splitfiles import read_text

        durations = []
        for split in card.splits.names:
            lines = [ln for ln in read_text(card.splits.source.format(split=split)).splitlines() if ln.strip()]
            durations += [float(ln.split("\t")[4]) for ln in lines[1:]]
        return sum(durations) / len(durations) if durations else None
    return NOMINAL_SECONDS.get(card.dataset)


def task_load(card, data_dir, sample_rate: int, allow_partial: bool = False, progress=None) -> TaskLoad:
    """The load of ``card``: from the data when ``marble run`` would find it, else from the official lists."""
    from marble.audio import AudioError, info
    from marble.datasets import get_dataset
    from marble.errors import MarbleError

    dataset = get_dataset(card, data_dir, allow_partial=allow_partial)
    train_on_the_fly = not card.is_clip_level and bool(card.audio.train_chunk_seconds)
    try:
        items = {s: dataset.items(s) for s in card.splits.names}
    except MarbleError:
        return _official(card, dataset, sample_rate, train_on_the_fly)
    splits = {}
    headers: dict[Path, float | None] = {}
    for s, its in items.items():
        load = SplitLoad(s, len(its), 0.0, {}, cached=not (train_on_the_fly and s == "train"))
        for it in its:
            p = Path(it.path)
            if p not in headers and it.duration is None:
                try:
                    sr, n = info(p)
                    headers[p] = n / sr
                except AudioError:
                    headers[p] = None  # extraction will skip it, and say so
            sec = item_seconds(card, it, headers.get(p))
            load.seconds += sec
            if load.cached:
                add_windows(load.windows, card, sec, sample_rate)
            if progress is not None:
                progress()
        splits[s] = load
    return TaskLoad(card.id, card, "data", splits)


def _official(card, dataset, sample_rate: int, train_on_the_fly: bool) -> TaskLoad:
    """Counts from the official lists (no data on disk), lengths from :data:`NOMINAL_SECONDS`."""
    from marble.errors import MarbleError

    nominal = _nominal(card)
    try:
        report = dataset.check()
    except (MarbleError, OSError) as e:
        return TaskLoad(card.id, card, "unknown", {}, f"no data and no official list ({e})")
    splits = {}
    for row in report.splits:
        n = row.expected
        if n is not None and card.dataset == "giantsteps":
            n = len(dataset.expected(row.split))  # items are clips; the check counts songs
        load = SplitLoad(row.split, n, 0.0, {}, cached=not (train_on_the_fly and row.split == "train"))
        if n is not None and nominal is not None:
            class _It:  # an item of nominal length
                duration, offset = nominal, 0.0

            sec = item_seconds(card, _It, None)
            load.seconds = n * sec
            if load.cached:
                one: dict[int, int] = {}
                add_windows(one, card, sec, sample_rate)
                load.windows = {k: v * n for k, v in one.items()}
        splits[row.split] = load
    unknown = [s for s, x in splits.items() if x.items is None]
    note = f"{', '.join(unknown)}: no official count without the data" if unknown else ""
    return TaskLoad(card.id, card, "official list", splits, note)
