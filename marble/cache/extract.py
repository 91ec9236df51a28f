"""The extraction pipeline: task items -> audio -> frozen encoder -> layer-wise feature cache.

Per item (PROTOCOL §2): decode ``[item.offset + crop_offset, + min(item.duration, crop_seconds))``
in the file's own rate, mix to mono, z-normalise when the card says so (``audio.zscore``, VocalSet's
chunks), resample to the encoder rate, ``encoder.prepare`` on the whole
clip, cut non-overlapping windows (a last window shorter than the window kept only if
``>= min_window_seconds``). Windows are batched only with windows of the **same length** (never
padded: MERT's first conv group-norm normalises over time, so padding would change every frame).

Memory stays bounded for long inputs: a clip-task window longer than ``max_chunk_seconds`` (a whole
10-min track of a clip task without ``window_seconds``) is encoded in ``n`` equal consecutive chunks;
a clip feature is then the mean over all the window's frames (the frame-weighted mean of the chunk
means). The chunk length is recorded in the manifest. None of the 14 built-in clip tasks reaches it.
Frame tasks (a whole MUSDB song) follow the card's encoder-piece rule instead
(``marble.audio.encoder_pieces``: consecutive pieces of 90 s from the start, the card's tail of zero
samples appended once), the rule the probe applies to features it computes on the fly; the frame
features are the pieces' frames concatenated.

Crash safety: each split is cut into units of ``unit_size`` items. A finished unit is written
atomically as ``<split>/units/NNNNN.npz`` (clip tasks) or as its items' ``frames/*.npy`` (frame
tasks), then a ``NNNNN.json`` record with the sha256 of what was written. A unit counts as done only
when its record exists and the checksums match, so a killed run (SIGKILL, Ctrl-C, OOM) restarts
where it stopped and a corrupt or truncated unit is redone. When every unit of a split is done,
rank 0 merges them into the final ``ClipSplit`` files, records the sha256 of every file of the split
(hashed while written: ``store.CONTENT``) and removes the units. A later ``extract`` (and ``probe``)
re-hashes a finished split and redoes (refuses) one whose files changed. ``log.jsonl`` records
every computed unit (time, pid, rank), which also makes resumption auditable.

By job: this module plans the units, runs them, merges a finished split and keeps the manifest;
:mod:`marble.cache.decode` decodes items in worker processes, :mod:`marble.cache.encode` runs the encoder on
batches and checks what it returns, :mod:`marble.cache.checksums` identifies the input, :mod:`marble.cache.store`
is the on-disk format.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from marble import __version__
from marble.audio import AudioError, encoder_pieces, windows
from marble.cache import store
from marble.cache.checksums import audio_variants, items_sha256, normalise, split_file_sha256  # noqa: F401
from marble.cache.decode import decoded
from marble.cache.duplicates import refuse_identical_files, refuse_listed_twice
from marble.cache.encode import EncoderContractError, Runner, parse_states, resolve_dtype  # noqa: F401
from marble.datasets.base import label_array
from marble.devices import matmul_precision, resolve_device
from marble.distributed import Shard, from_env, wait_until
from marble.io import WriteError, atomic_write_bytes, file_sha256, write_json

FORMAT_VERSION = 1
LOG = "log.jsonl"
UNITS = store.UNITS
DECODER_FILES_KEPT = 20  # files whose decoder messages the manifest quotes (all are counted)


class CacheMismatchError(store.CacheError):
    """An existing cache was made with another encoder, task version, split or format."""


def _say(msg: str) -> None:
    from marble.progress import say

    say(msg)


def _chunks(start: int, stop: int, max_len: int) -> list[tuple[int, int]]:
    n = max(1, math.ceil((stop - start) / max_len))
    edges = [start + round(i * (stop - start) / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


# ----------------------------------------------------------------------------------------------
# the pipeline


class _Job:
    """One extraction (one encoder x task) as seen by one rank."""

    def __init__(self, card, encoder, items_by_split, cache_root, splits, device, batch_size, num_workers,
                 dtype, states, overwrite, unit_size, max_chunk_seconds, keep_units, progress, shard, on_unit,
                 listed=None, tf32=False):
        self.card, self.encoder = card, encoder
        self.clip = card.is_clip_level
        self.device = resolve_device(device)
        self.shard = shard or from_env(self.device.type)
        if self.device.type == "cuda" and self.shard.world > 1 and self.device.index is None:
            self.device = torch.device("cuda", self.shard.local_rank % torch.cuda.device_count())
        self.dtype_name, self.amp = resolve_dtype(dtype, self.device)
        self.tf32 = bool(tf32)  # TF32 matmuls: a speed option, recorded and flagged (PROTOCOL §2: full fp32)
        if self.clip and parse_states(states, encoder.num_states) is not None:
            raise ValueError(f"--states applies to frame-level tasks only; clip caches of {card.id!r} keep all "
                             f"{encoder.num_states} hidden states (PROTOCOL §2)")
        self.states = None if self.clip else parse_states(states, encoder.num_states)
        self.splits = list(splits) if splits else [s for s in card.splits.names if s in items_by_split]
        for s in self.splits:
            if s not in items_by_split:
                raise ValueError(f"split {s!r} requested but no items were given for it (have: {', '.join(items_by_split)})")
        if not self.clip and card.audio.train_chunk_seconds and "train" in self.splits:
            # the probe trains on random crops encoded on the fly (PROTOCOL §4): no train cache
            self.splits.remove("train")
            _say(f"[marble extract] {card.id}/train: not cached; `marble probe` encodes random "
                 f"{card.audio.train_chunk_seconds:g} s training crops on the fly (PROTOCOL §4). Caching valid/test "
                 "(whole tracks).")
        self.items = {s: list(items_by_split[s]) for s in self.splits}
        refuse_listed_twice(self.items)
        # by content too, over every split given (a frame task's uncached train split included)
        refuse_identical_files({s: items_by_split[s] for s in card.splits.names if s in items_by_split},
                               lambda n: _progress(n, f"{card.id}: files of one size in two splits, compared",
                                                   progress and self.shard.is_main))
        self.listed = dict(listed or {})
        self.batch_size, self.num_workers = max(1, int(batch_size)), max(0, int(num_workers))
        self.overwrite, self.keep_units, self.progress, self.on_unit = overwrite, keep_units, progress, on_unit
        self.unit_size, self.max_chunk_seconds = max(1, int(unit_size)), float(max_chunk_seconds)
        from marble.encoders.identity import model_cache_dir

        self.dir = model_cache_dir(cache_root, encoder, card.id)
        self.labels = {s: label_array(card, self.items[s]) for s in self.splits}  # fail fast on bad labels

    # -- manifest ------------------------------------------------------------------------------

    def header(self) -> dict:
        c = self.card
        return normalise({
            "format": FORMAT_VERSION,
            "encoder": self.encoder.identity(),
            "task": {"id": c.id, "version": c.version, "sha256": c.sha256, "protocol": c.protocol, "prediction": c.prediction},
            "protocol": c.protocol,
            "audio": asdict(c.audio),
            "dtype": "float16",
            "compute_dtype": self.dtype_name,
            **({"tf32_matmul": True} if self.tf32 else {}),
            "states": self.states if self.states is not None else "all",
            "num_states": len(self.states) if self.states else self.encoder.num_states,
            "max_chunk_seconds": self.max_chunk_seconds,
            "kind": "clip" if self.clip else "frame",
        })

    def split_info(self, split: str) -> dict:
        info = {"items_sha256": items_sha256(self.items[split]), "split_file_sha256": split_file_sha256(self.card, split),
                "n_items": len(self.items[split])}
        variants = audio_variants(self.items[split])
        if variants:
            info["audio_variants"] = variants
        ls = self.listed.get(split)
        if ls is not None:  # files of the official split / user CSV, and those not on disk (--allow-partial)
            info.update(n_listed=int(ls.get("n_listed", len(self.items[split]))), missing=list(ls.get("missing", [])))
        return info

    def mismatches(self, old: dict, header: dict, infos: dict) -> list[str]:
        out = [f"{k}: cached {json.dumps(old.get(k), sort_keys=True)} != now {json.dumps(header[k], sort_keys=True)}"
               for k in header if old.get(k) != header[k]]
        for s, info in infos.items():
            prev = old.get("splits", {}).get(s)
            if prev and prev.get("items_sha256") != info["items_sha256"]:
                out.append(f"split {s}: the item list changed (items sha256 {prev.get('items_sha256', '')[:12]} != {info['items_sha256'][:12]})")
        return out

    def open_manifest(self) -> dict:
        path = self.dir / store.MANIFEST
        header, infos = self.header(), {s: self.split_info(s) for s in self.splits}
        if self.shard.is_main:
            manifest = store.read_manifest(self.dir) if path.exists() else None
            before = json.dumps(manifest, sort_keys=True)
            if manifest is not None:
                problems = self.mismatches(manifest, header, infos)
                if problems and not self.overwrite:
                    raise CacheMismatchError(
                        f"{self.dir}: the existing cache was made differently and is never reused:\n  - "
                        + "\n  - ".join(problems) + "\nRerun with --overwrite to replace it (or use another --cache-dir).")
                if self.overwrite:
                    manifest = None
            if manifest is None:
                store.remove_cache(self.dir)
                manifest = {**header, "toolkit": {"name": "marble", "version": __version__}, "unit_size": self.unit_size,
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "splits": {}, "errors": []}
            for s in self.splits:
                manifest["splits"].setdefault(s, {**infos[s], "status": "pending"})
                if infos[s].get("audio_variants"):  # e.g. MTG tracks read from the full-quality mp3: never silent
                    _say(f"[marble extract] {self.card.id}/{s} audio read from: "
                         + ", ".join(f"{k} {n}" for k, n in infos[s]["audio_variants"].items()))
                for k in ("n_listed", "missing"):
                    if k in infos[s]:
                        manifest["splits"][s][k] = infos[s][k]
            if json.dumps(manifest, sort_keys=True) != before:  # a finished cache is not rewritten (read-only folders)
                write_json(path, manifest)
        self.shard.barrier()
        if not self.shard.is_main:
            def ready() -> bool:
                try:
                    m = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    return False
                return all(s in m.get("splits", {}) for s in self.splits)

            wait_until(ready, f"rank 0 to write {path}")
            manifest = store.read_manifest(self.dir)
            problems = self.mismatches(manifest, header, infos)
            if problems:
                raise CacheMismatchError(f"{self.dir}: rank {self.shard.rank} disagrees with the manifest: " + "; ".join(problems))
        self.unit_size = int(manifest["unit_size"])  # a resumed run keeps the recorded unit size
        return manifest

    # -- units ---------------------------------------------------------------------------------

    def units_dir(self, split: str) -> Path:
        return self.dir / split / UNITS

    def n_units(self, split: str) -> int:
        return math.ceil(len(self.items[split]) / self.unit_size)

    def unit_items(self, split: str, k: int) -> range:
        return range(k * self.unit_size, min((k + 1) * self.unit_size, len(self.items[split])))

    def record(self, split: str, k: int) -> dict | None:
        """The unit's record if the unit is complete and intact, else None (to be (re)computed)."""
        rec_path = self.units_dir(split) / f"{k:05d}.json"
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        try:
            if self.clip:
                ok = file_sha256(self.units_dir(split) / f"{k:05d}.npz") == rec["sha256"]
            else:
                fs = store.FrameStore(self.dir / split)
                ok = all(file_sha256(fs.path(uid)) == sha for uid, sha in rec["files"].items())
        except (OSError, KeyError):
            ok = False
        if not ok:
            _say(f"[marble extract] {split} unit {k}: missing or corrupt data (checksum mismatch); recomputing it")
        return rec if ok else None

    def log(self, entry: dict) -> None:
        line = json.dumps({"time": time.time(), "pid": os.getpid(), "rank": self.shard.rank, **entry}) + "\n"
        with open(self.dir / LOG, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def run_units(self, split: str, units: list[int]) -> None:
        if not units:
            return
        items = self.items[split]
        enc = self.encoder
        sr = int(enc.sample_rate)
        a = self.card.audio
        jobs = [(i, items[i]) for k in units for i in self.unit_items(split, k)]
        loader = decoded(jobs, sr, a, self.num_workers)
        runner = Runner(enc, self.device, self.amp, self.batch_size, self.clip, self.states)
        runner.name_of = lambda key: str(items[key[0]].path)
        max_len = max(1, int(round(self.max_chunk_seconds * sr)))
        bar = _progress(len(jobs), f"{self.card.id}/{split}", self.progress and self.shard.is_main or self.progress == "all")
        t0, audio_s, n_skipped = time.perf_counter(), 0.0, 0
        it = iter(loader)
        try:
            for k in units:
                tu, unit_audio = time.perf_counter(), 0.0
                errors, plan, chatter = [], {}, []
                for i in self.unit_items(split, k):
                    idx, wav, err, said = next(it)
                    assert idx == i, (idx, i)
                    item = items[i]
                    if said:
                        chatter.append({"uid": item.uid, "file": str(item.path), "n_lines": len(said), "lines": said[:3]})
                    if err is None:
                        clip = np.asarray(enc.prepare(wav), dtype=np.float32)
                        seconds = len(clip) / sr
                        if not self.clip:  # frame tasks: the one piece rule of cached and on-the-fly features
                            clip, pieces = encoder_pieces(clip, sr, a.piece_seconds, a.tail_samples, enc.num_frames)
                            wins = [(0, len(clip))]
                            if not pieces:
                                err = f"too short: {seconds:.3f} s gives no encoder frame"
                        else:
                            wins = windows(len(clip), sr, a.window_seconds, a.min_window_seconds)
                            if not wins:
                                err = (f"too short: {seconds:.2f} s, shorter than the minimum window of "
                                       f"{a.min_window_seconds:g} s")
                            elif any(enc.num_frames(b - s) < 1 for s, b in wins):
                                err = f"too short: {seconds:.3f} s gives no encoder frame"
                    if err is not None:  # counted on the bar, listed in the manifest, summed up per split at the end
                        errors.append({"split": split, "uid": item.uid, "file": str(item.path), "reason": err})
                        n_skipped += 1
                        bar.update(1)
                        bar.set_postfix_str(_rate(audio_s, t0, n_skipped))
                        continue
                    plan[i] = []
                    for w, (s, b) in enumerate(wins):
                        segs = _chunks(s, b, max_len) if self.clip else pieces
                        plan[i].append(len(segs))
                        for c, (cs, cb) in enumerate(segs):
                            runner.add((i, w, c), clip[cs:cb])
                    unit_audio += seconds
                    audio_s += seconds
                    bar.update(1)
                    bar.set_postfix_str(_rate(audio_s, t0, n_skipped))
                results = runner.flush()
                self.write_unit(split, k, plan, results, errors, chatter)
                self.log({"event": "unit", "split": split, "unit": k, "n_items": len(self.unit_items(split, k)),
                          "n_errors": len(errors), "seconds": round(time.perf_counter() - tu, 3),
                          "audio_seconds": round(unit_audio, 3)})
                if self.on_unit is not None:
                    self.on_unit(split, k)
        finally:
            bar.close()
            del it

    def write_unit(self, split: str, k: int, plan: dict, results: dict, errors: list, chatter: list | None = None) -> None:
        items = self.items[split]
        ud = self.units_dir(split)
        rec: dict[str, Any] = {"unit": k, "n_items": len(self.unit_items(split, k)), "errors": errors,
                               "decoder_messages": list(chatter or [])}
        if self.clip:
            feats, rows, wins = [], [], []
            for i, chunk_counts in plan.items():
                for w, n_chunks in enumerate(chunk_counts):
                    if n_chunks == 1:
                        f = results[(i, w, 0)][0]
                    else:  # mean over all frames of the window = frame-weighted mean of chunk means
                        parts = [results[(i, w, c)] for c in range(n_chunks)]
                        f = sum(m.astype(np.float64) * n for m, n in parts) / sum(n for _, n in parts)
                    feats.append(np.asarray(f, np.float16))
                    rows.append(i)
                    wins.append(w)
            s, h = (len(self.states) if self.states else self.encoder.num_states), self.encoder.dim
            buf = io.BytesIO()
            np.savez(buf, features=np.stack(feats) if feats else np.zeros((0, s, h), np.float16),
                     item=np.asarray(rows, np.int64), window=np.asarray(wins, np.int64))
            data = buf.getvalue()
            atomic_write_bytes(ud / f"{k:05d}.npz", data)
            rec["sha256"] = hashlib.sha256(data).hexdigest()
            rec["n_windows"] = len(rows)
        else:
            fs = store.FrameStore(self.dir / split)
            files = {}
            frames = {}
            for i, chunk_counts in plan.items():
                parts = [results[(i, w, c)][0] for w, n in enumerate(chunk_counts) for c in range(n)]
                arr = np.concatenate(parts, axis=1)
                files[items[i].uid] = fs.write(items[i].uid, arr)  # hashed while written
                frames[items[i].uid] = int(arr.shape[1])
            rec["files"] = files
            rec["frames"] = frames
        write_json(ud / f"{k:05d}.json", rec)  # last: marks the unit done

    # -- merge ---------------------------------------------------------------------------------

    def merge(self, split: str, manifest: dict) -> None:
        items, n = self.items[split], self.n_units(split)
        recs = [self.record(split, k) for k in range(n)]
        redo = [k for k, r in enumerate(recs) if r is None]
        if redo:  # corrupt or lost units (or a rank that died): rank 0 finishes them itself
            self.run_units(split, redo)
            recs = [self.record(split, k) for k in range(n)]
            if any(r is None for r in recs):
                raise store.CacheError(f"{self.units_dir(split)}: units {[k for k, r in enumerate(recs) if r is None]} could not be completed")
        errors = [e for r in recs for e in r["errors"]]
        d = self.dir / split
        if self.clip:
            total = sum(r["n_windows"] for r in recs)
            s, h = (len(self.states) if self.states else self.encoder.num_states), self.encoder.dim
            tmp = d / ".merge.features.npy"
            feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(total, s, h))
            rows, wins, pos = [], [], 0
            for k in range(n):
                with np.load(self.units_dir(split) / f"{k:05d}.npz") as z:
                    f = z["features"]
                    feats[pos:pos + len(f)] = f
                    pos += len(f)
                    rows.append(z["item"])
                    wins.append(z["window"])
            feats.flush()
            rows_a = np.concatenate(rows) if rows else np.zeros(0, np.int64)
            uids = np.array([items[i].uid for i in rows_a], dtype=object)
            groups = np.array([items[i].group if items[i].group is not None else items[i].uid for i in rows_a], dtype=object)
            split_obj = store.ClipSplit(feats, uids, np.concatenate(wins) if wins else np.zeros(0, np.int64), groups,
                                        self.labels[split][rows_a])
            content = store.write_clip_split(d, split_obj)
            del feats, split_obj
            tmp.unlink()
            n_rows = total
        else:
            frames = {uid: t for r in recs for uid, t in r["frames"].items()}
            done = [it for it in items if it.uid in frames]
            index = pd.DataFrame({"uid": [it.uid for it in done], "window": 0,
                                  "group": [it.group if it.group is not None else it.uid for it in done],
                                  "frames": [frames[it.uid] for it in done]})
            fs = store.FrameStore(d)
            content = {fs.relpath(uid): sha for r in recs for uid, sha in r["files"].items()}
            content[store.INDEX] = atomic_write_bytes(d / store.INDEX, index.to_csv(sep="\t", index=False).encode())
            n_rows = len(done)
        if not self.keep_units and self.clip:
            shutil.rmtree(self.units_dir(split), ignore_errors=True)
        elif not self.keep_units:  # frame units hold only records; the frames stay
            shutil.rmtree(self.units_dir(split), ignore_errors=True)
        info = manifest["splits"][split]
        said = [m for r in recs for m in r.get("decoder_messages", [])]
        info.update(status="complete", n_rows=n_rows, n_ok=len(items) - len(errors), errors=errors,
                    decoder_messages={"n_files": len(said), "n_lines": sum(m["n_lines"] for m in said),
                                      "files": said[:DECODER_FILES_KEPT]},
                    completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **{store.CONTENT: dict(sorted(content.items()))})
        manifest["errors"] = [e for e in manifest.get("errors", []) if e.get("split") != split] + errors
        write_json(self.dir / store.MANIFEST, manifest)

    # -- driver --------------------------------------------------------------------------------

    def estimate_frames(self) -> None:
        """Print the size of a frame cache before writing it (they are large)."""
        a, enc = self.card.audio, self.encoder
        s = len(self.states) if self.states else enc.num_states
        seconds = 0.0
        from marble.audio import info

        for split in self.splits:
            for it in self.items[split]:
                dur = [d for d in (it.duration, a.crop_seconds) if d is not None]
                if not dur:
                    try:
                        sr, n = info(it.path)
                        dur = [max(n / sr - it.offset - a.crop_offset_seconds, 0.0)]
                    except AudioError:
                        dur = [0.0]
                seconds += min(dur)
        gb = seconds * enc.frame_rate * s * enc.dim * 2 / 1e9
        _say(f"[marble extract] frame cache for {self.card.id}: ~{gb:.2f} GB ({seconds / 3600:.2f} h of audio x "
             f"{enc.frame_rate:g} frames/s x {s} states x {enc.dim} dims x fp16); --states 0,6,12 keeps fewer states")

    def verify(self, split: str, info: dict) -> str | None:
        """Why a split the manifest calls complete cannot be used as is (None: it is intact)."""
        d = self.dir / split
        try:
            if self.clip:
                cs = store.read_clip_split(d)
                if len(cs) != info.get("n_rows", len(cs)):
                    return f"{len(cs)} rows cached, the manifest recorded {info.get('n_rows')}"
                if cs.features.shape[1:] != ((len(self.states) if self.states else self.encoder.num_states), self.encoder.dim):
                    return f"features of shape {cs.features.shape[1:]} do not match the encoder"
            else:
                index = pd.read_csv(d / store.INDEX, sep="\t", dtype={"uid": str}, keep_default_na=False)
                fs = store.FrameStore(d)
                for uid, n in zip(index["uid"], index["frames"]):
                    arr = np.load(fs.path(uid), mmap_mode="r")
                    if arr.shape[1] != int(n):
                        return f"{fs.path(uid)} holds {arr.shape[1]} frames, the index recorded {n}"
        except (OSError, ValueError, KeyError, EOFError, store.CacheError) as e:
            return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if not isinstance(info.get(store.CONTENT), dict):  # an older marble's cache: record what is there now
            info[store.CONTENT] = self.hash_split(split)
            _say(f"[marble extract] {d}: recorded the content hashes of a split cached by an older marble")
            return None
        return store.verify_split(d, info)

    def hash_split(self, split: str) -> dict[str, str]:
        """sha256 of every file of a finished split (for a cache that predates recorded hashes)."""
        d = self.dir / split
        if self.clip:
            names = [store.FEATURES, store.INDEX, store.LABELS]
        else:
            index = pd.read_csv(d / store.INDEX, sep="\t", dtype={"uid": str}, keep_default_na=False)
            names = [store.INDEX, *(store.FrameStore(d).relpath(uid) for uid in index["uid"])]
        return {rel: file_sha256(d / rel) for rel in names}

    def lock(self):
        """One writer per cache: a second ``extract`` of the same cache waits for the first (a cache being
        created is never written by two processes); the lock dies with its process."""
        from marble.locks import exclusive

        return exclusive(self.dir.parent / f".{self.dir.name}.lock", lambda pid: _say(
            f"[marble extract] {self.dir}: another extract (pid {pid}) is writing this cache; waiting for it"))

    def run(self) -> Path:
        self.refuse_links_out()
        try:
            lock = self.lock() if self.shard.is_main else None
        except OSError as e:  # a read-only cache folder (or one of another user): fine if there is nothing to write
            if self.complete_as_is():
                _say(f"[marble extract] {self.dir}: the cache is complete and verified; its folder is not writable "
                     f"({e.strerror}), and nothing needs writing")
                return self.dir
            raise WriteError(f"{self.dir.parent}: cannot write to the cache folder ({e.strerror or e}); make it "
                                   "writable or choose another --cache-dir") from None
        try:
            return self._run()
        finally:
            if lock is not None:
                lock.close()

    def refuse_links_out(self) -> None:
        """The cache folder's split folders (and their ``units``/``frames``) must be real folders inside it:
        one that is a link out of the cache would make extraction write (and ``--overwrite`` delete) elsewhere."""
        root = self.dir.resolve() if self.dir.exists() else None
        for split in self.splits:
            for p in (self.dir / split, self.dir / split / UNITS, self.dir / split / "frames"):
                if p.is_symlink() or (root is not None and p.exists() and not p.resolve().is_relative_to(root)):
                    raise store.CacheError(f"{p}: a link to {p.resolve()}, outside the cache {self.dir}; a cache holds "
                                           "its own folders: remove the link (or choose another --cache-dir)")

    def complete_as_is(self) -> bool:
        """True when the cache on disk is exactly what this run would produce (manifest made the same way, every
        split complete and its files matching their recorded hashes): nothing to write."""
        try:
            manifest = store.read_manifest(self.dir)
        except (store.CacheError, OSError):
            return False
        infos = {s: self.split_info(s) for s in self.splits}
        if self.mismatches(manifest, self.header(), infos):
            return False
        for s in self.splits:
            info = (manifest.get("splits") or {}).get(s) or {}
            if info.get("status") != "complete" or store.CONTENT not in info or self.verify(s, info):
                return False
        return True

    def _run(self) -> Path:
        manifest = self.open_manifest()
        if self.shard.is_main:
            for split in self.splits:
                info = manifest["splits"][split]
                if info.get("status") != "complete":
                    continue
                legacy = store.CONTENT not in info
                problem = self.verify(split, info)
                if problem:
                    _say(f"[marble extract] {self.dir / split}: cached split is damaged ({problem}); extracting it again")
                    shutil.rmtree(self.dir / split, ignore_errors=True)
                    manifest["splits"][split] = {**self.split_info(split), "status": "pending"}
                if problem or legacy:
                    write_json(self.dir / store.MANIFEST, manifest)
        if not self.clip and self.shard.is_main:
            self.estimate_frames()
        self.encoder.to(self.device).eval()
        pending = [s for s in self.splits if manifest["splits"][s].get("status") != "complete"]
        with matmul_precision(self.tf32):
            for split in pending:
                todo = [k for k in range(self.n_units(split)) if self.shard.owns(k) and self.record(split, k) is None]
                done = sum(self.shard.owns(k) for k in range(self.n_units(split))) - len(todo)
                if done:
                    _say(f"[marble extract] {self.card.id}/{split}: resuming, {done} finished unit(s) kept")
                self.run_units(split, todo)
        self.shard.barrier()
        if self.shard.is_main:
            for split in pending:
                if not self.shard.group and self.shard.world > 1:
                    wait_until(lambda: all((self.units_dir(split) / f"{k:05d}.json").exists() for k in range(self.n_units(split))),
                               f"the other ranks to finish {split} units in {self.units_dir(split)}")
                self.merge(split, manifest)
                _say(split_summary(f"{self.card.id}/{split}", manifest["splits"][split], self.dir / store.MANIFEST))
        self.shard.barrier()
        return self.dir


