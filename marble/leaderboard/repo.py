"""The leaderboard repository: a plain git repository of result files (as MTEB's results repository),
one pull request per submission, reviewed and merged by maintainers (``docs/leaderboard.md``).

Layout::

    leaderboard.json                    which task card versions the leaderboard accepts, task categories
    models/<model-slug>@<revision>/     one folder per model and revision
        model.json                      display name, parameters, sample rate, link, licence, weights, track
        <task>/<track>.json             result files, exactly as ``marble probe`` wrote them

The published numbers are entries of their own (``models/<slug>@published``, ``source: reported``).
:func:`load_repo` reads and validates a repository; :func:`entry_rows` turns it into table rows.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from marble.errors import MarbleError

CONFIG = "leaderboard.json"
MODELS = "models"
MODEL_JSON = "model.json"
REPORTED_REVISION = "published"

#: model.json fields: name -> (type check, what it holds). Every field must be present; a reported
#: (published) entry may leave a fact it does not know as null, a submission may not.
MODEL_FIELDS: dict[str, tuple[type | tuple, str]] = {
    "name": (str, "the model name in the result files (their 'model' field)"),
    "revision": (str, "the weights' revision (hub commit, checkpoint step, or your own tag)"),
    "display_name": (str, "the name shown on the leaderboard"),
    "parameters": (int, "number of encoder parameters; 0 for a weight-free encoder such as handcrafted"),
    "sample_rate": (int, "input sample rate in Hz"),
    "link": (str, "where the model (or its paper) is described"),
    "license": (str, "the weights' licence, e.g. CC-BY-NC-4.0"),
    "weights_public": (bool, "true if anyone can download the weights"),
    "track": (str, "constrained | semi-constrained | unconstrained"),
    "source": (str, "ours (run with marble) | reported (published numbers)"),
}

#: integer fields that may be 0: a weight-free encoder (the handcrafted baseline) has no parameters
WEIGHT_FREE_OK = ("parameters",)

#: optional model.json fields; ``published_average`` is the MARBLE average as published (reported entries),
#: shown as is: the mean of the published (rounded) task scores can differ from it in the last digit
OPTIONAL_FIELDS = ("description", "citation", "published_average")

#: Task groups averaged on the site (a leaderboard choice written into leaderboard.json, not protocol).
CATEGORIES = {
    "Tagging": ["mtt", "mtg-top50"],
    "Genre": ["gtzan", "mtg-genre"],
    "Emotion": ["emo", "mtg-moodtheme"],
    "Instrument": ["nsynth-instrument", "mtg-instrument"],
    "Pitch & key": ["nsynth-pitch", "gs"],
    "Voice": ["vocalset-technique", "vocalset-singer"],
    "Rhythm": ["gtzan-beat"],
    "Separation": ["musdb"],
}


class RepoError(MarbleError, ValueError):
    """The leaderboard repository is malformed; the message names the file and the fix."""


def folder_name(name: str, revision: str) -> str:
    """``m-a-p/MERT-v1-95M`` at ``abc123`` -> ``m-a-p__MERT-v1-95M@abc123``."""
    from marble.io import slug

    return f"{slug(name)}@{slug(revision)}"


#: a revision is one folder-name-like tag (a hub commit, ``step-100k``, ``v1``): it names the entry's folder and
#: the submission branch, so no ``/``, ``..`` or leading ``.``/``-`` (git refuses those in a branch name)
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a leaderboard model name (None when it can). The name is only a label: a plain
    name or an ``owner/name`` hub id. A plug-in spec (``dir/file.py:Class``) or a path would make a command
    that took it as a model spec (``marble probe --model``) import or open what the submission brought."""
    from marble.encoders.plugins import parse_file_spec

    if parse_file_spec(name) is not None or name.rpartition(":")[0].endswith(".py"):
        return "a plug-in spec (file.py:Class), not a model name"
    parts = name.split("/")
    if (name.startswith(("/", "~", ".", "-")) or "\\" in name or len(parts) > 2 or not all(parts)
            or any(p in (".", "..") for p in parts) or ":" in name):
        return "a path, not a model name (a name is 'name' or 'owner/name', as a hub id)"
    if any(not c.isprintable() for c in name):
        return "holds control characters"
    return None


def revision_problem(revision: str) -> str | None:
    """Why ``revision`` cannot name an entry (None when it can); see ``_REVISION``."""
    if not _REVISION.fullmatch(revision) or ".." in revision or revision.endswith((".", ".lock")):
        return ("not a revision tag (letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100 "
                "characters, no '..'), e.g. a hub commit hash, 'step-100k' or 'v1'")
    return None


