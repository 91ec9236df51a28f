"""The same audio listed twice is refused before anything is extracted: it would be scored twice, or trained on and
tested on.

- :func:`refuse_listed_twice`: an uid twice in a split, or one file (and excerpt) listed twice, by path.
- :func:`refuse_identical_files`: a byte-identical copy of a file under another name in another split.

Reading every file to hash it would double the I/O of extraction on MTG or MTT (tens of GB), so the content check
narrows down first: only files whose size (and excerpt) equals a file's in another split are read at all, first
their first 4 KiB, then their last 4 KiB, and only files that still match are hashed in full (sha256). Distinct
recordings part at the first step or the second (an MP3's first 4 KiB already hold audio frames unless a large ID3
tag comes first; its last 4 KiB do); a true copy is read twice in full. Hard links are copies without a read.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from marble.io import file_sha256

PROBE = 4096


def _error(msg: str):
    from marble.datasets.base import DataFormatError

    return DataFormatError(msg)


def _excerpt(it) -> tuple:
    return float(it.offset or 0.0), None if it.duration is None else float(it.duration)


def refuse_listed_twice(items: dict[str, Sequence]) -> None:
    """The same uid twice in a split, or the same audio (file, excerpt) in two places, by path."""
    seen: dict[tuple, tuple[str, str]] = {}
    for split, its in items.items():
        uids: set[str] = set()
        for it in its:
            if it.uid in uids:
                raise _error(f"{it.path}: item {it.uid!r} appears twice in split {split!r}; each file may be listed "
                             "once (fix the split or metadata file)")
            uids.add(it.uid)
            try:
                where = os.path.realpath(it.path)
            except OSError:
                where = str(it.path)
            key = (where, *_excerpt(it))
            if key in seen:
                other_split, other_uid = seen[key]
                same = "twice in split" if other_split == split else f"in splits {other_split!r} and"
                raise _error(f"{it.path}: the same audio is listed {same} {split!r} (items {other_uid!r} and "
                             f"{it.uid!r}); a file may appear once, in one split (fix the split or metadata file)")
            seen[key] = (split, it.uid)


def _read(path: str, where: str) -> bytes:
    with open(path, "rb") as f:
        if where == "head":
            return f.read(PROBE)
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - PROBE))
        return f.read()


def refuse_identical_files(items: dict[str, Sequence], progress: Callable[[int], object] | None = None) -> int:
    """Refuse a file whose bytes equal a file's in another split (the same excerpt of each), naming both. Returns
    how many files had to be read (for the record). ``progress(total)`` returns a stage to ``update`` while reading
    (``marble.progress.Stage``), called only when something is read."""
    by_key: dict[tuple, list[tuple[str, object, str]]] = {}  # (size, excerpt) -> [(split, item, real path)]
    inode: dict[tuple, tuple[str, object, str]] = {}
    for split, its in items.items():
        for it in its:
            try:
                real = os.path.realpath(it.path)
                st = os.stat(real)
            except OSError:
                continue  # missing or unreadable: the decoder names it
            node = (st.st_dev, st.st_ino, *_excerpt(it))
            if node in inode and inode[node][0] != split:  # a hard link: the same bytes by definition
                _refuse(inode[node], (split, it, real))
            inode.setdefault(node, (split, it, real))
            by_key.setdefault((st.st_size, *_excerpt(it)), []).append((split, it, real))
    groups = [g for g in by_key.values() if len({s for s, _, _ in g}) > 1 and len({r for _, _, r in g}) > 1]
    n_read = sum(len(g) for g in groups)
    if not groups:
        return 0
    stage = progress(n_read) if progress is not None else None
    try:
        for group in groups:
            n = len(group)
            candidates = [group]
            for step in ("head", "tail", "all"):  # narrow down: 4 KiB, 4 KiB, then the whole file
                narrowed = []
                for cand in candidates:
                    parts: dict[object, list] = {}
                    for entry in cand:
                        try:
                            key = file_sha256(entry[2]) if step == "all" else _read(entry[2], step)
                        except OSError:
                            continue
                        parts.setdefault(key, []).append(entry)
                    narrowed += [part for part in parts.values() if len({s for s, _, _ in part}) > 1]
                candidates = narrowed
            for same in candidates:  # byte-identical files listed in different splits
                _refuse(same[0], next(e for e in same if e[0] != same[0][0]))
            if stage is not None:
                stage.update(n)
    finally:
        if stage is not None:
            stage.close()
    return n_read


def _refuse(a: tuple, b: tuple) -> None:
    (sa, ia, _), (sb, ib, _) = a, b
    raise _error(f"{ib.path}: byte-identical to {ia.path}, which split {sa!r} lists (items {ia.uid!r} in {sa!r} and "
                 f"{ib.uid!r} in {sb!r}); a recording may appear in one split only: remove one of them from the split "
                 "or metadata file")
