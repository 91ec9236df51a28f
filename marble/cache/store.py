"""On-disk format of a feature cache (one per encoder x task), read by the probes.

Layout::

    <cache_root>/<encoder-slug>/<task-id>/
        manifest.json               encoder identity, task id/version/hash, protocol, split checksums,
                                    dtype, toolkit version, per-split status, per-file errors and the
                                    sha256 of every file of a finished split (``content_sha256``)
        <split>/features.npy        clip tasks: fp16 [N_windows, S, H] time-mean of every hidden state
        <split>/index.tsv           row-aligned: uid, window, group
        <split>/labels.npy          int64 [N] (multiclass) | uint8 [N, C] (multilabel) | float32 [N, D]
        <split>/frames/...          frame tasks: per-file frame features (see ``FrameStore``)

Every file is written to a temporary name and moved into place with ``os.replace``, so a reader
never sees a half-written array. ``features.npy`` is a plain ``.npy`` opened with
``np.load(mmap_mode="r")``: features are never loaded twice into memory.

Content hashes: every file is hashed while it is written (:func:`marble.io.atomic_open`), and a finished split records
``{relative path: sha256}`` of what the probe reads (``features.npy``, ``index.tsv``, ``labels.npy``; a frame
split's ``index.tsv`` and ``frames/*.npy``). :func:`verify_split` re-hashes them before probing, so features
overwritten after extraction are refused. The hashes live in the manifest beside them: they show corruption and
edits made without rewriting the manifest, not a forgery by someone who rewrites both.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from marble.errors import MarbleError
from marble.io import atomic_save_npy, atomic_write_bytes, file_sha256, slug

FEATURES = "features.npy"
INDEX = "index.tsv"
LABELS = "labels.npy"
MANIFEST = "manifest.json"
UNITS = "units"  # <split>/units/: extraction units not merged yet (marble.cache.extract)
CONTENT = "content_sha256"  # manifest["splits"][split][CONTENT]: {relative path: sha256} of a finished split


class CacheError(MarbleError, RuntimeError):
    pass


_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def cache_dir(cache_root: str | os.PathLike, encoder_name: str, task_id: str) -> Path:
    """``<cache_root>/<encoder slug>/<task id>``; a task id that is not a single safe folder name
    (``../x``, ``/abs``) is refused, so nothing outside ``cache_root`` is ever written or removed."""
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise CacheError(f"task id {task_id!r} is not a folder name (letters, digits, '.', '_', '-'); fix the "
                         "card's 'id' (a task id never contains '/' or '..')")
    return Path(cache_root) / slug(encoder_name) / task_id


#: what a marble cache folder may hold (anything else means it is not ours to delete)
CACHE_ENTRIES = {MANIFEST, "log.jsonl", "train", "valid", "test"}  # the writer's lock file lies beside the folder


def remove_cache(directory: str | os.PathLike) -> None:
    """Delete a cache folder, only if it looks like one: a folder holding anything but a manifest,
    the log and split folders is refused (a mistyped --cache-dir must not cost a user their files)."""
    import shutil

    d = Path(directory)
    if not d.exists():
        return
    if d.is_symlink() or not d.is_dir():
        raise CacheError(f"{d}: not a cache folder (a link or a file); remove it yourself or choose another --cache-dir")
    foreign = sorted(p.name for p in d.iterdir() if p.name not in CACHE_ENTRIES and not p.name.startswith(f".{MANIFEST}.tmp"))
    if foreign:
        raise CacheError(f"{d}: refusing to delete a folder that is not a marble cache (it holds {', '.join(foreign[:5])}); "
                         "choose another --cache-dir")
    shutil.rmtree(d)


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise CacheError(f"{path}: no cache manifest; run `marble extract` for this model and task first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CacheError(f"{path}: manifest is not valid JSON ({e}); delete the cache folder and re-extract") from None


@dataclass
class ClipSplit:
    """Row-aligned clip-level features of one split."""

    features: np.ndarray  # [N, S, H] float16 (memory-mapped)
    uids: np.ndarray  # [N] str: file id (windows of one file share it)
    windows: np.ndarray  # [N] int: window number inside the file
    groups: np.ndarray  # [N] str: song-level group (== uid unless the card groups clips)
    labels: np.ndarray  # [N] int64 | [N, C] uint8 | [N, D] float32

    def __len__(self) -> int:
        return len(self.uids)


def write_clip_split(directory: str | os.PathLike, split: ClipSplit) -> dict[str, str]:
    """Write the split's three files; returns their sha256 (``{file name: sha256}``, the split's ``CONTENT``)."""
    d = Path(directory)
    n = len(split.uids)
    for name, arr in (("features", split.features), ("windows", split.windows), ("groups", split.groups), ("labels", split.labels)):
        if len(arr) != n:
            raise CacheError(f"{d}: {name} has {len(arr)} rows, expected {n}")
    index = pd.DataFrame({"uid": split.uids, "window": split.windows, "group": split.groups})
    out = {LABELS: atomic_save_npy(d / LABELS, np.asarray(split.labels)),
           INDEX: atomic_write_bytes(d / INDEX, index.to_csv(sep="\t", index=False).encode())}
    out[FEATURES] = atomic_save_npy(d / FEATURES, np.asarray(split.features, dtype=np.float16))  # last: completion
    return out


def read_clip_split(directory: str | os.PathLike, mmap: bool = True) -> ClipSplit:
    d = Path(directory)
    for name in (FEATURES, INDEX, LABELS):
        if not (d / name).exists():
            raise CacheError(f"{d / name}: missing; the split was not (completely) extracted — rerun `marble extract`")
    try:
        index = pd.read_csv(d / INDEX, sep="\t", dtype={"uid": str, "group": str, "window": int}, keep_default_na=False)
        feats = np.load(d / FEATURES, mmap_mode="r" if mmap else None)
        labels = np.load(d / LABELS)
    except (OSError, ValueError, EOFError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        # a truncated .npy ("mmap length is greater than file size"), a cut index: re-extract, not a traceback
        raise CacheError(f"{d}: cannot read the cached split ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         "it is damaged: rerun `marble extract` for this model and task (it re-extracts it)") from None
    if not (len(feats) == len(index) == len(labels)):
        raise CacheError(f"{d}: features ({len(feats)}), index ({len(index)}) and labels ({len(labels)}) disagree; re-extract")
    return ClipSplit(feats, index["uid"].to_numpy(), index["window"].to_numpy(), index["group"].to_numpy(), labels)


class FrameStore:
    """Frame-level features of one split (beat tracking, separation): one fp16 ``.npy`` per file,
    ``[S_kept, T, H]``, under ``<split>/frames/``; ``states`` (the kept hidden-state indices) is
    recorded in the manifest. A file's array appears atomically, so its presence marks it done."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory) / "frames"

    def path(self, uid: str) -> Path:
        return self.dir / f"{slug(uid)}.npy"

    def has(self, uid: str) -> bool:
        return self.path(uid).exists()

    def relpath(self, uid: str) -> str:
        """The file of ``uid`` relative to the split folder (its key in the split's ``CONTENT``)."""
        return f"{self.dir.name}/{self.path(uid).name}"

    def write(self, uid: str, frames: np.ndarray) -> str:
        """Write the item's frames; returns the file's sha256."""
        return atomic_save_npy(self.path(uid), np.asarray(frames, dtype=np.float16))

    def read(self, uid: str, mmap: bool = True) -> np.ndarray:
        p = self.path(uid)
        if not p.exists():
            raise CacheError(f"{p}: frame features for {uid!r} missing; rerun `marble extract`")
        return np.load(p, mmap_mode="r" if mmap else None)


