"""``marble demo``: the whole pipeline (user dataset -> features -> constrained sweep -> leaderboard)
on a synthetic task, offline, in about a minute on a laptop CPU.

The task is 4-way instrument recognition: notes of random pitch played by four synthetic
"instruments" that differ in harmonic spectrum and envelope (organ: odd harmonics, sustained;
pluck: rich spectrum, fast decay; flute: nearly sinusoidal with vibrato and breath noise; brass:
bright spectrum, slow attack). It is written exactly as a user would bring their own data — a
folder of wavs, a ``metadata.csv`` (path, label, split) and a task card with ``dataset = "folder"``
— so the demo exercises the same code paths as a real user task.
"""

from __future__ import annotations

import csv
import sys
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TASK_ID = "demo-instruments"
SAMPLE_RATE = 24000
INSTRUMENTS = ("organ", "pluck", "flute", "brass")
PITCHES = tuple(range(48, 73))  # MIDI C3..C5
DEMO_MAX_EPOCHS = 30


def _note(instrument: str, midi: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    sr = SAMPLE_RATE
    t = np.arange(int(seconds * sr)) / sr
    f0 = 440.0 * 2 ** ((midi - 69) / 12) * (1 + rng.normal(0, 0.003))
    if instrument == "organ":
        harmonics = {k: 1.0 / k for k in (1, 3, 5, 7, 9)}
        env = np.minimum(1.0, t / 0.02) * np.minimum(1.0, (seconds - t) / 0.05)
    elif instrument == "pluck":
        harmonics = {k: 1.0 / k ** 0.7 for k in range(1, 13)}
        env = np.exp(-t * rng.uniform(3.0, 5.0)) * np.minimum(1.0, t / 0.002)
    elif instrument == "flute":
        harmonics = {1: 1.0, 2: 0.12, 3: 0.04}
        env = np.minimum(1.0, t / 0.1) * np.minimum(1.0, (seconds - t) / 0.1)
    else:  # brass
        harmonics = {k: 1.0 / k ** 0.4 for k in range(1, 10)}
        env = np.minimum(1.0, t / 0.25) ** 2 * np.minimum(1.0, (seconds - t) / 0.1)
    vibrato = 1 + (0.006 * np.sin(2 * np.pi * 5.5 * t) if instrument == "flute" else 0.0)
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / sr
    y = sum(a * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k, a in harmonics.items() if k * f0 < sr / 2)
    y = y * env
    if instrument == "flute":
        y = y + 0.03 * rng.standard_normal(len(t)) * env
    y = y / (np.abs(y).max() + 1e-9) * rng.uniform(0.3, 0.8)
    return (y + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def card_toml(max_epochs: int = DEMO_MAX_EPOCHS) -> str:
    labels = ", ".join(f'"{i}"' for i in INSTRUMENTS)
    return f'''id = "{TASK_ID}"
version = 1
protocol = "user-demo"
name = "Demo: synthetic instrument recognition"
description = "4 synthetic instruments (distinct harmonic spectra and envelopes) playing random notes; written by `marble demo`."
dataset = "folder"
prediction = "multiclass"

[source]
subdir = "{TASK_ID}"
metadata = "metadata.csv"

[labels]
values = [{labels}]

[splits]
source = "metadata.csv"

[training]
loss = "cross-entropy"
scheduler_patience = 3
early_stop_patience = 6
max_epochs = {int(max_epochs)}

[metrics]
main = "accuracy"
names = ["accuracy"]
aggregate = ["accuracy"]

[decisions]
max_epochs = "reduced to {int(max_epochs)} (constrained protocol: 100) so the demo runs in about a minute on a CPU"
'''


def synthesize(workdir: str | os.PathLike, *, clips_per_class: int = 60, seconds: float = 2.0, seed: int = 0,
               max_epochs: int = DEMO_MAX_EPOCHS) -> tuple[Path, Path]:
    """Write the audio, ``metadata.csv`` and the task card. Returns ``(data_dir, tasks_dir)``.
    Deterministic for a given seed; existing identical files are kept (re-running is cheap)."""
    import soundfile as sf

    workdir = Path(workdir)
    data_dir, tasks_dir = workdir / "data", workdir / "tasks"
    root = data_dir / TASK_ID
    rng = np.random.default_rng(seed)
    rows = []
    for label in INSTRUMENTS:
        for i in range(clips_per_class):
            # 60/20/20 split, interleaved so every split sees every instrument and pitch range
            split = ("train", "train", "train", "valid", "test")[i % 5]
            rel = f"audio/{label}/{label}_{i:03d}.wav"
            midi = int(rng.choice(PITCHES))
            y = _note(label, midi, seconds, rng)
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                sf.write(str(path), y, SAMPLE_RATE, subtype="PCM_16")
            rows.append({"path": rel, "label": label, "split": split, "pitch": midi})
    with (root / "metadata.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split", "pitch"])
        w.writeheader()
        w.writerows(rows)
    tasks_dir.mkdir(parents=True, exist_ok=True)
    (tasks_dir / f"{TASK_ID}.toml").write_text(card_toml(max_epochs))
    return data_dir, tasks_dir


def tiny_mert(directory: str | os.PathLike, seed: int = 0) -> Path:
    """A small random MERT-v1-shaped checkpoint in the Hugging Face layout of the released MERT repos
    (``config.json`` with ``model_type: mert_model`` + ``model.safetensors``), loaded back by path."""
    import torch
    from transformers import HubertConfig, HubertModel

    from marble.encoders.mert import save_mert_dir

    directory = Path(directory)
    if (directory / "model.safetensors").is_file() and (directory / "config.json").is_file():
        return directory
    shape = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                 conv_dim=[32] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
                 conv_bias=False, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4,
                 feat_extract_norm="group", feat_proj_layer_norm=True, do_stable_layer_norm=False)
    torch.manual_seed(seed)
    model = HubertModel(HubertConfig(**shape)).eval()
    cfg = {"_name_or_path": "marble-demo-tiny-mert", "architectures": ["MERTModel"], "model_type": "mert_model",
           "sample_rate": SAMPLE_RATE, "feature_extractor_cqt": False, "attention_relax": -1.0, "deepnorm": False,
           "feat_extract_activation": "gelu", "hidden_act": "gelu", "layer_norm_eps": 1e-5, **shape}
    save_mert_dir(directory, cfg, model.state_dict(), normalize=True, sample_rate=SAMPLE_RATE)
    return directory


