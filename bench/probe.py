"""Wall time of the constrained sweep: batched (all probes at once) vs one configuration at a time.

A GTZAN-sized synthetic cache (442/197/290 clips, 13 hidden states x 768, 10 classes, a class
signal in a few middle states) is written in the real cache format, then:

* batched: ``marble.probe.clip.run_clip`` — the full (13 states + weighted) x 6 LR = 84 probes;
* one at a time: ``train_sweep`` with a single probe, for a few configurations (``--single``),
  extrapolated linearly to all 84 (said so in the output). Same code path, same process, same device.

Usage: python bench/probe.py [--device cpu|cuda] [--max-epochs N] [--single 3] [--threads T]

:func:`sweep_bench` is what ``bench/suite.py`` measures with (other sizes and widths too).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from marble.cache.store import ClipSplit, cache_dir, write_clip_split  # noqa: E402
from marble.io import write_json
from marble.probe.clip import run_clip  # noqa: E402
from marble.probe.config import card_plan  # noqa: E402
from marble.probe.select import Scorer  # noqa: E402
from marble.probe.sweep import Probe, train_sweep  # noqa: E402
from marble.registry import get_card  # noqa: E402
from timing import measure  # noqa: E402

SIZES = {"train": 442, "valid": 197, "test": 290}  # GTZAN
S, H, C = 13, 768, 10  # MERT-v1-95M states x width, GTZAN classes
MODEL = "bench/synthetic"


def synth(n: int, rng: np.random.Generator, dirs: np.ndarray, prefix: str, states: int = S,
          prediction: str = "multiclass") -> ClipSplit:
    """``n`` clips of ``states`` x width features with a signal in the middle states: a class direction
    (multiclass), tags switched on by projections (multilabel) or a linear target (regression)."""
    c, h = dirs.shape
    x = rng.normal(size=(n, states, h)).astype(np.float32)
    mid = states // 2
    if prediction == "multiclass":
        y = rng.integers(0, c, n)
        for s, strength in ((mid - 1, 0.3), (mid, 0.5), (mid + 1, 0.6), (mid + 2, 0.4)):
            if 0 <= s < states:
                x[:, s] += strength * dirs[y]
        labels = y.astype(np.int64)
    else:
        proj = x[:, mid] @ dirs.T / 4  # [n, c]
        if prediction == "multilabel":
            labels = (proj + 0.5 * rng.normal(size=proj.shape) > 1.0).astype(np.uint8)
            labels[0], labels[1] = 1, 0  # every tag has a positive and a negative
        else:
            labels = (proj + 0.3 * rng.normal(size=proj.shape)).astype(np.float32)
    uids = np.array([f"{prefix}{i}" for i in range(n)])
    return ClipSplit(x.astype(np.float16), uids, np.zeros(n, int), uids, labels)


def write_synthetic_cache(root: Path, sizes: dict = SIZES, states: int = S, width: int = H, task: str = "gtzan",
                          seed: int = 0) -> dict[str, ClipSplit]:
    """A cache of synthetic features for ``task``'s card (model ``bench/synthetic``) under ``root``."""
    card = get_card(task)
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(card.num_outputs, width)).astype(np.float32) / np.sqrt(width) * 4
    d = cache_dir(root, MODEL, task)
    splits = {k: synth(n, rng, dirs, k[0], states, card.prediction) for k, n in sizes.items()}
    content = {k: write_clip_split(d / k, sp) for k, sp in splits.items()}  # the files' sha256
    write_json(d / "manifest.json", {
        "encoder": {"name": MODEL}, "task": {"id": card.id, "version": card.version, "sha256": card.sha256},
        "splits": {k: {"status": "complete", "n_items": len(set(sp.uids)), "n_rows": len(sp), "errors": [],
                       "content_sha256": content[k]} for k, sp in splits.items()}})
    return splits


def sweep_bench(device: str = "cpu", max_epochs: int | None = None, single: int = 3, sizes: dict = SIZES,
                states: int = S, width: int = H, task: str = "gtzan", lrs: tuple = ()) -> dict:
    """The batched sweep of ``task``'s card through ``run_clip`` and ``single`` configurations one at a time
    (extrapolated to all probes by probe-epochs). Returns the figures (wall and process CPU seconds)."""
    card = get_card(task)
    main = card.metrics.main
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        splits = write_synthetic_cache(root / "cache", sizes, states, width, task)
        epochs_seen = []
        with measure(device) as batched:
            r = run_clip(card, MODEL, cache_root=root / "cache", results_dir=root / "res", device=device,
                         max_epochs=max_epochs, lrs=tuple(lrs), checkpoint_every=10**9,
                         on_epoch=lambda e, n, b: epochs_seen.append(e))
        n_probes = len(r["sweep"])
        probe_epochs = sum(x["epochs"] for x in r["sweep"])

        # one configuration at a time: same loop with P = 1 (data already on the device)
        dev = torch.device(device)
        X = {k: torch.from_numpy(np.array(sp.features)).to(dev) for k, sp in splits.items()}
        ytr = torch.as_tensor(splits["train"].labels)
        from marble.metrics import METRICS

        sv = Scorer(card.prediction, splits["valid"].uids, splits["valid"].groups, splits["valid"].labels,
                    {main: METRICS[main]}, card.vocabulary())
        plan = card_plan(card, max_epochs)
        rows = r["sweep"]
        pick = np.linspace(0, len(rows) - 1, max(1, single)).round().astype(int)
        singles, single_epochs = [], []
        for i in pick:
            p = Probe(rows[i]["layer"], rows[i]["lr"], 1234)
            with measure(device) as m:
                o = train_sweep([p], plan.train, X["train"], ytr, X["valid"], sv.main(main), num_outputs=card.num_outputs)
            singles.append(m)
            single_epochs.append(o.epochs[0])
            assert o.epochs[0] == rows[i]["epochs"], "single run diverged from its batched twin"
    per_epoch = sum(m.wall_s for m in singles) / sum(single_epochs)
    per_epoch_cpu = sum(m.cpu_s for m in singles) / sum(single_epochs)
    return {
        "task": task, "prediction": card.prediction, "main_metric": main, "device": str(device),
        "torch_threads": torch.get_num_threads(), "sizes": dict(sizes), "states": states, "width": width,
        "classes": card.num_outputs, "head_hidden": card.head.hidden, "probes": n_probes,
        "max_epochs": plan.train.max_epochs, "early_stop_patience": plan.train.early_stop_patience,
        "sweep_epochs": max(epochs_seen), "probe_epochs": probe_epochs,
        "batched": batched.as_dict(),
        "single_configs_timed": [f"{rows[i]['layer']}@{rows[i]['lr']:g}" for i in pick],
        "single": [m.as_dict() for m in singles], "single_epochs": single_epochs,
        "one_at_a_time_extrapolated_s": round(per_epoch * probe_epochs, 2),
        "one_at_a_time_extrapolated_cpu_s": round(per_epoch_cpu * probe_epochs, 2),
        "speedup": round(per_epoch * probe_epochs / max(batched.wall_s, 1e-9), 2),
        "selected": r["selected"], "test": r["test"],
    }


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
    out = sweep_bench(a.device, a.max_epochs, a.single)
    print(json.dumps(out, indent=2))
    print(f"batched: {out['batched']['wall_s']:.1f} s for {out['probes']} probes ({out['probe_epochs']} probe-epochs); "
          f"one at a time (timed {a.single} configs, extrapolated by probe-epochs): "
          f"{out['one_at_a_time_extrapolated_s']:.1f} s -> x{out['speedup']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
