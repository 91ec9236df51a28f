"""Where a full constrained GTZAN-beat sweep spends its time, phase by phase, and what it computes.

    python bench/beat_sweep.py --data /tmp/beatbench [--mert] [--max-epochs N] [--out run.json]
    python bench/beat_sweep.py --compare before.json after.json [before2.json after2.json ...]

Data: synthetic 30 s click tracks in the GTZAN + GTZAN-Rhythm layout (``marble.testing.fixtures
.write_gtzan_beat``), 40 train / 15 valid / 20 test tracks, written once under ``--data`` and reused (so runs of
two versions of marble see the same files). Valid/test frame features are extracted first (``marble extract``'s
frame cache, all states), then the real ``marble.probe.sequence.run`` sweeps every layer option x the card's 6
LRs with the card's schedule (``--max-epochs`` caps it). The encoder is ``handcrafted`` (4 states x 96) or, with
``--mert``, a tiny random MERT (5 states x 64).

Phases are timed by wrapping the engine's functions (whatever version of marble is imported, e.g. through
``PYTHONPATH``): crop decoding (``CropSource.batch``), crop encoding (``FrameFeatures.encode``), validation/test
features (``FrameFeatures.__call__``: frame-cache reads), DBN decoding (``DBNBeatTracker.batch``), scoring
(``score_beats``); "training and the rest" is the epoch time left. Wall and process CPU time (this process and
its waited-for children) per epoch and for the sweep. ``--out`` writes the figures and the result with its
wall-time fields removed, so two runs can be compared byte for byte.

Before/after a change: export each commit (``git archive C marble tasks | tar -x -C /tmp/v``), run this script with
``PYTHONPATH=/tmp/v OMP_NUM_THREADS=1`` for each, interleaved (A, B, A, B: the machine's load changes), then
``--compare`` the JSONs in pairs: whether the stable results are byte-identical, and the CPU and wall ratios per
sweep, per epoch and of the DBN phase (bench/README.md has the figures).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

SPLITS = {"train": 40, "valid": 15, "test": 20}
VOLATILE = ("wall_time_s", "created", "peak_memory_mb", "content_sha256", "git_hash", "command", "toolkit_version")


def cpu_s() -> float:
    """Process CPU time of this process and its terminated, waited-for children (worker pools)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def stable(result: dict) -> dict:
    """The result without the fields that record when, where and how long (compared across runs)."""
    out = dict(result)
    out["manifest"] = {k: v for k, v in result["manifest"].items() if k not in VOLATILE}
    return out


def write_data(root: Path) -> None:
    from marble.testing.fixtures import write_gtzan_beat

    if not (root / "GTZAN" / "jams").is_dir():
        write_gtzan_beat(root, per_split=SPLITS, seconds=30.0)


def compare(paths: list[Path]) -> None:
    """Pairs (before, after) of ``--out`` files: identical stable results? CPU and wall figures and their ratios."""
    if len(paths) % 2:
        raise SystemExit("--compare takes pairs: before.json after.json [before.json after.json ...]")
    for a_path, b_path in zip(paths[::2], paths[1::2]):
        a, b = (json.loads(p.read_text()) for p in (a_path, b_path))
        same = json.dumps(a["result"], sort_keys=True) == json.dumps(b["result"], sort_keys=True)
        print(f"{a_path.name} vs {b_path.name}: stable result bytes identical: {same}")
        fa, fb = a["figures"], b["figures"]
        for k in ("sweep_cpu_s", "sweep_wall_s", "epoch_cpu_s_mean", "epoch_wall_s_mean"):
            print(f"  {k}: {fa[k]:.1f} -> {fb[k]:.1f} ({fa[k] / fb[k]:.2f}x)")
        for k in fa["phases_cpu_s"]:
            print(f"  {k}: CPU {fa['phases_cpu_s'][k]:.1f} -> {fb['phases_cpu_s'][k]:.1f} s, "
                  f"wall {fa['phases_wall_s'][k]:.1f} -> {fb['phases_wall_s'][k]:.1f} s")


