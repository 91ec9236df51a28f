"""Result files: one JSON per (model, task, track), validated on write and on read.

``write_result`` / ``read_result`` check the schema (``leaderboard/result.schema.json``) and,
unless ``check=False``, the consistency of the result with its task card and its own sweep
(:mod:`marble.results.consistency`), and that a computed result still matches the seal
(``manifest.content_sha256``) its writer put on it. Every problem raises :class:`ResultError` naming the file
and the field, e.g. ``results/x/gtzan/constrained.json: field 'test.accuracy': 'abc' is not of
type 'number'``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from marble.results.schema import data_dir, result_schema, schema_errors
from marble.errors import MarbleError

SCHEMA_VERSION = 1
TRACKS = ("constrained", "semi-constrained", "unconstrained")


class ResultError(MarbleError, ValueError):
    """A result file is malformed or inconsistent; ``errors`` lists every problem found."""

    def __init__(self, path: str | os.PathLike | None, errors: list[str]):
        self.path = str(path) if path is not None else "<result>"
        self.errors = list(errors)
        super().__init__("\n".join(f"{self.path}: {e}" for e in self.errors))


def result_path(results_dir: str | os.PathLike, model: str, task: str, track: str) -> Path:
    """``<results_dir>/<encoder-slug>/<task>/<track>.json``."""
    from marble.io import slug

    return Path(results_dir) / slug(model) / task / f"{track}.json"


SEAL = "content_sha256"
#: the largest result file read: the biggest real result (a 25-state model on an MTG task, with its skipped-file
#: lists) is ~0.2 MB; a bound keeps a padded or inflated file (100 MB of whitespace still seals) off a leaderboard
MAX_RESULT_BYTES = 8 * 2**20


#: the order of a result file's top-level keys: the summary a reader looks for first, then how it was chosen
#: (the sweep), then the record of how it was made, the long per-file lists (``data``) last; keys not named here
#: (a newer writer's) go before ``manifest``, sorted
FIRST_KEYS = ("task", "model", "track", "selected", "test", "valid", "main_metric", "direction", "scales", "source",
              "task_version", "protocol", "schema_version", "seeds", "weighted_sum", "sweep", "head", "training",
              "reference")
LAST_KEYS = ("manifest", "artifacts", "data")


def _readable(value: Any) -> Any:
    """Nested dicts with their plain values first and their lists and dicts after, each group sorted by key: a
    split's counts read before its skipped-file list, a sweep row's layer and lr before its metrics."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (isinstance(value[k], (dict, list)), str(k)))
        return {k: _readable(value[k]) for k in keys}
    if isinstance(value, list):
        return [_readable(v) for v in value]
    return value


def result_bytes(result: dict) -> bytes:
    """The canonical file form of a result: what the writer writes and what ``marble submit`` commits (never the
    submitter's bytes, so padding or odd formatting cannot enter a leaderboard). Written for a reader: the summary
    first (task, model, track, selected, test, valid), the sweep after it, the per-file lists last
    (:data:`FIRST_KEYS`, :data:`LAST_KEYS`). The seal does not depend on this form or its key order
    (:func:`content_digest` hashes sorted-key JSON), so the layout may change freely."""
    rank = {k: i for i, k in enumerate(FIRST_KEYS)}
    rank.update({k: len(FIRST_KEYS) + 1 + i for i, k in enumerate(LAST_KEYS)})
    keys = sorted(result, key=lambda k: (rank.get(k, len(FIRST_KEYS)), str(k)))
    ordered = {k: _readable(result[k]) for k in keys}
    return (json.dumps(ordered, indent=2, default=str) + "\n").encode()


def content_digest(result: dict) -> str:
    """sha256 of ``result``'s canonical JSON (sorted keys, no spaces) without ``manifest.content_sha256``:
    the seal marble's writer puts on every computed result, so an edit made after writing shows."""
    import hashlib

    manifest = {k: v for k, v in (result.get("manifest") or {}).items() if k != SEAL}
    body = dict(result, manifest=manifest) if "manifest" in result else result
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def seal_errors(result: dict) -> list[str]:
    """A sealed result whose content no longer matches its seal (empty when it matches or is unsealed)."""
    sealed = (result.get("manifest") or {}).get(SEAL) if isinstance(result, dict) else None
    if sealed is None:
        return []
    actual = content_digest(result)
    if sealed == actual:
        return []
    return [f"field 'manifest.{SEAL}': the file was edited after marble wrote it (content sha256 {actual[:12]}..., "
            f"sealed {sealed[:12]}...); results are not edited by hand: re-run `marble probe`"]