@dataclass
class DemoRun:
    workdir: Path
    results_dir: Path
    tasks_dir: Path
    models: list[str]
    results: dict  # model -> result dict
    leaderboard: object
    seconds: float


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        import sys

        print(msg, file=sys.stderr, flush=True)


def run_demo(workdir: str | os.PathLike = "marble-demo", *, mert: bool = False, max_epochs: int = DEMO_MAX_EPOCHS,
             clips_per_class: int = 60, seed: int = 0, device: str = "cpu", quiet: bool = False) -> DemoRun:
    """Synthesize the task, extract features, run the constrained sweep and build the leaderboard."""
    import torch

    from marble.cache.extract import extract
    from marble.datasets import get_dataset
    from marble.encoders import load_encoder
    from marble.leaderboard import build
    from marble.registry import get_card
    from marble.results import read_result, result_path

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    workdir = Path(workdir)
    n_stages = 2 + 2 * (2 if mert else 1)  # synthesis, (extract, sweep) per model, leaderboard
    _say(f"[1/{n_stages}] synthesizing {len(INSTRUMENTS) * clips_per_class} clips of {len(INSTRUMENTS)} instruments "
         f"into {workdir / 'data' / TASK_ID}", quiet)
    data_dir, tasks_dir = synthesize(workdir, clips_per_class=clips_per_class, seed=seed, max_epochs=max_epochs)
    card = get_card(TASK_ID, tasks_dir)
    dataset = get_dataset(card, data_dir=data_dir)
    items = {s: dataset.items(s) for s in card.splits.names}

    specs = [("handcrafted", "handcrafted")]  # (what load_encoder takes, the name in the results)
    if mert:
        specs.append((str(tiny_mert(workdir / "models" / "tiny-mert", seed=seed)), "tiny-mert-random"))
    cache_root, results_dir = workdir / "cache", workdir / "results"
    results, models = {}, []
    for k, (spec, model) in enumerate(specs):
        encoder = load_encoder(spec, device=device)
        models.append(model)
        _say(f"[{2 + 2 * k}/{n_stages}] extracting {encoder.num_states} hidden states of {model!r} ({sum(map(len, items.values()))} files)", quiet)
        extract(card, encoder, items, cache_root, device=device, batch_size=16, num_workers=0,
                progress=not quiet)
        del encoder
        _say(f"[{3 + 2 * k}/{n_stages}] constrained sweep on {model!r}: every layer + weighted sum x "
             f"{len(card.training.learning_rates)} learning rates, at most {max_epochs} epochs (early stopping)", quiet)
        _probe(card, spec, cache_root, results_dir, device=device, max_epochs=max_epochs, name=model, quiet=quiet)
        results[model] = read_result(result_path(results_dir, model, card.id, "constrained"), tasks_dir=tasks_dir)
    _say(f"[{n_stages}/{n_stages}] leaderboard", quiet)
    lb = build(results_dir, tasks_dir=tasks_dir, reported=False)
    return DemoRun(workdir, results_dir, tasks_dir, models, results, lb, time.perf_counter() - t0)


def _probe(card, model: str, cache_root: Path, results_dir: Path, *, device: str, max_epochs: int,
           name: str | None = None, quiet: bool = False) -> None:
    """The constrained sweep through the probe API (``marble probe`` does the same)."""
    try:
        from marble.probe.clip import run_clip
    except ImportError as e:
        raise RuntimeError(f"the probe package is not available in this installation ({e}); "
                           "`marble demo` needs marble.probe") from None
    from marble.progress import SweepProgress

    with SweepProgress(f"    {name or model} sweep", max_epochs, enabled=not quiet) as on_epoch:
        run_clip(card, model, cache_root=cache_root, results_dir=results_dir, track="constrained", device=device,
                 max_epochs=max_epochs, fresh=True, name=name, on_epoch=on_epoch)