def main() -> None:
    if "--compare" in sys.argv[1:2]:
        return compare([Path(p) for p in sys.argv[2:]])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="fixture folder (written once, then reused)")
    ap.add_argument("--mert", action="store_true", help="tiny random MERT instead of the handcrafted encoder")
    ap.add_argument("--max-epochs", type=int, default=None, help="cap the card's 100 epochs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="write figures + the stable result here (JSON)")
    args = ap.parse_args()

    import torch

    import marble
    from marble.beat import dbn
    from marble.beat import train as beat_train
    from marble.cache.extract import extract
    from marble.datasets import get_dataset
    from marble.encoders import load_encoder
    from marble.probe import frames
    from marble.probe.sequence import run
    from marble.registry import get_card

    write_data(args.data)
    card = get_card("gtzan-beat")
    ds = get_dataset(card, args.data, allow_partial=True)
    items = {s: ds.items(s) for s in ("train", "valid", "test")}
    assert {s: len(v) for s, v in items.items()} == SPLITS, {s: len(v) for s, v in items.items()}
    if args.mert:
        from marble.demo import tiny_mert

        spec = str(tiny_mert(args.data / "tiny-mert"))
    else:
        spec = "handcrafted"
    enc = load_encoder(spec).eval()
    cache = args.data / "cache"
    extract(card, enc, {s: items[s] for s in ("valid", "test")}, cache, device=args.device, progress=False)

    phases = {k: [0.0, 0.0] for k in ("crop decoding", "crop encoding", "valid/test features", "DBN decoding",
                                      "scoring")}
    calls: list[tuple[str, float, float]] = []  # DBN calls: (when, wall, cpu)

    def timed(owner, name, phase):
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            w, c = time.perf_counter(), cpu_s()
            try:
                return fn(*a, **k)
            finally:
                dw, dc = time.perf_counter() - w, cpu_s() - c
                phases[phase][0] += dw
                phases[phase][1] += dc
                if phase == "DBN decoding":
                    calls.append((name, dw, dc))

        setattr(owner, name, wrapper)

    timed(beat_train.CropSource, "batch", "crop decoding")
    timed(frames.FrameFeatures, "encode", "crop encoding")
    timed(frames.FrameFeatures, "__call__", "valid/test features")
    timed(dbn.DBNBeatTracker, "batch", "DBN decoding")
    timed(beat_train, "score_beats", "scoring")

    epochs: list[dict] = []
    mark = {"w": time.perf_counter(), "c": cpu_s(), "phases": {k: list(v) for k, v in phases.items()}}

    def on_epoch(epoch, active, best):
        w, c = time.perf_counter(), cpu_s()
        row = {"epoch": epoch, "active": active, "best": best, "wall_s": w - mark["w"], "cpu_s": c - mark["c"]}
        row.update({k: phases[k][0] - mark["phases"][k][0] for k in phases})
        epochs.append(row)
        mark.update(w=w, c=c, phases={k: list(v) for k, v in phases.items()})
        print(f"epoch {epoch}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, active {active}, "
              + ", ".join(f"{k} {row[k]:.1f} s" for k in phases), file=sys.stderr, flush=True)

    w0, c0 = time.perf_counter(), cpu_s()
    result = run(card, spec, cache_dir=cache, results_dir=None, encoder=enc, items=items, device=args.device,
                 max_epochs=args.max_epochs, on_epoch=on_epoch)
    wall, cpu = time.perf_counter() - w0, cpu_s() - c0
    train_wall = sum(e["wall_s"] for e in epochs)
    final = {k: phases[k][0] - mark["phases"][k][0] for k in phases}
    figures = {
        "marble": str(Path(marble.__file__).parent), "encoder": "tiny-mert" if args.mert else "handcrafted",
        "probes": len(result["sweep"]), "epochs": len(epochs), "threads": torch.get_num_threads(),
        "sweep_wall_s": wall, "sweep_cpu_s": cpu, "epoch_wall_s_mean": train_wall / max(1, len(epochs)),
        "epoch_cpu_s_mean": sum(e["cpu_s"] for e in epochs) / max(1, len(epochs)),
        "phases_wall_s": {k: v[0] for k, v in phases.items()}, "phases_cpu_s": {k: v[1] for k, v in phases.items()},
        "training_and_rest_wall_s": train_wall - sum(sum(e[k] for e in epochs) for k in phases),
        "final_valid_test_wall_s": wall - train_wall, "final_phases_wall_s": final,
        "per_epoch": epochs, "selected": result["selected"], "test": result["test"],
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "per_epoch"}, indent=1, default=str))
    if args.out is not None:
        args.out.write_text(json.dumps({"figures": figures, "result": stable(result)}, indent=1, sort_keys=True,
                                       default=str))


if __name__ == "__main__":
    main()
