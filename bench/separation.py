"""MUSDB18 evaluation cost per track: time and peak memory of whole-track separation as the probe
does it (encoder in pieces of <= 90 s; then streamed in blocks of 300 STFT frames: the four open-unmix
heads of the card's size with their LSTM state carried, Wiener EM with a residual, overlap-add) for a
synthetic stereo track of ``--seconds`` in the MUSDB18-HQ wav layout.

    python bench/separation.py --model handcrafted --seconds 60 120 --device cpu
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="handcrafted")
    ap.add_argument("--seconds", type=float, nargs="+", default=[60.0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layer", type=int, default=-1)
    args = ap.parse_args()

    from marble.datasets.base import Item
    from marble.encoders import load_encoder
    from marble.probe.frames import FrameFeatures
    from marble.probe.heads import head_kind
    from marble.registry import get_card
    from marble.separation import N_FFT, align_frames, mono_magnitude, separate_track
    from marble.separation.train import EvalTrack, streamed_heads
    from marble.separation.stems import TrackStems

    card = get_card("musdb")
    enc = load_encoder(args.model, device=args.device).eval()
    layer = args.layer % enc.num_states
    sources = card.vocabulary()
    heads = [head_kind(card).build(card, enc.dim, N_FFT // 2 + 1).to(args.device).eval() for _ in sources]
    print(f"model={args.model} device={args.device} layer={layer} head={card.head}")
    for seconds in sorted(args.seconds):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            n = int(seconds * 44100)
            rng = np.random.default_rng(0)
            for s in sources + ["mixture"]:
                sf.write(d / f"{s}.wav", (0.1 * rng.standard_normal((n, 2))).astype(np.float32), 44100, subtype="PCM_16")
            item = Item(uid="bench", path=d / "mixture.wav",
                        extra={"is_wav": True, "sources": {s: d / f"{s}.wav" for s in sources}})
            ev = EvalTrack(item, TrackStems(item, sources, enc.sample_rate))
            feats = FrameFeatures(enc, [layer], args.device, None, "test", 0.0, card)
            rss0 = peak_rss_mb()
            t0 = time.perf_counter()
            with torch.no_grad():
                x = feats(item)[None]  # [1, 1, T, H]
                mix = ev.mixture().to(args.device)
                mag = mono_magnitude(mix)[None]
                t_enc = time.perf_counter() - t0
                x = align_frames(x, mag.shape[-1], dim=-2)
                del mag
                row = [SimpleNamespace(model=h, layer=0) for h in heads]
                t_head = 0.0  # the heads run inside the stream, block by block
                est = separate_track(mix.cpu(), streamed_heads(row, x, [0], args.device))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            t_wiener = dt - t_enc - t_head
            gpu = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else 0.0
            rss = peak_rss_mb()
        m = seconds / 60
        print(f"track={seconds:.0f}s time={dt:.1f}s ({dt / m:.1f} s per audio minute: encoder + mixture read {t_enc / m:.1f}, "
              f"4 heads + Wiener EM + iSTFT streamed {t_wiener / m:.1f}) peak_rss={rss:.0f}MB "
              f"(+{rss - rss0:.0f}MB over this process's earlier peak) gpu_peak={gpu:.0f}MB est={tuple(est.shape)}")


if __name__ == "__main__":
    main()
