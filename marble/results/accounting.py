"""Per-split file accounting of a result, and whether the scored set is the whole split.

A result records, per split: the files the official split (or the user's table) lists, the files
cached, the files skipped with their reasons (not on disk, unreadable, truncated, too short for a
window) and the files scored. A split whose scored set is not the whole list is **incomplete**
(:func:`incompleteness`): the leaderboard marks it and ``leaderboard check --submission`` rejects
it. The only files a complete result may lack are those its task card excludes by design
(``[splits] excluded``, e.g. a known-corrupt file), which the result lists as such.
"""

from __future__ import annotations

from typing import Any, Iterable

SPLITS = ("train", "valid", "test")
#: a reason shared by more skipped files than this is recorded as one entry with a count and the first
#: ``EXAMPLES`` files: a partial MTG download lists ~55k absent files, which would make a result of tens of MB
#: (more than a result file may hold) to say one thing
GROUP_OVER = 50
EXAMPLES = 20


def n_skipped(entries: Iterable[dict]) -> int:
    """How many files ``skipped`` entries stand for (a grouped entry counts its ``count``)."""
    return sum(int(e.get("count", 1)) if isinstance(e, dict) else 1 for e in entries)


def compact(data: dict | None, excluded: dict | None = None) -> dict | None:
    """``data`` with each split's skipped files grouped per reason when more than :data:`GROUP_OVER` share one.

    Files the card excludes by design stay listed one by one (the completeness check must see each of them)."""
    if not isinstance(data, dict) or not isinstance(data.get("splits"), dict):
        return data
    excluded = {**(data.get("excluded") or {}), **(excluded or {})}
    splits = {}
    for split, info in data["splits"].items():
        entries = list((info or {}).get("skipped") or [])
        if len(entries) <= GROUP_OVER:
            splits[split] = info
            continue
        keep, groups = [], {}
        for e in entries:
            if "count" in e or _excluded(e, excluded):
                keep.append(e)
            else:
                groups.setdefault(str(e.get("reason")), []).append(e)
        for reason, es in groups.items():
            if len(es) <= GROUP_OVER:
                keep += es
            else:
                keep.append({"reason": reason, "count": len(es),
                             "examples": [e.get("file") or e.get("uid") for e in es[:EXAMPLES]]})
        splits[split] = {**info, "skipped": keep}
    return {**data, "splits": splits}


def from_cache(cache_manifest: dict | None, scored: dict[str, Iterable[str]], card) -> dict:
    """The ``data`` block of a result probed on a cache: ``scored`` maps split -> the uids used."""
    splits_info = (cache_manifest or {}).get("splits", {})
    out: dict[str, Any] = {}
    for split, uids in scored.items():
        info = splits_info.get(split, {})
        n_scored = len(set(uids))
        skipped = [{"file": m, "reason": "not on disk (extracted with --allow-partial)"} for m in info.get("missing", [])]
        skipped += [{"file": e.get("file"), "uid": e.get("uid"), "reason": e.get("reason")} for e in info.get("errors", [])]
        n_items = info.get("n_items")
        n_cached = info.get("n_ok", n_items)
        out[split] = {"listed": info.get("n_listed", n_items if n_items is not None else n_scored),
                      "cached": n_cached if n_cached is not None else n_scored,
                      "skipped": skipped, "scored": n_scored}
    return {"splits": out, "excluded": dict(card.splits.excluded)}


def from_items(items: dict[str, list], listed: dict[str, dict] | None, card) -> dict:
    """The ``data`` block of a result computed from dataset items directly (frame tasks)."""
    out = {}
    for split, its in items.items():
        ls = (listed or {}).get(split) or {}
        n = len({it.uid for it in its})
        out[split] = {"listed": ls.get("n_listed", n), "cached": n,
                      "skipped": [{"file": m, "reason": "not on disk (--allow-partial)"} for m in ls.get("missing", [])],
                      "scored": n}
    return {"splits": out, "excluded": dict(card.splits.excluded)}


