"""GTZAN-beat probe costs on CPU (PROTOCOL §4): (1) the sweep of every (layer, LR) beat head in one
batched pass vs one head at a time, (2) what a random 10 s training crop costs encoded on the fly vs
read from a cache of pre-encoded crops.

    python bench/beat.py --tracks 16 --seconds 30 --epochs 2 [--mert]

Data: synthetic click tracks in the GTZAN + GTZAN-Rhythm layout (``marble.testing.fixtures``), 30 s
each; the encoder is ``handcrafted`` (4 states) or, with ``--mert``, a tiny random MERT checkpoint
(``marble.demo.tiny_mert``). Both sweep paths run the real ``marble.beat.train.train_beat`` on the
same crops; the one-at-a-time path runs it once per (layer, LR).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=8, help="tracks per split")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--mert", action="store_true", help="tiny random MERT instead of the handcrafted encoder")
    ap.add_argument("--lrs", default="1e-4,1e-3,1e-2")
    args = ap.parse_args()

    import torch

    from marble.beat.train import CropSource, train_beat
    from marble.datasets import get_dataset
    from marble.encoders import load_encoder
    from marble.probe.frames import FrameFeatures
    from marble.probe.sweep import WEIGHTED, Probe
    from marble.registry import get_card
    from marble.testing import fixtures

    card = get_card("gtzan-beat")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        fixtures.write_gtzan_beat(d, per_split=args.tracks, seconds=args.seconds)
        ds = get_dataset(card, d, allow_partial=True)
        items = {s: ds.items(s) for s in ("train", "valid", "test")}
        spec = str(__import__("marble.demo", fromlist=["tiny_mert"]).tiny_mert(d / "tiny")) if args.mert else "handcrafted"
        enc = load_encoder(spec).eval()
        lrs = [float(x) for x in args.lrs.split(",")]
        layers = list(range(enc.num_states)) + [WEIGHTED]
        probes = [Probe(layer, lr) for layer in layers for lr in lrs]
        opts = {"batch_size": 8}
        n_train = len(items["train"])

        from marble.beat import dbn

        decode_s = [0.0]
        batch = dbn.DBNBeatTracker.batch

        def timed(self, *a, **k):  # time spent in DBN decoding (validation every epoch, final valid/test)
            t = time.perf_counter()
            try:
                return batch(self, *a, **k)
            finally:
                decode_s[0] += time.perf_counter() - t

        dbn.DBNBeatTracker.batch = timed
        t0 = time.perf_counter()
        train_beat(card, enc, items, probes, args.epochs, "cpu", None, dict(opts))
        batched, batched_dec = time.perf_counter() - t0, decode_s[0]
        singles, singles_dec = [], []
        for p in probes[:: max(1, len(probes) // 3)][:3]:
            decode_s[0] = 0.0
            t0 = time.perf_counter()
            train_beat(card, enc, items, [p], args.epochs, "cpu", None, dict(opts))
            singles.append(time.perf_counter() - t0)
            singles_dec.append(decode_s[0])
        one_at_a_time = float(np.mean(singles)) * len(probes)
        one_dec = float(np.mean(singles_dec)) * len(probes)

        # (2) one 10 s crop: encode on the fly vs read a pre-encoded crop from disk
        crops = CropSource(items["train"], enc, 10.0, 1)
        order, starts = crops.starts(1234, 0)
        feats = FrameFeatures(enc, list(range(enc.num_states)), "cpu", None, "train", 0.0, card)
        batch = crops.batch(order[:8], starts)
        t0 = time.perf_counter()
        x = feats.encode(np.stack([w for w, _ in batch]))
        enc_s = (time.perf_counter() - t0) / len(batch)
        arr = x[0].numpy().astype(np.float16)
        np.save(d / "crop.npy", arr)
        t0 = time.perf_counter()
        for _ in range(20):
            np.asarray(np.load(d / "crop.npy", mmap_mode="r"), dtype=np.float32)
        read_s = (time.perf_counter() - t0) / 20
    print(f"encoder={spec if not args.mert else 'tiny-mert'} states={enc.num_states} dim={enc.dim} "
          f"train_tracks={n_train} epochs={args.epochs} probes={len(probes)} threads={torch.get_num_threads()}")
    print(f"sweep batched: {batched:.1f} s; one probe at a time: {np.mean(singles):.1f} s per probe x {len(probes)} = "
          f"{one_at_a_time:.1f} s (extrapolated from {len(singles)}); ratio {one_at_a_time / batched:.1f}x")
    print(f"  of which DBN decoding: batched {batched_dec:.1f} s, one at a time {one_dec:.1f} s; without it: batched "
          f"{batched - batched_dec:.1f} s vs {one_at_a_time - one_dec:.1f} s, ratio "
          f"{(one_at_a_time - one_dec) / max(batched - batched_dec, 1e-9):.1f}x")
    print(f"10 s crop: encode on the fly {enc_s * 1000:.1f} ms; read a cached crop {read_s * 1000:.2f} ms "
          f"({arr.nbytes / 1e6:.2f} MB per crop at fp16 for {enc.num_states} states x {enc.dim})")


if __name__ == "__main__":
    main()
