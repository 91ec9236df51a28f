"""Shared fixtures for the extraction tests: wav files, items, task cards, a direct reference."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from marble.audio import load, windows
from marble.datasets.base import Item
from marble.registry import TaskCard, builtin_cards_dir, load_card


def write_wav(path: Path, seconds: float, sr: int = 16000, seed: int = 0, channels: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    tone = 0.3 * np.sin(2 * np.pi * (110 + 40 * seed) * t)
    data = np.stack([tone + 0.05 * rng.standard_normal(n) for _ in range(channels)], axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype="PCM_16")
    return path


def gtzan_items(root: Path, n: int = 6, seconds: float = 2.0, offset_seed: int = 0) -> list[Item]:
    """GTZAN-like stereo 22.05 kHz clips; pairs of files share a length (so batching happens)."""
    genres = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
    out = []
    for i in range(n):
        g = genres[i % len(genres)]
        p = write_wav(root / "GTZAN" / g / f"{g}.{i:05d}.wav", seconds + 0.1 * (i // 2), sr=22050, seed=i + offset_seed)
        out.append(Item(uid=f"{g}.{i:05d}", path=p, label=i % len(genres)))
    return out


def card_variant(tmp: Path, base: str, new_id: str, audio: str) -> "TaskCard":
    """A copy of a built-in card with another id and [audio] table (shorter fixtures, same logic)."""
    text = (builtin_cards_dir() / f"{base}.toml").read_text()
    text = re.sub(r'^id = ".*"$', f'id = "{new_id}"', text, count=1, flags=re.M)
    text = re.sub(r"\[audio\]\n(?:[^\[\n][^\n]*\n)*", "", text)
    text += "\n[audio]\n" + audio + "\n"
    path = tmp / f"{new_id}.toml"
    path.write_text(text)
    return load_card(path)


def builtin(name: str):
    return load_card(builtin_cards_dir() / f"{name}.toml", origin="builtin")


def reference_windows(card, enc, item: Item, states=None) -> list[np.ndarray]:
    """Direct, un-batched computation: per window, hidden states in float64, then time mean
    (clip) or frames (frame tasks)."""
    a = card.audio
    durs = [d for d in (item.duration, a.crop_seconds) if d is not None]
    wav = load(item.path, enc.sample_rate, offset=item.offset + a.crop_offset_seconds, duration=min(durs) if durs else None)
    clip = enc.prepare(wav).astype(np.float32)
    out = []
    for s, b in windows(len(clip), enc.sample_rate, a.window_seconds, a.min_window_seconds):
        with torch.no_grad():
            hs = enc.hidden_states(torch.from_numpy(clip[s:b])[None])[0].double().numpy()  # [S, T, H]
        if states is not None:
            hs = hs[states]
        out.append(hs.mean(axis=1) if card.is_clip_level else hs)
    return out


def dump_items(items, path: Path) -> None:
    import json

    path.write_text(json.dumps([{"uid": it.uid, "path": str(it.path), "label": it.label, "offset": it.offset,
                                 "duration": it.duration, "group": it.group} for it in items]))


def read_items(path: Path) -> list[Item]:
    import json

    return [Item(uid=d["uid"], path=Path(d["path"]), label=d["label"], offset=d["offset"], duration=d["duration"],
                 group=d["group"]) for d in json.loads(Path(path).read_text())]


def dist_worker(rank: int, world: int, port: int, items_json: str, cache: str, use_group: bool) -> None:
    """One rank of the distributed test (torch.multiprocessing.spawn target)."""
    import os

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool (it would hang)
    from extract_plugin import ToyEncoder
    from marble.distributed import Shard
    from marble.cache.extract import extract

    items = read_items(Path(items_json))
    shard = None
    if use_group:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    else:
        shard = Shard(rank, world)
    extract(builtin("gtzan"), ToyEncoder(), {"train": items[:6], "valid": items[6:]}, cache, unit_size=2,
            batch_size=2, progress=False, device="cpu", shard=shard)
    if use_group:
        dist.destroy_process_group()