def reason_kind(reason: str | None) -> str:
    """The kind of a skip reason, for counting: "truncated: decoded 0.65 s but ..." -> "truncated",
    "cannot decode (LibsndfileError: ...)" -> "cannot decode"."""
    return str(reason or "?").split(":")[0].split("(")[0].split(";")[0].strip() or "?"


def reason_counts(entries: Iterable[dict]) -> str:
    """``"truncated 490, cannot decode 5"``: skipped entries counted by reason kind, most frequent first."""
    counts: dict[str, int] = {}
    for e in entries:
        k = reason_kind(e.get("reason"))
        counts[k] = counts.get(k, 0) + int(e.get("count", 1))
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def coverage(result: dict) -> list[str]:
    """One line per split whose scored files are fewer than the files its split lists: how many, and why
    (reasons counted). Empty when every listed file was scored. Printed before a score by ``marble probe`` and
    ``marble run``, so a number computed on part of a split never reads as if computed on all of it."""
    data = result.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("splits"), dict):
        return []
    excluded = dict(data.get("excluded") or {})
    out = []
    for split in SPLITS:
        info = data["splits"].get(split)
        if not isinstance(info, dict):
            continue
        listed, scored = info.get("listed"), info.get("scored")
        if not isinstance(listed, int) or not isinstance(scored, int) or scored >= listed:
            continue
        skipped = list(info.get("skipped") or [])
        by_design = [e for e in skipped if _excluded(e, excluded)]
        lost = [e for e in skipped if not _excluded(e, excluded)]
        why = [reason_counts(lost)] if lost else []
        if by_design:
            why.append(f"excluded by the task card {len(by_design)}")
        other = listed - scored - n_skipped(skipped)
        if other > 0:
            why.append(f"not scored {other}")
        out.append(f"{split}: {scored} of {listed} listed files scored; {listed - scored} not ({', '.join(why)})")
    return out


def _excluded(entry: dict, excluded: dict) -> bool:
    """Whether the card excludes ``entry``'s file by design (a grouped entry names no file: never)."""
    names = {str(entry.get("uid") or ""), str(entry.get("file") or "")}
    return any(n and (n in excluded or any(n.endswith("/" + k) or n == k for k in excluded)) for n in names)


def incompleteness(result: dict, card=None) -> list[str]:
    """Why the scored set of ``result`` is not the whole of its splits (empty: complete).

    Published (``reported``) rows are taken as published."""
    if result.get("source") != "ours":
        return []
    data = result.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("splits"), dict):
        return ["no per-split file accounting ('data'): the result cannot show that it scored every file; re-run "
                "`marble probe` with this version"]
    excluded = dict(data.get("excluded") or {})
    if card is not None:
        excluded.update(card.splits.excluded)
    out = []
    for split in SPLITS:
        info = data["splits"].get(split)
        if info is None:
            out.append(f"split {split}: not accounted for")
            continue
        lost = [e for e in info.get("skipped", []) if not _excluded(e, excluded)]
        if lost:
            reasons = sorted({reason_kind(e.get("reason")) for e in lost})
            first = lost[0].get("file") or lost[0].get("uid") or (lost[0].get("examples") or ["?"])[0]
            out.append(f"split {split}: {n_skipped(lost)} of {info.get('listed')} files not scored ({'; '.join(reasons)}), "
                       f"e.g. {first}")
        elif isinstance(info.get("cached"), int) and info.get("scored", 0) < info["cached"]:
            out.append(f"split {split}: {info['scored']} of {info['cached']} cached files scored")
        elif isinstance(info.get("listed"), int) and info.get("scored", 0) + n_skipped(info.get("skipped", [])) < info["listed"]:
            out.append(f"split {split}: {info.get('scored')} of {info['listed']} listed files scored")
    return out