def result_files(results_dir: str | os.PathLike) -> list[Path]:
    """``<results_dir>/<encoder-slug>/<task>/<track>.json``, sorted."""
    return sorted(Path(results_dir).glob("*/*/*.json"))


def _cards(tasks_dir=None, cards=None) -> dict:
    if cards is not None:
        return cards
    from marble.registry import all_cards

    return all_cards(tasks_dir)


def validate_result(result: Any, path: str | os.PathLike | None = None, *, check: bool = True,
                    tasks_dir: str | os.PathLike | None = None, cards: dict | None = None,
                    cardless: bool = False) -> dict:
    """Raise :class:`ResultError` unless ``result`` matches the schema (and, with ``check``, its card).
    ``cardless``: a user task's result whose card is not loaded is checked by itself (what needs the card is
    skipped: :func:`marble.results.consistency.card_checks_skipped` says so) instead of refused."""
    errors = schema_errors(result)
    if not errors and check:
        from marble.results.consistency import check_consistency

        errors = check_consistency(result, _cards(tasks_dir, cards), cardless=cardless) + seal_errors(result)
    if errors:
        raise ResultError(path, errors)
    return result


def parse_result(text: str, path: str | os.PathLike | None = None, **kwargs) -> dict:
    """Parse JSON text (malformed JSON -> ResultError with line/column) and validate it."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultError(path, [f"line {e.lineno}, column {e.colno}: not valid JSON: {e.msg}"]) from None
    return validate_result(obj, path, **kwargs)


def read_result(path: str | os.PathLike, *, check: bool = True, tasks_dir: str | os.PathLike | None = None,
                cards: dict | None = None, cardless: bool = False) -> dict:
    """Read and validate one result file (``cardless``: see :func:`validate_result`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_RESULT_BYTES:
            raise ResultError(path, [f"{size} bytes, more than a result file holds (at most {MAX_RESULT_BYTES}); "
                                     "submit files exactly as `marble probe` wrote them"])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultError(path, ["file not found"]) from None
    except UnicodeDecodeError as e:
        raise ResultError(path, [f"not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    return parse_result(text, path, check=check, tasks_dir=tasks_dir, cards=cards, cardless=cardless)


def _to_json(value: Any) -> Any:
    """numpy scalars/arrays and paths as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON serialisable")


def write_result(path: str | os.PathLike, result: dict, *, check: bool = True, card=None,
                 tasks_dir: str | os.PathLike | None = None, cards: dict | None = None) -> Path:
    """Validate ``result`` against the schema, then write it atomically (a reader never sees half a file).

    With ``check`` the result is also checked against its task card (``card``, else the card found in
    ``cards`` / the registry with ``tasks_dir``). A computed (``ours``) result is sealed: its
    ``manifest.content_sha256`` is set, in the file and in ``result``. A user task the registry cannot see here is checked
    against the schema only, and fully when read back with its ``--tasks-dir``.
    """
    from marble.io import atomic_write_bytes

    path = Path(path)
    # round-trip through JSON first so what we validate is exactly what lands on disk
    obj = json.loads(json.dumps(result, default=_to_json))
    if isinstance(obj, dict) and obj.get("source") == "ours" and isinstance(obj.get("manifest"), dict):
        obj["manifest"][SEAL] = content_digest(obj)
        if isinstance(result.get("manifest"), dict):  # the caller's dict stays equal to the file
            result["manifest"][SEAL] = obj["manifest"][SEAL]
    errors = schema_errors(obj)
    if not errors and check:
        from marble.results.consistency import check_consistency

        known = {card.id: card} if card is not None else _cards(tasks_dir, cards)
        if isinstance(obj, dict) and obj.get("task") in known:
            errors = check_consistency(obj, known)
    if errors:
        raise ResultError(path, errors)
    atomic_write_bytes(path, result_bytes(obj))
    return path


__all__ = ["MAX_RESULT_BYTES", "ResultError", "SCHEMA_VERSION", "SEAL", "TRACKS", "result_bytes", "content_digest", "seal_errors", "data_dir", "parse_result", "read_result", "result_files", "result_path",
           "result_schema", "schema_errors", "validate_result", "write_result"]
