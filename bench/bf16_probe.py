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
import inspect
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


def _mode(mode: str) -> dict:
    """A compute mode -> ``extract`` options: fp32 (the protocol), tf32 (TF32 matmuls), bf16 (autocast)."""
    base = mode.split("-")[0]
    if base == "tf32":
        return {"dtype": "fp32", "tf32": True}
    return {"dtype": base}


def one_task(task: str, root: Path, encoder, model: str, per_split: int, seconds: float,
             modes: tuple = ("bf16",), device: str = "cpu", batch_size: int = 8, max_epochs: int | None = None) -> dict:
    """Features of ``encoder`` (spelled ``model`` for the probe) on the task's fixture in fp32, twice (checked
    bit-identical), and in each of ``modes`` (``tf32``, ``bf16``); the constrained sweep on each cache; how far
    each mode moves the features and the scores."""
    card = get_card(task)
    WRITERS[task](root / "data", per_split=per_split, seconds=seconds)
    ds = get_dataset(card, root / "data", allow_partial=True)
    items = {s: ds.items(s) for s in ("train", "valid", "test")}
    feats, results, secs = {}, {}, {}
    for mode in ("fp32", *modes, "fp32-again"):
        cache = root / f"cache-{mode}"
        opts = _mode(mode)
        if "tf32" in opts and "tf32" not in inspect.signature(extract).parameters:
            raise RuntimeError("extract has no tf32 option on this marble (issue 19 not landed)")
        t0 = time.perf_counter()
        extract(card, encoder, items, cache, device=device, batch_size=batch_size, num_workers=0, progress=False,
                **opts)
        secs[mode] = round(time.perf_counter() - t0, 1)
        d = model_cache_dir(cache, encoder, card.id)
        feats[mode] = {s: np.asarray(read_clip_split(d / s).features, dtype=np.float64) for s in items}
        if mode == "fp32-again":
            same = all(np.array_equal(feats["fp32"][s], feats[mode][s]) for s in items)
            if not same:
                raise SystemExit("two fp32 extractions differ: the comparison would not isolate the compute mode")
            continue
        results[mode] = run_clip(card, model, cache_root=cache, results_dir=root / f"res-{mode}",
                                 name=f"{model}-{mode}", write=False, device=device, max_epochs=max_epochs)
    main = card.metrics.main
    rf = results["fp32"]
    key = lambda row: (str(row["layer"]), row["lr"])  # noqa: E731
    out = {"task": task, "main_metric": main, "files": {s: len(v) for s, v in items.items()},
           "windows": {s: int(len(v)) for s, v in feats["fp32"].items()}, "extract_s": secs,
           "selected_fp32": {k: rf["selected"][k] for k in ("layer", "lr")}, "selected_test_fp32": rf["test"][main],
           "modes": {}}
    a = np.concatenate([feats["fp32"][s] for s in items])
    for mode in modes:
        b = np.concatenate([feats[mode][s] for s in items])
        rel = np.linalg.norm(b - a, axis=(0, 2)) / np.maximum(np.linalg.norm(a, axis=(0, 2)), 1e-30)  # per state
        rb = results[mode]
        other = {key(r): r for r in rb["sweep"]}
        dv = np.array([other[key(r)]["valid"][main] - r["valid"][main] for r in rf["sweep"]])
        dt = np.array([other[key(r)]["test"][main] - r["test"][main] for r in rf["sweep"]])
        out["modes"][mode] = {
            "feature_rel_diff_per_state": [round(float(x), 6) for x in rel],
            "sweep_rows": len(dv),
            "valid_abs_diff_mean": round(float(np.abs(dv).mean()), 5),
            "valid_abs_diff_max": round(float(np.abs(dv).max()), 5),
            "test_abs_diff_mean": round(float(np.abs(dt).mean()), 5),
            "test_abs_diff_max": round(float(np.abs(dt).max()), 5),
            "rows_changed": int((np.abs(dt) > 0).sum()),
            "selected": {k: rb["selected"][k] for k in ("layer", "lr")}, "selected_test": rb["test"][main],
            "selected_test_diff": round(rb["test"][main] - rf["test"][main], 5),
        }
    return out


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
        enc = load_encoder(str(mert))
        for task in a.tasks.split(","):
            r = one_task(task, Path(tmp) / task, enc, str(mert), a.per_split, a.seconds)
            out["tasks"].append(r)
            m = r["modes"]["bf16"]
            print(f"{task}: features rel. diff {min(m['feature_rel_diff_per_state']):.2e}..{max(m['feature_rel_diff_per_state']):.2e}; "
                  f"{r['main_metric']} over {m['sweep_rows']} sweep rows: |test diff| mean {m['test_abs_diff_mean']:.4f}, "
                  f"max {m['test_abs_diff_max']:.4f} ({m['rows_changed']} rows moved); selected "
                  f"{r['selected_fp32']} -> {m['selected']}, test {r['selected_test_fp32']:.4f} -> "
                  f"{m['selected_test']:.4f}", flush=True)
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