def recorded_hashes(directory: str | os.PathLike, info: dict | None) -> dict[str, str] | None:
    """``{relative path: sha256}`` of a split's files as extraction recorded them: the manifest's ``CONTENT`` of a
    finished split, else (a frame split still being extracted) the frame files of its committed units; None when
    a finished split records none (a cache of an older marble)."""
    info = info or {}
    if isinstance(info.get(CONTENT), dict):
        return dict(info[CONTENT])
    if info.get("status") == "complete":
        return None
    out: dict[str, str] = {}
    fs = FrameStore(directory)
    for rec in sorted((Path(directory) / UNITS).glob("*.json")):
        try:
            files = json.loads(rec.read_text()).get("files") or {}
        except (OSError, ValueError, AttributeError):
            continue
        out.update({fs.relpath(uid): sha for uid, sha in files.items() if isinstance(sha, str)})
    return out


def verify_split(directory: str | os.PathLike, info: dict | None, files: list[str] | None = None) -> str | None:
    """Why the split's files are not the ones extraction wrote, naming the file (None: every file re-hashes to its
    recorded sha256). ``files``: the relative paths to check (default: every recorded one)."""
    d = Path(directory)
    expected = recorded_hashes(d, info)
    if expected is None:
        return (f"{d}: no content hashes recorded (a cache written by an older marble); rerun `marble extract` (it "
                "records them)")
    for rel in (files if files is not None else sorted(expected)):
        p = d / rel
        if rel not in expected:
            return f"{p} has no recorded content hash (it was not written by a finished extraction unit)"
        try:
            actual = file_sha256(p)
        except OSError as e:
            return f"{p}: cannot read ({e.strerror or e})"
        if actual != expected[rel]:
            return (f"{p}: content sha256 {actual[:12]}... differs from the {expected[rel][:12]}... recorded at "
                    "extraction (the file was modified or damaged after it was written)")
    return None


