"""Does a path stay inside its folder? One answer for every place that takes a path from data it does
not control (archive members, download manifests, metadata tables, task cards).

Two questions, asked in this order: *lexically* (no absolute path, no ``..``, no drive letter: the
string alone is acceptable), and *on disk* (the path with every link followed, including links in its
parent folders, still lies below the folder with its own links followed). The second is what keeps a
delete or a write from landing elsewhere when a folder inside the data root is a symlink out of it.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def relative_inside(rel: str, empty: bool = False) -> str | None:
    """``rel`` normalised to a POSIX relative path, or None if it is absolute, climbs with ``..``, starts with a
    drive (``C:``) or (unless ``empty``: the folder itself, ``""`` or ``.``) is empty; backslashes count as
    separators."""
    p = PurePosixPath(str(rel).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]) or not (p.parts or empty):
        return None
    return str(p)


def outside(root: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """Where ``path`` (absolute, or relative to ``root``) really leads when that is outside ``root``
    (links followed, in the parents and in the last component), else None.

    Ask it before deleting or writing ``path``: ``root/audio -> /elsewhere`` makes ``root/audio/x``
    lead to ``/elsewhere/x``."""
    base = Path(root).resolve()
    full = (Path(root) / path).resolve()
    return None if full == base or full.is_relative_to(base) else full


def parent_outside(root: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """As :func:`outside` for the folder holding ``path``: what matters for ``unlink``/``rename``, which act
    on a link itself rather than on what it points to."""
    base = Path(root).resolve()
    full = Path(root) / path
    parent = full.parent.resolve()
    return None if parent == base or parent.is_relative_to(base) else parent / full.name