def model_json_errors(info, *, reported: bool = False) -> list[str]:
    """Problems of a model.json object as ``"field 'x': ..."`` strings (empty when valid)."""
    from marble.results import TRACKS

    if not isinstance(info, dict):
        return [f"must be a JSON object, got {type(info).__name__}"]
    errors = []
    for name, (kind, what) in MODEL_FIELDS.items():
        if name not in info:
            errors.append(f"field '{name}': missing ({what})")
            continue
        v = info[name]
        if v is None and reported and name not in ("name", "display_name", "track", "source", "revision"):
            continue
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            errors.append(f"field '{name}': {v!r} is not of type {kind.__name__} ({what})")
        elif kind is str and not v.strip():
            errors.append(f"field '{name}': empty ({what})")
        elif kind is int and (v < 0 or (v == 0 and name not in WEIGHT_FREE_OK)):
            errors.append(f"field '{name}': {v} must be positive ({what})" if name not in WEIGHT_FREE_OK else
                          f"field '{name}': {v} must be 0 or more ({what})")
    extra = sorted(set(info) - set(MODEL_FIELDS) - set(OPTIONAL_FIELDS))
    if extra:
        errors.append(f"unexpected field(s) {', '.join(extra)} (allowed: {', '.join([*MODEL_FIELDS, *OPTIONAL_FIELDS])})")
    avg = info.get("published_average")
    if avg is not None and (not reported or not isinstance(avg, (int, float)) or isinstance(avg, bool)):
        errors.append(f"field 'published_average': {avg!r}: a number, and only in a reported entry")
    if isinstance(info.get("name"), str) and info["name"].strip() and model_name_problem(info["name"]):
        errors.append(f"field 'name': {info['name']!r} is {model_name_problem(info['name'])}")
    if isinstance(info.get("revision"), str) and info["revision"].strip() and revision_problem(info["revision"]):
        errors.append(f"field 'revision': {info['revision']!r} is {revision_problem(info['revision'])}")
    if info.get("track") is not None and info.get("track") not in TRACKS:
        errors.append(f"field 'track': {info['track']!r} is not one of {', '.join(TRACKS)}")
    if info.get("source") not in (None, "ours", "reported"):
        errors.append(f"field 'source': {info['source']!r} is not ours or reported")
    return errors


def read_model_json(path: Path, *, reported: bool | None = None) -> dict:
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RepoError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RepoError(f"{path}: not valid JSON ({e})") from None
    if reported is None:
        reported = isinstance(info, dict) and info.get("source") == "reported"
    errors = model_json_errors(info, reported=reported)
    if errors:
        raise RepoError("\n".join(f"{path}: {e}" for e in errors))
    return info


def default_config(cards: dict) -> dict:
    """The ``leaderboard.json`` of a new repository: the built-in tasks at their current card versions."""
    tasks = {cid: {"versions": [c.version], "protocol": c.protocol}
             for cid, c in sorted(cards.items()) if c.origin == "builtin"}
    # a list keeps the categories' order through JSON writers that sort keys
    return {"format": 1, "tasks": tasks, "categories": [{"name": k, "tasks": v} for k, v in CATEGORIES.items()]}


def categories(cfg: dict) -> dict[str, list[str]]:
    """``{name: [task ids]}`` of ``leaderboard.json``'s categories, in their order."""
    out = {}
    for c in cfg.get("categories") or []:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("tasks"), list):
            raise RepoError(f"{CONFIG}: each category is {{\"name\": ..., \"tasks\": [task ids]}}, got {c!r}")
        out[c["name"]] = list(c["tasks"])
    return out


def read_config(repo: Path) -> dict:
    path = Path(repo) / CONFIG
    if not path.is_file():
        raise RepoError(f"{path}: not a leaderboard repository (no {CONFIG}); create one with "
                        "`marble leaderboard init DIR` or clone the leaderboard's repository")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RepoError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("tasks"), dict):
        raise RepoError(f"{path}: expected an object with a 'tasks' mapping (task id -> accepted card versions)")
    return cfg


def _write_json(path: Path, obj) -> None:
    from marble.io import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, obj)


def init_repo(repo: str | os.PathLike, cards: dict | None = None) -> list[Path]:
    """Write a new leaderboard repository's files into ``repo`` (config, README, the published rows).
    Refuses a folder that already holds a ``leaderboard.json``. Returns the files written."""
    from marble.leaderboard.table import reference_csv_path, reported_results
    from marble.metrics.aggregate import reported_averages
    from marble.registry import all_cards
    from marble.results import write_result

    repo = Path(repo)
    if (repo / CONFIG).exists():
        raise RepoError(f"{repo / CONFIG}: already a leaderboard repository; nothing written")
    cards = cards or all_cards()
    averages = reported_averages(reference_csv_path())
    written = [repo / CONFIG, repo / "README.md"]
    _write_json(repo / CONFIG, default_config(cards))
    (repo / "README.md").write_text(
        "# MARBLE leaderboard results\n\nOne folder per model and revision under `models/`. Submit with "
        "`marble submit`; build the site with `marble leaderboard build . --out site/`. See the toolkit's "
        "docs/leaderboard.md.\n", encoding="utf-8")
    for r in reported_results(cards):
        folder = repo / MODELS / folder_name(r["model"], REPORTED_REVISION)
        p = folder / r["task"] / "constrained.json"
        write_result(p, r, cards=cards)
        written.append(p)
        mj = folder / MODEL_JSON
        if not mj.exists():
            _write_json(mj, {"name": r["model"], "revision": REPORTED_REVISION, "display_name": r["model"],
                             "parameters": None, "sample_rate": None, "link": "https://arxiv.org/abs/2306.10548",
                             "license": None, "weights_public": None, "track": "constrained", "source": "reported",
                             "citation": r["reference"]["citation"], "published_average": averages.get(r["model"])})
            written.append(mj)
    return written