def _rate(audio_s: float, t0: float, n_skipped: int) -> str:
    rate = f"{audio_s / max(time.perf_counter() - t0, 1e-9):.1f}x realtime"
    return rate + (f", {n_skipped} skipped" if n_skipped else "")


def split_summary(label: str, info: dict, manifest_path: Path) -> str:
    """The one line an extracted split ends with: files cached, files skipped counted by reason, decoder messages
    counted; the lists are in the manifest (``errors``, ``decoder_messages``), never one line per file."""
    from marble.results.accounting import reason_counts

    errs = info.get("errors") or []
    line = f"[marble extract] {label}: {info.get('n_ok')} of {info.get('n_items', info.get('n_ok'))} files cached"
    if errs:
        line += f", {len(errs)} skipped ({reason_counts(errs)})"
    said = info.get("decoder_messages") or {}
    if said.get("n_lines"):
        line += f"; the decoder printed {said['n_lines']} message line(s) about {said['n_files']} file(s)"
    if errs or said.get("n_lines"):
        keys = " and ".join(k for k, on in (("errors", errs), ("decoder_messages", said.get("n_lines"))) if on)
        line += f"; see {keys} in {manifest_path}"
    return line


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on a terminal, a start and an end line otherwise (``marble.progress.Stage``)."""
    from marble.progress import Stage

    return Stage(desc, total, "file", enabled=enabled).__enter__()


def extract(
    card,
    encoder,
    items_by_split: dict[str, Sequence],
    cache_root: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    device: str = "auto",
    batch_size: int = 8,
    num_workers: int = 0,
    dtype: str = "auto",
    states: str | Sequence[int] | None = None,
    overwrite: bool = False,
    unit_size: int = 32,
    max_chunk_seconds: float = 60.0,
    keep_units: bool = False,
    progress: bool = True,
    shard: Shard | None = None,
    on_unit: Callable[[str, int], None] | None = None,
    listed: dict[str, dict] | None = None,
    tf32: bool = False,
) -> Path:
    """Extract (or resume) the feature cache of ``encoder`` on ``card``; returns the cache folder
    ``<cache_root>/<slug of the encoder's cache key>/<task id>`` (``marble.encoders.identity``).

    ``items_by_split``: ``{split: [Item, ...]}``. ``batch_size`` counts windows; ``unit_size``
    counts items per committed unit (a resumed run keeps the recorded one). ``states`` (frame tasks
    only) keeps a subset of hidden states. ``on_unit(split, k)`` is called after each committed
    unit. Under ``torchrun`` the units are sharded over ranks (see ``marble.distributed``).
    ``listed`` (``{split: {"n_listed": n, "missing": [files]}}``, from the dataset's check) records how
    many files the official split (or user CSV) has and which are not on disk, so a result can say
    what it did not score. Matmuls run in full fp32 (PROTOCOL §2); ``tf32`` allows TensorFloat-32 matmuls, a
    speed option the manifest records (``tf32_matmul``) and the submission check flags.
    """
    job = _Job(card, encoder, items_by_split, cache_root, splits, device, batch_size, num_workers, dtype, states,
               overwrite, unit_size, max_chunk_seconds, keep_units, progress, shard, on_unit, listed, tf32)
    return job.run()