def check_cache_for(directory: str | os.PathLike, manifest: dict | None, card, model: str,
                    splits=("train", "valid", "test"), verify: bool = False) -> None:
    """Refuse a cache that was not made for ``card`` and ``model`` as they are now: a card edited after
    extraction (labels, order, windows, splits), a checkpoint folder whose weights changed, a split
    that was never completely extracted, or (``verify``) a split whose files no longer have the content
    hashes extraction recorded. The message names the cache and the command that fixes it."""
    d = Path(directory)
    fix = f"rerun `marble extract --model {model} --task {card.id} --overwrite`"
    if manifest is None:
        raise CacheError(f"{d / MANIFEST}: no cache manifest, so nothing says what these features are; {fix}")
    task = manifest.get("task") or {}
    if task.get("id") not in (None, card.id):
        raise CacheError(f"{d}: the cache holds task {task.get('id')!r}, not {card.id!r}; {fix}")
    if card.sha256 and task.get("sha256") and task["sha256"] != card.sha256:
        raise CacheError(f"{d}: the cache was extracted with another version of the task card {card.path} (its labels, "
                         f"order, windows or splits changed since); {fix}")
    if task.get("version") is not None and task["version"] != card.version:
        raise CacheError(f"{d}: the cache was extracted for version {task['version']} of task {card.id}, the card is "
                         f"version {card.version}; {fix}")
    enc = manifest.get("encoder") or {}
    weights = Path(model) / str(enc.get("weights_file")) if enc.get("weights_file") else None
    if weights is not None and enc.get("weights_sha256") and weights.is_file():
        if file_sha256(weights) != enc["weights_sha256"]:
            raise CacheError(f"{d}: the checkpoint {weights} changed since these features were extracted (weights "
                             f"sha256 differs); {fix}")
    for s in splits:
        info = (manifest.get("splits") or {}).get(s)
        if not info or info.get("status") != "complete":
            raise CacheError(f"{d / s}: split {s!r} was not completely extracted; rerun `marble extract --model {model} "
                             f"--task {card.id}` (it resumes)")
        if info.get("n_rows") == 0:  # nothing to probe (a probe would fail deep inside torch)
            raise CacheError(f"{d / s}: split {s!r} holds no features: all {info.get('n_items', '')} of its files were "
                             f"skipped at extraction (each file and why: 'errors' in {d / MANIFEST}); fix or replace "
                             f"those files, then rerun `marble extract --model {model} --task {card.id} --overwrite`")
        problem = verify_split(d / s, info) if verify else None
        if problem:
            raise CacheError(f"{problem}; rerun `marble extract --model {model} --task {card.id}` (it "
                             "re-extracts a damaged split), or probe with --no-verify (recorded in the result)")
