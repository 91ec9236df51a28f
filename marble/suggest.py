""""Did you mean ...?" for a mistyped name (a task id, a model spelling): a case slip (``GTZAN``,
``MERT-v1-95m``) is matched first, then close spellings (``handcraftd``). A leaf module: no marble imports."""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping


def close_names(word: str, candidates: Iterable[str] | Mapping[str, str], n: int = 3, cutoff: float = 0.75) -> list[str]:
    """The candidates ``word`` most likely meant, best first. ``candidates`` may map an alias to the spelling to
    suggest (``{"MERT-v1-95M": "m-a-p/MERT-v1-95M"}``), so a bare model name finds its hub id."""
    aliases = dict(candidates) if isinstance(candidates, Mapping) else {c: c for c in candidates}
    lowered: dict[str, str] = {}
    for alias, spelling in aliases.items():
        lowered.setdefault(str(alias).lower(), spelling)
    key = str(word).lower()
    if key in lowered:  # a case slip
        return [lowered[key]]
    found = difflib.get_close_matches(key, list(lowered), n=n * 2, cutoff=cutoff)
    return list(dict.fromkeys(lowered[f] for f in found))[:n]


def did_you_mean(word: str, candidates: Iterable[str] | Mapping[str, str]) -> str:
    """``" Did you mean 'x'?"`` (or ``"'x' or 'y'"``), or ``""`` when nothing is close."""
    close = close_names(word, candidates)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


__all__ = ["close_names", "did_you_mean"]
