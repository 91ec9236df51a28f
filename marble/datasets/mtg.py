"""MTG-Jamendo split-0 (``mtg/autotagging_<task>-{split}.tsv``, official TSVs, CRLF).

Audio: ``audio-low/NN/ID.low.mp3`` (the low-quality download MARBLE v1 uses), also ``NN/ID.low.mp3``,
``audio/NN/ID.mp3`` and ``NN/ID.mp3`` (full-quality download), the first present one per track. Which
one a track was read from is not silent: ``item.extra["audio_variant"]`` says ``audio-low`` or
``full-quality``, and the cache manifest counts them per split. Labels = tag indices by the card's
vocabulary.
"""

from __future__ import annotations

import os

from marble.datasets.base import Item
from marble.datasets.common import SplitDataset
from marble.datasets.splitfiles import read_text


def parse_split_tsv(text: str) -> list[tuple[str, str, list[str]]]:
    """(track id, PATH, tags) rows: tab-separated, tags are columns 6.. (the official format)."""
    rows = []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for ln in lines[1:]:
        cols = ln.rstrip("\r").split("\t")
        rows.append((cols[0], cols[3], [t for t in cols[5:] if t]))
    return rows


class MTG(SplitDataset):
    layout = "audio-low/NN/ID.low.mp3 (or NN/ID.mp3 of the full-quality download)"

    def expected(self, split: str) -> list[Item]:
        name = self.card.splits.source.format(split=split)
        layouts = [("audio-low", True), ("", True), ("audio", False), ("", False)]
        # one directory listing per existing NN folder instead of a stat per candidate
        present: set[str] = set()
        for sub, _ in layouts:
            base = self.root / sub
            if base.is_dir():
                for nn in os.listdir(base):
                    if len(nn) == 2 and (base / nn).is_dir():
                        present.update(f"{sub}/{nn}/{f}" if sub else f"{nn}/{f}" for f in os.listdir(base / nn))
        out, idx = [], self.index
        for tid, rel, tags in parse_split_tsv(read_text(name)):
            low = rel[:-4] + ".low.mp3" if rel.endswith(".mp3") else rel
            cands = [f"{sub}/{low if is_low else rel}" if sub else (low if is_low else rel) for sub, is_low in layouts]
            k = next((i for i, c in enumerate(cands) if c in present), 0)
            hit, variant = cands[k], "audio-low" if layouts[k][1] else "full-quality"
            try:
                label = sorted(idx[t] for t in tags)
            except KeyError as e:
                raise ValueError(f"{name}: {tid}: tag {e.args[0]!r} is not in the vocabulary of task {self.card.id!r}") from None
            out.append(Item(uid=tid, path=self.root / hit, label=label, extra={"audio_variant": variant}))
        return out