@dataclass
class Entry:
    """One model folder: its model.json and its validated results (``[(path, result)]``)."""

    folder: Path
    info: dict
    results: list[tuple[Path, dict]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{LOCAL}--{self.folder.name}" if self.source == LOCAL else self.folder.name

    @property
    def source(self) -> str:
        return self.info["source"]


def load_repo(repo: str | os.PathLike, cards: dict | None = None) -> tuple[dict, list[Entry]]:
    """Read and validate the whole repository: ``(config, entries)``. Any malformed file raises
    (:class:`RepoError` or :class:`marble.results.ResultError`) naming it."""
    from marble.registry import all_cards
    from marble.results import ResultError, read_result

    repo = Path(repo)
    cfg = read_config(repo)
    cards = cards or all_cards()
    entries = []
    for folder in sorted(p for p in (repo / MODELS).glob("*") if p.is_dir()):
        info = read_model_json(folder / MODEL_JSON)
        entry = Entry(folder, info)
        for p in sorted(folder.glob("*/*.json")):
            r = read_result(p, cards=cards)
            problems = []
            if r["model"] != info["name"]:
                problems.append(f"field 'model': {r['model']!r} but {folder / MODEL_JSON} names {info['name']!r}")
            if r["source"] != info["source"]:
                problems.append(f"field 'source': {r['source']!r} but {folder / MODEL_JSON} says {info['source']!r}")
            if (p.parent.name, p.stem) != (r["task"], r["track"]):
                problems.append(f"task/track {r['task']}/{r['track']} but the file sits at {p.parent.name}/{p.name}")
            if problems:
                raise ResultError(p, problems)
            entry.results.append((p, r))
        entries.append(entry)
    return cfg, entries


#: the source of a local results folder's rows on a site (``leaderboard build --results``): not on the leaderboard
LOCAL = "local"


def local_entries(results_dir: str | os.PathLike, cards: dict) -> tuple[list[Entry], list[str]]:
    """One :class:`Entry` (source :data:`LOCAL`, never a leaderboard row) per model folder of a results folder,
    so a user sees their own row on a site built from a leaderboard repository before submitting. Results are read
    and checked as ``marble leaderboard`` reads them; an invalid file is left out with a warning. The facts come
    from ``<model>/model.json`` when it is valid, else from the result files."""
    from marble.results import ResultError, read_result, result_files

    by_model: dict[str, Entry] = {}
    warnings: list[str] = []
    for p in result_files(results_dir):
        try:
            r = read_result(p, cards=cards)
        except ResultError as e:
            warnings.append(f"left out (invalid): {e}")
            continue
        if r["source"] != "ours" or r["task"] not in cards:
            continue
        e = by_model.get(r["model"])
        if e is None:
            info = {"name": r["model"], "display_name": r["model"]}
            try:
                mj = read_model_json(p.parent.parent / MODEL_JSON)
                info = {**{k: v for k, v in mj.items() if k not in ("source",)}, "name": r["model"]}
            except RepoError:
                pass
            info["source"] = LOCAL
            e = by_model[r["model"]] = Entry(p.parent.parent, info)
        e.results.append((p, r))
    return list(by_model.values()), warnings


def entry_rows(entries: list[Entry], cards: dict, benchmark: list[str] | None = None) -> list[tuple[Entry, "Row"]]:
    """``(entry, row)`` per (entry, track): a :class:`~marble.leaderboard.table.Row` with its cells and
    MARBLE score (given only when all benchmark tasks are there)."""
    from marble.leaderboard.table import Row, _cell
    from marble.metrics.aggregate import default_task_ids, marble_score

    benchmark = default_task_ids() if benchmark is None else benchmark
    rows = []
    for e in entries:
        by_track: dict[str, Row] = {}
        for p, r in e.results:
            row = by_track.setdefault(r["track"], Row(e.info["display_name"], e.source, r["track"]))
            row.cells[r["task"]] = _cell(r, cards[r["task"]], str(p))
        for row in by_track.values():
            row.marble_score = marble_score({t: c.score for t, c in row.cells.items()}, benchmark)
            rows.append((e, row))
    return rows


def category_scores(row, categories: dict[str, list[str]]) -> dict[str, float | None]:
    """Mean task score per category, given only when every task of the category has a score."""
    out = {}
    for name, tasks in categories.items():
        vals = [row.cells[t].score for t in tasks if t in row.cells and row.cells[t].score is not None]
        out[name] = sum(vals) / len(vals) if len(vals) == len(tasks) and all(map(math.isfinite, vals)) else None
    return out
