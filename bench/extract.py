"""Extraction throughput (x realtime = audio seconds / wall seconds) on GTZAN-shaped synthetic audio
(30 s, 22.05 kHz, 16-bit wav) through the MERT-v1-95M architecture with random weights (built
from a ``HubertConfig`` matching PROTOCOL §7; no download). Two paths, same process, same model:

* ``reference``: what the reference scripts do - fp32, one file at a time, all hidden states
  copied to the host, time mean on the host;
* ``marble``: ``marble.cache.extract.extract`` - DataLoader workers decoding/resampling in
  parallel, equal-length batching, fp32 (TF32 matmuls on CUDA; ``--dtype bf16`` for autocast), time
  mean on the device, fp16 host copy, committed units.

    python bench/extract.py --device cpu --n-clips 4
    python bench/extract.py --device cuda --n-clips 64 --batch-size 16 --num-workers 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marble.audio import load  # noqa: E402
from marble.cache.extract import extract, resolve_device  # noqa: E402
from marble.datasets.base import Item  # noqa: E402
from marble.encoders.base import Encoder  # noqa: E402
from marble.registry import builtin_cards_dir, load_card  # noqa: E402


def mert_v1_95m_config():
    from transformers import HubertConfig

    return HubertConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_bias=False,
        feat_extract_norm="group", feat_proj_layer_norm=True, do_stable_layer_norm=False,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, hidden_act="gelu")


class RandomMert(Encoder):
    """MERT-v1-95M-shaped HubertModel with random weights (for timing only)."""

    name = "bench/mert-v1-95m-random"
    sample_rate, frame_rate, num_states, dim = 24000, 75.0, 13, 768

    def __init__(self):
        super().__init__()
        from transformers import HubertModel

        torch.manual_seed(0)
        self.model = HubertModel(mert_v1_95m_config()).eval()

    def prepare(self, wav):
        return (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)

    def num_frames(self, n):
        for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
            n = (n - k) // s + 1
        return max(n, 0)

    def hidden_states(self, wav, upto=None):
        out = self.model(wav, output_hidden_states=True).hidden_states
        return torch.stack(out[: (upto + 1) if upto is not None else None], dim=1)

    def identity(self):
        return {**super().identity(), "weights": "random seed 0"}


def make_clips(root: Path, n: int) -> list[Item]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        t = np.arange(30 * 22050) / 22050
        x = 0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = root / f"clip{i:03d}.wav"
        sf.write(str(path), x.astype(np.float32), 22050, subtype="PCM_16")
        items.append(Item(uid=f"clip{i:03d}", path=path, label=i % 10))
    return items


def reference_run(enc: RandomMert, items: list[Item], device: torch.device) -> float:
    t0 = time.perf_counter()
    for it in items:
        wav = enc.prepare(load(it.path, 24000, duration=30.0))
        with torch.no_grad():
            hs = enc.model(torch.from_numpy(wav.astype(np.float32))[None].to(device), output_hidden_states=True).hidden_states
        host = [h.cpu().numpy() for h in hs]  # every frame of every state to the host
        np.stack([h.mean(axis=1) for h in host])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-clips", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    card = load_card(builtin_cards_dir() / "gtzan.toml", origin="builtin")
    enc = RandomMert().to(device)
    with tempfile.TemporaryDirectory() as tmp:
        items = make_clips(Path(tmp), args.n_clips)
        audio_s = 30.0 * len(items)
        # warm-up (allocator, kernels) outside the timings
        with torch.no_grad():
            enc.model(torch.zeros(1, 24000 * 5, device=device))
        rows = []
        if not args.skip_reference:
            rows.append(("reference (fp32, 1 file, host pooling)", reference_run(enc, items, device)))
        t0 = time.perf_counter()
        extract(card, enc, {"train": items}, Path(tmp) / "cache", device=str(device), batch_size=args.batch_size,
                num_workers=args.num_workers, dtype=args.dtype, progress=False, overwrite=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rows.append((f"marble extract (batch {args.batch_size}, {args.num_workers} workers, dtype {args.dtype})",
                     time.perf_counter() - t0))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"MERT-v1-95M architecture (random weights), {len(items)} x 30 s clips, device {name}")
    for label, wall in rows:
        print(f"  {label:<60s} {wall:8.2f} s  {audio_s / wall:8.1f}x realtime")


if __name__ == "__main__":
    main()
