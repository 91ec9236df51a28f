"""A synthetic two-source MUSDB18 in the wav (MUSDB18-HQ) layout, test helper:
``{train,test}/<track>/{mixture,vocals,drums,bass,other}.wav`` (44.1 kHz stereo, 16 bit), as
``musdb.DB(root, is_wav=True)`` reads it. vocals = a harmonic tone with vibrato, drums = noise
bursts; bass and other are near-silent noise (so no source is exactly silent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 44100
SOURCES = ["vocals", "drums", "bass", "other"]
TRACKS = {"train": ["Fixture A - One", "Fixture B - Two", "Actions - One Minute Smile"], "test": ["Fixture C - Three"]}


def make_sources(seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(300, 500) * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    vocals = sum(np.sin(h * phase) / h for h in (1, 2, 3)) * 0.2
    drums = np.zeros(n)
    period = int(SR * rng.uniform(0.3, 0.5))
    env = np.exp(-np.arange(int(0.08 * SR)) / (0.015 * SR))
    for i in range(int(rng.integers(0, period)), n - len(env), period):
        drums[i:i + len(env)] += rng.standard_normal(len(env)) * env * 0.5
    drums *= np.sqrt(np.sum(vocals ** 2) / np.sum(drums ** 2))  # equal energy: the mixture baseline is ~0 dB
    out = {"vocals": vocals, "drums": drums}
    for s in ("bass", "other"):
        out[s] = 1e-3 * rng.standard_normal(n)
    pan = {"vocals": (1.0, 1.0), "drums": (0.8, 1.0), "bass": (1.0, 1.0), "other": (1.0, 1.0)}
    return {s: np.stack([x * pan[s][0], x * pan[s][1]], axis=1).astype(np.float32) for s, x in out.items()}


def write_musdb_wav(root: Path, seconds: float = 8.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for subset, names in TRACKS.items():
        for name in names:
            d = root / subset / name
            d.mkdir(parents=True, exist_ok=True)
            src = make_sources(seconds, rng)
            for s, x in src.items():
                sf.write(d / f"{s}.wav", x, SR, subtype="PCM_16")
            sf.write(d / "mixture.wav", sum(src.values()), SR, subtype="PCM_16")
    return root


def tiny_card(hidden: int = 16, dropout: float = 0.4, chunk_seconds: float = 1.0):
    """The musdb card with a narrow head and short training chunks (same logic, CPU-sized)."""
    import dataclasses

    from marble.registry import Head, get_card

    card = get_card("musdb")
    return dataclasses.replace(card, head=Head(kind="openunmix", hidden=hidden, layers=3, dropout=dropout),
                               audio=dataclasses.replace(card.audio, train_chunk_seconds=chunk_seconds))


def separation(root: Path, card=None, rows=((3, 1e-3),), **options):
    """A ``marble.separation.train.Separation`` on the wav fixture under ``root`` (written if absent),
    handcrafted encoder, one probe per (layer, lr) of ``rows``."""
    from marble.datasets import get_dataset
    from marble.encoders import load_encoder
    from marble.probe.sweep import Probe
    from marble.separation.train import Separation

    if not (root / "MUSDB18").is_dir():
        write_musdb_wav(root / "MUSDB18", seconds=8.0)
    card = card or tiny_card()
    ds = get_dataset(card, root, allow_partial=True)
    items = {s: ds.items(s) for s in ("train", "valid", "test")}
    enc = load_encoder("handcrafted", device="cpu").eval()
    return Separation(card, enc, items, [Probe(layer, lr, 1234) for layer, lr in rows], "cpu", None,
                      {"museval": False, **options})


def set_mask(model, mask) -> None:
    """Make an open-unmix head (eval mode) output ``relu(mask[f]) * mixture magnitude``: fc3 zero,
    bn3 the identity, output mean = the mask."""
    import torch

    head = model[1] if isinstance(model, torch.nn.Sequential) else model
    with torch.no_grad():
        head.fc3.weight.zero_()
        head.bn3.running_mean.zero_()
        head.bn3.running_var.fill_(1.0)
        head.bn3.weight.fill_(1.0)
        head.bn3.bias.zero_()
        head.output_mean.copy_(torch.as_tensor(mask, dtype=torch.float32).expand_as(head.output_mean))
