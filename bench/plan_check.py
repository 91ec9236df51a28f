"""Does ``marble run --plan`` predict the real run? Counts exactly, CPU time within a factor of 2.

For each case a dataset is written (the demo task; fixtures in the official layouts of ``marble.testing.fixtures``),
the plan is made in this process, then the real ``marble run`` runs as a child process with the same options and
its **process CPU time** (the child and its decode workers, ``RUSAGE_CHILDREN``) is compared with the plan's
estimate (startup + extraction + probing). CPU time, not wall time: on a shared machine wall time follows the
others' load. File counts are compared with the cache manifest the run wrote (items per split, and for clip tasks
the cached windows); frame tasks write no cache, so theirs are compared with the result's data accounting (files per
split, training included). A case may carry a reduced sweep (``layers``, ``lrs``, ``max_epochs``) that both the plan
and the run get: MUSDB's full sweep (20 layers x 6 LRs x 4 models, 50 epochs) is days of CPU.

    python bench/plan_check.py [--cases demo,gtzan,emo,mtt,gtzan-beat,musdb] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from timing import cpu_seconds  # noqa: E402

CASES = {
    # name: (task, model, writer options, run options: make_plan's and `marble run`'s layers / lrs / max_epochs)
    "demo": ("demo-instruments", "handcrafted", {}, {}),
    "gtzan": ("gtzan", "tiny-mert", {"per_split": 24, "seconds": 10.0}, {}),
    "emo": ("emo", "tiny-mert", {"per_split": 24, "seconds": 10.0}, {}),
    "mtt": ("mtt", "handcrafted", {"per_split": 24, "seconds": 10.0}, {}),
    "gtzan-beat": ("gtzan-beat", "handcrafted", {"per_split": 4, "seconds": 15.0}, {}),
    # handcrafted runs at 24 kHz / 75 Hz as MUSDB's STFT needs; one layer (the concatenation: every state computed,
    # as extraction's unit cost measured) x one LR = 4 LSTM-512 models, 2 epochs of 64 chunks of 6 s per training track
    "musdb": ("musdb", "handcrafted", {"per_split": 2, "seconds": 10.0}, {"layers": "3", "lrs": "1e-3", "max_epochs": 2}),
}
#: run options -> `marble run` flags
FLAGS = {"layers": "--layers", "lrs": "--lrs", "max_epochs": "--max-epochs"}


def prepare(case: str, root: Path) -> tuple[str, str, Path, Path | None]:
    """(task, model spec, data dir, tasks dir) of a case, its data written under ``root``."""
    from marble.demo import synthesize, tiny_mert
    from marble.testing import fixtures

    task, model, opts, _ = CASES[case]
    if model == "tiny-mert":
        model = str(tiny_mert(root / "tiny-mert"))
    if case == "demo":
        data, tasks = synthesize(root / "demo")
        return task, model, data, tasks
    writer = {"gtzan": fixtures.write_gtzan, "emo": fixtures.write_emo, "mtt": fixtures.write_mtt,
              "gtzan-beat": fixtures.write_gtzan_beat, "musdb": fixtures.write_musdb}[case]
    writer(root / "data", **opts)
    return task, model, root / "data", None


def check(case: str, root: Path) -> dict:
    from marble.encoders.identity import model_cache_dir
    from marble.plan import make_plan

    task, model, data, tasks_dir = prepare(case, root)
    run_opts = CASES[case][3]
    partial = tasks_dir is None
    c0 = cpu_seconds()
    plan = make_plan(model, task, data_dir=data, tasks_dir=tasks_dir, device="cpu", allow_partial=partial, **run_opts)
    plan_cpu = cpu_seconds() - c0
    tp = plan.tasks[0]
    cmd = [sys.executable, "-m", "marble", "run", "--model", model, "--tasks", task, "--data-dir", str(data),
           "--cache-dir", str(root / "cache"), "--results-dir", str(root / "results"), "--device", "cpu", "-q"]
    if tasks_dir is not None:
        cmd += ["--tasks-dir", str(tasks_dir)]
    if partial:
        cmd.append("--allow-partial")
    for k, v in run_opts.items():
        cmd += [FLAGS[k], str(v)]
    c0, w0 = cpu_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    cpu, wall = cpu_seconds() - c0, time.perf_counter() - w0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    plan_rows = {s: sum(x.windows.values()) for s, x in tp.load.splits.items() if x.cached}
    if tp.load.card.is_clip_level:
        manifest = json.loads((model_cache_dir(root / "cache", model, task) / "manifest.json").read_text())
        real_items = {s: manifest["splits"][s]["n_items"] for s in manifest["splits"]}
        plan_items = {s: x.items for s, x in tp.load.splits.items() if x.cached}
        real_rows = {s: manifest["splits"][s].get("n_rows") for s in manifest["splits"]}
    else:  # no cache written: the files the sweep read (train encoded on the fly, valid/test whole tracks)
        result = json.loads(next((root / "results").glob(f"*/{task}/constrained.json")).read_text())
        real_items = {s: x["cached"] for s, x in result["data"]["splits"].items()}
        plan_items = {s: x.items for s, x in tp.load.splits.items()}
        real_rows = None
    est = (plan.startup_s or 0.0) + (tp.extract_s or 0.0) + (tp.probe_s or 0.0)
    return {
        "case": case, "task": task, "model": Path(model).name if "/" in model else model, "options": run_opts,
        "plan_items": {s: x.items for s, x in tp.load.splits.items()}, "run_items_cached": real_items,
        "items_match": plan_items == real_items,
        "plan_windows": plan_rows, "run_rows": real_rows,
        "windows_match": (plan_rows == real_rows) if tp.load.card.is_clip_level else None,
        "plan": {"startup_s": plan.startup_s, "extract_s": tp.extract_s, "probe_s": tp.probe_s,
                 "probe_range_s": tp.probe_range, "total_s": est, "probes": tp.probes, "epochs": tp.epochs,
                 "costs": plan.costs.source if plan.costs else None, "plan_cpu_s": round(plan_cpu, 2)},
        "run": {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2)},
        "ratio_plan_over_run": round(est / cpu, 2) if cpu else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="demo,gtzan,emo,mtt", help=f"comma-separated, of {','.join(CASES)}")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    rows = []
    for case in a.cases.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            r = check(case, Path(tmp))
        rows.append(r)
        print(json.dumps(r), flush=True)
    print("\n| case | task | model | files plan = run | windows plan = run | plan CPU s (extract + probe + startup) | "
          "run CPU s | run wall s | plan / run |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["plan"]
        print(f"| {r['case']} | {r['task']} | {r['model']} | {r['items_match']} ({r['plan_items']}) | "
              f"{r['windows_match']} | {p['total_s']:.1f} ({p['extract_s'] or 0:.1f} + {p['probe_s'] or 0:.1f} + "
              f"{p['startup_s'] or 0:.1f}) | {r['run']['cpu_s']} | {r['run']['wall_s']} | {r['ratio_plan_over_run']} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
