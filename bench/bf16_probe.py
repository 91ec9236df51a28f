"""How far do bf16 features move the probe scores? (PROTOCOL §2: fp32 is the protocol; bf16 is a flagged option.)

For each clip task fixture (official file layouts written by ``marble.testing.fixtures``; GTZAN and EMO by
default), a tiny random MERT (``marble.demo.tiny_mert``: the MERT-v1 front end, 4 layers of 64) extracts the
features twice through ``marble extract``'s code path — fp32, and bf16 under CPU autocast — then the full
constrained sweep (every state + weighted sum x the 6 card learning rates, card schedule) runs on each cache.
Printed per task: the relative feature difference per state, and the score differences (bf16 - fp32) of every
sweep row (valid and test main metric) and of the selected configuration.

    python bench/bf16_probe.py [--tasks gtzan,emo] [--per-split 96] [--seconds 10] [--json out.json]

A second fp32 extraction is bit-identical to the first (checked), so every difference is bf16's.
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

from marble.cache.extract import extract  # noqa: E402
from marble.cache.store import read_clip_split  # noqa: E402
from marble.datasets import get_dataset  # noqa: E402
from marble.demo import tiny_mert  # noqa: E402
from marble.encoders import load_encoder  # noqa: E402
from marble.encoders.identity import model_cache_dir  # noqa: E402
from marble.probe.clip import run_clip  # noqa: E402
from marble.registry import get_card  # noqa: E402
from marble.testing import fixtures  # noqa: E402

WRITERS = {"gtzan": fixtures.write_gtzan, "emo": fixtures.write_emo, "mtt": fixtures.write_mtt}


def one_task(task: str, root: Path, mert: Path, per_split: int, seconds: float) -> dict:
    card = get_card(task)
    WRITERS[task](root / "data", per_split=per_split, seconds=seconds)
    ds = get_dataset(card, root / "data", allow_partial=True)
    items = {s: ds.items(s) for s in ("train", "valid", "test")}
    enc = load_encoder(str(mert))
    feats, results, secs = {}, {}, {}
    for dtype in ("fp32", "bf16", "fp32-again"):
        cache = root / f"cache-{dtype}"
        t0 = time.perf_counter()
        extract(card, enc, items, cache, device="cpu", dtype=dtype.split("-")[0], batch_size=8, num_workers=0,
                progress=False)
        secs[dtype] = round(time.perf_counter() - t0, 1)
        d = model_cache_dir(cache, enc, card.id)
        feats[dtype] = {s: np.asarray(read_clip_split(d / s).features, dtype=np.float64) for s in items}
        if dtype == "fp32-again":
            same = all(np.array_equal(feats["fp32"][s], feats[dtype][s]) for s in items)
            if not same:
                raise SystemExit("two fp32 extractions differ: the comparison would not isolate bf16")
            continue
        results[dtype] = run_clip(card, str(mert), cache_root=cache, results_dir=root / f"res-{dtype}",
                                  name=f"tiny-mert-{dtype}", write=False)
    a, b = np.concatenate([feats["fp32"][s] for s in items]), np.concatenate([feats["bf16"][s] for s in items])
    rel = np.linalg.norm(b - a, axis=(0, 2)) / np.linalg.norm(a, axis=(0, 2))  # per state
    main = card.metrics.main
    rf, rb = results["fp32"], results["bf16"]
    key = lambda row: (str(row["layer"]), row["lr"])  # noqa: E731
    bf = {key(r): r for r in rb["sweep"]}
    dv = np.array([bf[key(r)]["valid"][main] - r["valid"][main] for r in rf["sweep"]])
    dt = np.array([bf[key(r)]["test"][main] - r["test"][main] for r in rf["sweep"]])
    return {
        "task": task, "main_metric": main, "files": {s: len(v) for s, v in items.items()},
        "windows": {s: int(len(v)) for s, v in feats["fp32"].items()}, "extract_s": secs,
        "feature_rel_diff_per_state": [round(float(x), 5) for x in rel],
        "sweep_rows": len(dv),
        "valid_abs_diff_mean": round(float(np.abs(dv).mean()), 5), "valid_abs_diff_max": round(float(np.abs(dv).max()), 5),
        "test_abs_diff_mean": round(float(np.abs(dt).mean()), 5), "test_abs_diff_max": round(float(np.abs(dt).max()), 5),
        "rows_changed": int((np.abs(dt) > 0).sum()),
        "selected_fp32": {k: rf["selected"][k] for k in ("layer", "lr")}, "selected_bf16": {k: rb["selected"][k] for k in ("layer", "lr")},
        "selected_test_fp32": rf["test"][main], "selected_test_bf16": rb["test"][main],
        "selected_test_diff": round(rb["test"][main] - rf["test"][main], 5),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="gtzan,emo")
    ap.add_argument("--per-split", type=int, default=96, help="files per split written by the fixture")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each fixture file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {"torch": torch.__version__, "device": "cpu (autocast bf16)", "tasks": []}
    with tempfile.TemporaryDirectory() as tmp:
        mert = tiny_mert(Path(tmp) / "tiny-mert", seed=0)
        for task in a.tasks.split(","):
            r = one_task(task, Path(tmp) / task, mert, a.per_split, a.seconds)
            out["tasks"].append(r)
            print(f"{task}: features rel. diff {min(r['feature_rel_diff_per_state']):.2e}..{max(r['feature_rel_diff_per_state']):.2e}; "
                  f"{r['main_metric']} over {r['sweep_rows']} sweep rows: |test diff| mean {r['test_abs_diff_mean']:.4f}, "
                  f"max {r['test_abs_diff_max']:.4f} ({r['rows_changed']} rows moved); selected "
                  f"{r['selected_fp32']} -> {r['selected_bf16']}, test {r['selected_test_fp32']:.4f} -> "
                  f"{r['selected_test_bf16']:.4f}", flush=True)
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
