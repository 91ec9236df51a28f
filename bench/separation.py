"""MUSDB18 costs: a whole constrained sweep, phase by phase, and one track's reconstruction.

``--sweep`` runs the constrained MUSDB sweep (``marble.probe.sequence.run``, the card's schedule and
per-source models) on a synthetic bench fixture in the MUSDB18-HQ wav layout (``--tracks`` tracks a
split of ``--track-seconds``) with the handcrafted encoder and a head of ``--hidden`` units, timing each
phase (wall and process CPU): training epochs, validation epochs (each active model's reconstruction and
SDR), the final per-source selection with test (and museval) of the selected models. ``--out`` keeps the
result JSON, so two code versions can be compared byte for byte (wall-time fields aside).

    python bench/separation.py --sweep --out /tmp/sweep.json               # the bench fixture, CPU
    python bench/separation.py --sweep --device cuda --hidden 512          # the card's head on a GPU

Without ``--sweep``: one source model of the card's size separates one synthetic stereo track of each
``--seconds`` as the probe evaluates it (encoder pieces, LSTM streamed block by block, per-source Wiener
EM, overlap-add): time per minute of audio and peak memory.

    python bench/separation.py --seconds 60 120 --device cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf
import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Phases:
    """Wall and process-CPU seconds per named phase; ``wrap(cls, name, phase)`` times a method."""

    def __init__(self):
        self.wall, self.cpu, self.calls = defaultdict(float), defaultdict(float), defaultdict(int)
        self.stack: list[str] = []

    def wrap(self, owner, name: str, phase) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            label = phase(*args, **kwargs) if callable(phase) else phase
            if self.stack:  # time a phase once, in its outermost call
                return fn(*args, **kwargs)
            self.stack.append(label)
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.stack.pop()
                self.wall[label] += time.perf_counter() - t
                self.cpu[label] += time.process_time() - c
                self.calls[label] += 1

        setattr(owner, name, timed)


def sweep(args) -> None:
    from marble.probe import sequence
    from marble.registry import Head, get_card
    from marble.separation import train as T
    from marble.testing.fixtures import write_musdb

    torch.manual_seed(0)
    card = get_card("musdb")
    card = dataclasses.replace(card, head=Head(kind="openunmix", hidden=args.hidden, layers=3, dropout=0.4))
    layers = [int(x) if x != "weighted" else x for x in args.layers.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    phases = Phases()
    phases.wrap(T.Separation, "train_epoch", "train")
    phases.wrap(T.Separation, "validate_epoch", "valid epochs")
    phases.wrap(T, "_result", "selection + test")
    with tempfile.TemporaryDirectory() as d:
        data = Path(d)
        write_musdb(data, per_split=args.tracks, seconds=args.track_seconds)
        t, c = time.perf_counter(), time.process_time()
        r = sequence.run(card, "handcrafted", data_dir=data, results_dir=None, layers=layers, lrs=lrs,
                         max_epochs=args.epochs, device=args.device, chunks_per_epoch=args.chunks, museval=args.museval,
                         batch_size=args.batch_size)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    rows, models = len(layers) * len(lrs), len(layers) * len(lrs) * 4
    valid_min = args.tracks * args.track_seconds / 60
    model_epochs = sum(v[1] for row in r["training"]["per_source_epochs"].values() for v in row.values())
    print(f"marble from {T.__file__}")
    print(f"fixture: {args.tracks} tracks x {args.track_seconds:g} s per split; {rows} rows ({len(layers)} layer options x "
          f"{len(lrs)} LRs) x 4 sources = {models} models, head {args.hidden}; {args.chunks} chunks an epoch, "
          f"{args.epochs} epochs max ({model_epochs} model-epochs run); device {args.device}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'phase':<18} {'calls':>5} {'wall s':>9} {'cpu s':>9}")
    for k in phases.wall:
        print(f"{k:<18} {phases.calls[k]:>5} {phases.wall[k]:>9.1f} {phases.cpu[k]:>9.1f}")
    print(f"{'whole sweep':<18} {'':>5} {wall:>9.1f} {cpu:>9.1f}   peak RSS {peak_rss_mb():.0f} MB")
    ve = phases.wall["valid epochs"]
    print(f"validation: {ve / max(1, phases.calls['valid epochs']):.1f} s wall an epoch; "
          f"{ve / max(1, model_epochs) * 4 / valid_min:.2f} s wall per minute of validation audio per row (4 models)")
    print(f"selected: {json.dumps(r['selected']['per_source'])}")
    print(f"test: {json.dumps(r['test'])}")
    if args.out:
        r = json.loads(json.dumps(r))
        for k in ("wall_time_s", "peak_memory_mb", "created", "git_hash", "command"):
            r["manifest"].pop(k, None)
        Path(args.out).write_text(json.dumps(r, sort_keys=True, indent=1))
        print(f"result (without wall-time fields) -> {args.out}")


def per_track(args) -> None:
    from marble.datasets.base import Item
    from marble.encoders import load_encoder
    from marble.probe.frames import FrameFeatures
    from marble.probe.heads import head_kind
    from marble.registry import get_card
    from marble.separation import N_FFT, align_frames, num_frames, separate_target
    from marble.separation.stems import TrackStems
    from marble.separation.train import EvalTrack, streamed_head

    card = get_card("musdb")
    enc = load_encoder(args.model, device=args.device).eval()
    layer = args.layer % enc.num_states
    sources = card.vocabulary()
    head = head_kind(card).build(card, enc.dim, N_FFT // 2 + 1).to(args.device).eval()
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
            ev = EvalTrack(item, TrackStems(item, sources, enc.sample_rate, mixture=True))
            feats = FrameFeatures(enc, [layer], args.device, None, "test", 0.0, card)
            rss0 = peak_rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                x = feats(item)[None]  # [1, 1, T, H]
                mix = ev.mixture().to(args.device)
                t_enc = time.perf_counter() - t0
                x = align_frames(x, num_frames(mix.shape[-1]), dim=-2, fill="zero")
                est = separate_target(mix, streamed_head(SimpleNamespace(model=head, layer=0), x, [0], args.device))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            gpu = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else 0.0
            rss = peak_rss_mb()
        m = seconds / 60
        print(f"track={seconds:.0f}s time={dt:.1f}s cpu={cpu:.1f}s ({dt / m:.1f} s per audio minute: encoder + mixture "
              f"read {t_enc / m:.1f}, one source model + Wiener EM + iSTFT streamed {(dt - t_enc) / m:.1f}) "
              f"peak_rss={rss:.0f}MB (+{rss - rss0:.0f}MB over this process's earlier peak) gpu_peak={gpu:.0f}MB "
              f"est={tuple(est.shape)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", action="store_true", help="time a whole constrained sweep on the bench fixture")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    g = ap.add_argument_group("--sweep")
    g.add_argument("--tracks", type=int, default=2, help="tracks per split (valid ones carry real validation names)")
    g.add_argument("--track-seconds", type=float, default=30.0)
    g.add_argument("--layers", default="0,3,weighted")
    g.add_argument("--lrs", default="1e-3,5e-3")
    g.add_argument("--epochs", type=int, default=2)
    g.add_argument("--chunks", type=int, default=96, help="training chunks an epoch")
    g.add_argument("--batch-size", type=int, default=4, help="micro-batch (x 8 accumulated per step)")
    g.add_argument("--hidden", type=int, default=32, help="head width (the card: 512)")
    g.add_argument("--museval", action="store_true", help="also museval for the selected models (slow)")
    g.add_argument("--out", default=None, help="write the result JSON (without wall-time fields) here")
    g = ap.add_argument_group("per track")
    g.add_argument("--model", default="handcrafted")
    g.add_argument("--seconds", type=float, nargs="+", default=[60.0])
    g.add_argument("--layer", type=int, default=-1)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sweep(args) if args.sweep else per_track(args)


if __name__ == "__main__":
    main()
