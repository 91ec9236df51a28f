"""Wall time of the constrained sweep: batched (all probes at once) vs one configuration at a time.

A GTZAN-sized synthetic cache (442/197/290 clips, 13 hidden states x 768, 10 classes, a class
signal in a few middle states) is written in the real cache format, then:

* batched: ``marble.probe.clip.run_clip`` — the full (13 states + weighted) x 6 LR = 84 probes;
* one at a time: ``train_sweep`` with a single probe, for a few configurations (``--single``),
  extrapolated linearly to all 84 (said so in the output). Same code path, same process, same device.

Usage: python bench/probe.py [--device cpu|cuda] [--max-epochs N] [--single 3] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marble.cache.store import ClipSplit, cache_dir, write_clip_split, write_json  # noqa: E402
from marble.probe.clip import run_clip  # noqa: E402
from marble.probe.config import card_plan  # noqa: E402
from marble.probe.select import Scorer  # noqa: E402
from marble.probe.sweep import Probe, train_sweep  # noqa: E402
from marble.registry import get_card  # noqa: E402

SIZES = {"train": 442, "valid": 197, "test": 290}
S, H, C = 13, 768, 10


def synth(n: int, rng: np.random.Generator, dirs: np.ndarray, prefix: str) -> ClipSplit:
    y = rng.integers(0, C, n)
    x = rng.normal(size=(n, S, H)).astype(np.float32)
    for s, strength in ((5, 0.3), (6, 0.5), (7, 0.6), (8, 0.4)):
        x[:, s] += strength * dirs[y]
    uids = np.array([f"{prefix}{i}" for i in range(n)])
    return ClipSplit(x.astype(np.float16), uids, np.zeros(n, int), uids, y.astype(np.int64))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-epochs", type=int, default=None, help="cap (default: the card's 100)")
    ap.add_argument("--single", type=int, default=3, help="configs timed one at a time (extrapolated)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the figures here")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    card = get_card("gtzan")
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(C, H)).astype(np.float32) / np.sqrt(H) * 4
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = cache_dir(root / "cache", "bench/synthetic", "gtzan")
        splits = {k: synth(n, rng, dirs, k[0]) for k, n in SIZES.items()}
        content = {k: write_clip_split(d / k, sp) for k, sp in splits.items()}  # the files' sha256
        write_json(d / "manifest.json", {
            "encoder": {"name": "bench/synthetic"}, "task": {"id": card.id, "version": card.version, "sha256": card.sha256},
            "splits": {k: {"status": "complete", "n_items": len(set(sp.uids)), "errors": [], "content_sha256": content[k]}
                       for k, sp in splits.items()}})

        epochs_seen = []
        t0 = time.perf_counter()
        r = run_clip(card, "bench/synthetic", cache_root=root / "cache", results_dir=root / "res", device=a.device,
                     max_epochs=a.max_epochs, checkpoint_every=10**9, on_epoch=lambda e, n, b: epochs_seen.append(e))
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        batched = time.perf_counter() - t0
        n_probes = len(r["sweep"])
        probe_epochs = sum(x["epochs"] for x in r["sweep"])

        # one configuration at a time: same loop with P = 1 (data already on the device)
        dev = torch.device(a.device)
        X = {k: torch.from_numpy(np.array(sp.features)).to(dev) for k, sp in splits.items()}
        ytr = torch.as_tensor(splits["train"].labels)
        from marble.metrics import METRICS

        sv = Scorer("multiclass", splits["valid"].uids, splits["valid"].groups, splits["valid"].labels,
                    {"accuracy": METRICS["accuracy"]}, card.vocabulary())
        plan = card_plan(card, a.max_epochs)
        rows = r["sweep"]
        pick = np.linspace(0, len(rows) - 1, a.single).round().astype(int)
        single_times, single_epochs = [], []
        for i in pick:
            p = Probe(rows[i]["layer"], rows[i]["lr"], 1234)
            t1 = time.perf_counter()
            o = train_sweep([p], plan.train, X["train"], ytr, X["valid"], sv.main("accuracy"), num_outputs=C)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            single_times.append(time.perf_counter() - t1)
            single_epochs.append(o.epochs[0])
            assert o.epochs[0] == rows[i]["epochs"], "single run diverged from its batched twin"
        per_epoch = sum(single_times) / sum(single_epochs)
        one_at_a_time = per_epoch * probe_epochs
        out = {
            "device": a.device, "torch_threads": torch.get_num_threads(), "probes": n_probes,
            "max_epochs": plan.train.max_epochs, "sweep_epochs": max(epochs_seen), "probe_epochs": probe_epochs,
            "batched_s": round(batched, 2),
            "single_configs_timed": [f"{rows[i]['layer']}@{rows[i]['lr']:g}" for i in pick],
            "single_s": [round(t, 2) for t in single_times], "single_epochs": single_epochs,
            "one_at_a_time_extrapolated_s": round(one_at_a_time, 1),
            "speedup": round(one_at_a_time / batched, 1),
            "selected": r["selected"], "test": r["test"],
        }
    print(json.dumps(out, indent=2))
    print(f"batched: {batched:.1f} s for {n_probes} probes ({probe_epochs} probe-epochs); one at a time (timed "
          f"{a.single} configs, extrapolated by probe-epochs): {one_at_a_time:.1f} s -> x{out['speedup']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
