"""One command that measures marble on a device and writes what it measured as it goes.

    python bench/suite.py --device cuda          (make bench-gpu: about 8 minutes on one H100-class GPU)
    python bench/suite.py --device cpu           (the built-in CPU figures of --plan: ~11 min CPU, ~70 min wall shared)
    python bench/suite.py --smoke                (every section on the CPU with tiny sizes, < 2 minutes)

Sections, each with its own time budget (``SECTIONS``); a section that runs out of time, fails, or whose
feature is not on this marble yet is recorded as such and the next one runs:

* ``extraction``: x realtime of MERT-v1-95M- and 330M-shaped random models on 30 s clips: the reference
  path (one file at a time, fp32, all states to the host), marble's default (fp32), ``--tf32``,
  ``--dtype bf16``; peak GPU memory; the largest batch of 30 s windows that fits; and the calibration the
  cost model needs (audio decoding, the handcrafted encoder, a tiny model's per-window overhead);
* ``probe``: the GTZAN-sized constrained sweep (84 probes) batched vs one configuration at a time
  (extrapolated by probe-epochs, as ``bench/probe.py``), plus two small sweeps and the monitor metrics'
  cost, for the cost model;
* ``beat`` / ``musdb``: one sweep epoch of gtzan-beat / MUSDB on synthetic data, split into encoding,
  training, decoding and scoring (MUSDB: measured on a part of the epoch, extrapolated to its real size);
* ``finetune``: a fine-tuning step (head, LoRA, full) for the 95M shape, once ``marble.finetune`` exists;
* ``precision``: how far TF32 and bf16 features move probe scores (``bench/bf16_probe.py`` at real width).

Output: ``<out>/<device-name>-<date>.json`` (schema: ``bench/suite.schema.json``), rewritten atomically
after every measurement, and the same figures as a Markdown table beside it (``.md``). ``unit_costs`` in
the JSON are the per-unit costs ``marble run --plan`` reads (process CPU seconds on a CPU, wall seconds
on a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from timing import PhaseClock, cpu_seconds, measure, peak_rss_mb, sync  # noqa: E402

SCHEMA = "marble-bench-suite/1"
STATUSES = ("ok", "partial", "out of time", "failed", "not available", "skipped")


class NotAvailable(Exception):
    """The feature a section measures is not on this marble yet (another issue's work)."""


class OutOfTime(BaseException):
    """Raised in the main thread when a section's budget is spent (BaseException: no ``except Exception`` in
    marble swallows it)."""


@contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise OutOfTime()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, float(seconds)))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------------
# sizes per profile: "gpu" = the real sizes (H100-class, 8 minutes), "cpu" = what calibrates the CPU cost
# model on the shared 2-core machine (reduced sizes, ``note`` says which), "smoke" = every code path on a CPU in seconds


@dataclasses.dataclass
class Profile:
    name: str
    minutes: float
    extract_presets: tuple = ("95m", "330m")
    clips: int = 16
    clip_seconds: float = 30.0
    batch_size: int = 8
    num_workers: int = 4
    calibration_workers: int = 2  # marble run's default
    batch_search_limit: int = 512
    probe_sizes: dict = dataclasses.field(default_factory=lambda: {"train": 442, "valid": 197, "test": 290})
    probe_states: int = 13
    probe_width: int = 768
    probe_max_epochs: int | None = None
    probe_single: int = 3
    beat_preset: str = "95m"
    beat_tracks: dict = dataclasses.field(default_factory=lambda: {"train": 442, "valid": 197, "test": 8})
    beat_unique: int = 16
    beat_seconds: float = 30.0
    beat_lrs: tuple = ()
    musdb_preset: str = "95m"
    musdb_rows: int = 84
    musdb_chunks: int = 64
    musdb_tracks: dict = dataclasses.field(default_factory=lambda: {"train": 86, "valid": 1, "test": 1})
    musdb_seconds: float = 60.0
    musdb_lrs: tuple = ()
    musdb_hidden: int | None = None  # None: the card's LSTM width (512)
    musdb_museval: bool = True
    musdb_chunk_seconds: float | None = None  # None: the card's 6 s training chunks
    precision_preset: str = "95m"
    precision_per_split: int = 16
    precision_seconds: float = 30.0
    precision_max_epochs: int | None = None
    finetune_preset: str = "95m"
    finetune_batch: int = 8
    finetune_seconds: float = 30.0
    finetune_steps: int = 3
    budgets: dict = dataclasses.field(default_factory=dict)
    note: str = ""  # what the sizes are, written into the JSON (``profile_note``)


SECTIONS = ("extraction", "probe", "beat", "musdb", "finetune", "precision")

PROFILES = {
    "gpu": Profile("gpu", 8.0, budgets={"extraction": 150, "probe": 60, "beat": 75, "musdb": 75, "finetune": 40,
                                        "precision": 60}),
    "cpu": Profile("cpu", 120.0, extract_presets=("95m",), clips=2, clip_seconds=30.0, batch_size=8, num_workers=2,
                   probe_sizes={"train": 110, "valid": 49, "test": 72}, probe_max_epochs=None, probe_single=1,
                   beat_preset="tiny", beat_tracks={"train": 16, "valid": 8, "test": 2}, beat_unique=8,
                   beat_lrs=(1e-3, 1e-2), musdb_preset="tiny", musdb_rows=1, musdb_chunks=256, musdb_museval=True,
                   musdb_tracks={"train": 4, "valid": 1, "test": 1}, musdb_seconds=8.0, musdb_lrs=(1e-3,),
                   precision_preset="tiny", precision_per_split=12, precision_seconds=10.0,
                   finetune_batch=1, finetune_seconds=5.0, finetune_steps=1,
                   budgets={"extraction": 1800, "probe": 1500, "beat": 600, "musdb": 900, "finetune": 900,
                            "precision": 600},
                   note="reduced sizes that finish on a 2-core CPU (about 4.5 min on a quiet one; measure on a quiet machine: "
                        "under load, process CPU time inflates): the 95M shape on 2 x 30 s clips (calibrated "
                        "by a tiny model on 96 and 3 x 2 s clips), a quarter-GTZAN-sized sweep (110/49/72 x 13 x 768, 84 "
                        "probes), gtzan-beat and MUSDB (8 s tracks) with a tiny random MERT and few tracks, the fine-tuning step of "
                        "the 95M shape at batch 1 x 5 s, precision on a tiny MERT; unit costs are per-unit, so they "
                        "carry to the real sizes"),
    "smoke": Profile("smoke", 12.0, extract_presets=("tiny",), clips=2, clip_seconds=3.0, batch_size=2, num_workers=0,
                     calibration_workers=0,
                     batch_search_limit=4, probe_sizes={"train": 24, "valid": 12, "test": 12}, probe_states=3,
                     probe_width=16, probe_max_epochs=3, probe_single=1, beat_preset="tiny",
                     beat_tracks={"train": 2, "valid": 2, "test": 1}, beat_unique=2, beat_seconds=4.0,
                     beat_lrs=(1e-3,), musdb_preset="tiny", musdb_rows=1, musdb_chunks=2,
                     musdb_tracks={"train": 2, "valid": 1, "test": 1}, musdb_seconds=2.0, musdb_lrs=(1e-3,),
                     musdb_hidden=16, musdb_museval=False, musdb_chunk_seconds=1.0, precision_preset="tiny", precision_per_split=3, precision_seconds=2.0,
                     precision_max_epochs=2, finetune_preset="tiny", finetune_batch=2, finetune_seconds=2.0,
                     finetune_steps=1,
                     budgets={**{s: 150 for s in SECTIONS}, "musdb": 300}, note="tiny sizes: every code path, not a measurement"),
}


# ------------------------------------------------------------------------------------------------
# where and what


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> dict:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": p.name, "class": slug(p.name), "memory_gb": round(p.total_memory / 2**30, 1),
                "cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    name = cpu_model()
    return {"type": "cpu", "name": name, "class": "cpu", "memory_gb": None, "cuda": None,
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}


def git_commit() -> tuple[str | None, bool | None]:
    """(HEAD, whether tracked files differ from it); (None, None) outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# the run


class Suite:
    """The document being measured; :meth:`save` rewrites the JSON and the table atomically."""

    def __init__(self, device: torch.device, profile: Profile, out_dir: Path, smoke: bool, minutes: float,
                 commit: str | None = None):
        self.device, self.profile, self.smoke = device, profile, smoke
        self.t0 = time.perf_counter()
        self.budget_s = minutes * 60.0
        dev = describe_device(device)
        head, dirty = git_commit()
        today = dt.date.today().isoformat()
        from marble import __version__
        import transformers

        self.doc = {
            "schema": SCHEMA, "smoke": smoke, "profile": profile.name, "device": dev, "date": today,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit or head, "dirty": dirty, "marble": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "profile_note": profile.note, "budget_s": round(self.budget_s, 1), "elapsed_s": 0.0,
            "time_kind": "cpu" if device.type == "cpu" else "wall",
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "sections": {}, "unit_costs": {},
        }
        name = slug(dev["name"]) if dev["type"] == "cuda" else f"cpu-{slug(dev['name'])}"
        stem = f"{'smoke-' if smoke else ''}{name}-{today}"
        self.json_path, self.md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"

    def remaining(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.doc["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        secs = self.doc["sections"]
        self.doc["sections"] = {k: secs[k] for k in sorted(secs, key=lambda k: SECTIONS.index(k) if k in SECTIONS else 99)}
        self.doc["unit_costs"] = unit_costs(self.doc)
        write_atomic(self.json_path, json.dumps(self.doc, indent=1, default=_json_default) + "\n")
        try:
            table = markdown(self.doc)
        except Exception as e:  # the table must never cost a measurement: the JSON above is written already
            table = f"(table not rendered: {type(e).__name__}: {e}; see {self.json_path.name})\n"
        write_atomic(self.md_path, table)

    def run(self, name: str, fn) -> None:
        budget = float(self.profile.budgets.get(name, 60))
        rec = {"status": "skipped", "budget_s": budget, "elapsed_s": 0.0, "note": "", "commit": self.doc["commit"],
               "date": self.doc["date"], "figures": {}}
        self.doc["sections"][name] = rec
        left = self.remaining()
        if left < min(10.0, budget):
            rec["note"] = f"skipped: the suite's {self.budget_s:.0f} s were spent before this section"
            self.save()
            return
        budget = min(budget, left)
        rec["budget_s"], rec["status"] = round(budget, 1), "running"
        self.save()
        t0 = time.perf_counter()
        print(f"[suite] {name}: up to {budget:.0f} s", file=sys.stderr, flush=True)
        try:
            with time_limit(budget):
                note = fn(rec["figures"], self)
            rec["status"], rec["note"] = "ok", note or ""
        except OutOfTime:
            rec["status"], rec["note"] = "out of time", f"its {budget:.0f} s budget ran out; the figures above were measured"
        except NotAvailable as e:
            rec["status"], rec["note"] = "not available", str(e)
        except Exception as e:  # one section failing must not lose the others
            rec["status"], rec["note"] = "failed", f"{type(e).__name__}: {e}"
            rec["traceback"] = traceback.format_exc()[-4000:]
        finally:
            rec["elapsed_s"] = round(time.perf_counter() - t0, 1)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.save()
            print(f"[suite] {name}: {rec['status']} ({rec['elapsed_s']} s)", file=sys.stderr, flush=True)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _t(m) -> dict:
    return m.as_dict()


def _cost(m, device) -> float:
    """The time a figure is compared by: process CPU seconds on a CPU, wall seconds on a GPU."""
    return m.cpu_s if torch.device(device).type == "cpu" else m.wall_s


# ------------------------------------------------------------------------------------------------
# sections


def section_extraction(fig: dict, suite: Suite) -> str:
    from extract import (largest_batch, make_clips, marble_run, random_mert, reference_run, tf32_supported,
                         warm_up)

    from marble.audio import load
    from marble.encoders import load_encoder
    from marble.plan.shapes import transformer_gflop

    p, dev = suite.profile, suite.device
    tmp = Path(tempfile.mkdtemp(prefix="marble-suite-"))
    items = make_clips(tmp / "clips", p.clips, p.clip_seconds)
    audio_s = p.clips * p.clip_seconds
    fig["clips"], fig["clip_seconds"], fig["batch_size"], fig["num_workers"] = p.clips, p.clip_seconds, p.batch_size, p.num_workers
    fig["tf32_option"] = tf32_supported()
    fig["default_is_tf32"] = dev.type == "cuda" and not tf32_supported()  # before issue 19, fp32 on CUDA used TF32

    # calibration for the cost model: marble run's imports, decoding + resampling alone, the handcrafted
    # encoder, a tiny model
    cal = fig.setdefault("calibration", {})
    cal["startup"] = startup_cost(tmp / "startup")
    cal["transformer_load"] = transformer_load_cost(tmp / "tiny-mert")
    suite.save()
    with measure("cpu") as m:
        for it in items:
            load(it.path, 24000, duration=p.clip_seconds)
    cal["decode"] = {**_t(m), "audio_s": audio_s}
    suite.save()
    hc = load_encoder("handcrafted", device=str(dev))
    # marble run's defaults (batch 8, 2 decode workers), as the runs the plan predicts
    marble_run(hc, items, tmp / "cache-hc", dev, batch_size=8, num_workers=p.calibration_workers)  # warm
    with measure(dev) as m:
        marble_run(hc, items, tmp / "cache-hc", dev, batch_size=8, num_workers=p.calibration_workers,
                   splits=min(3, len(items)))
    cal["handcrafted"] = {**_t(m), "audio_s": audio_s, "splits": min(3, len(items))}
    suite.save()
    # short clips through a tiny model, many and few: the per-window (per-file) overhead and the per-split one (a
    # DataLoader with its decode workers, a merge), next to the FLOP-bound big model
    short_n, short_s = (4, 2.0) if suite.smoke else (96, 2.0)
    short = make_clips(tmp / "short", short_n, short_s)
    tiny = random_mert("tiny", dev)
    warm_up(tiny, dev)
    n = int(short_s * tiny.sample_rate)
    gflop = transformer_gflop(tiny.model.config.to_dict(), n)
    marble_run(tiny, short[:3], tmp / "cache-tiny-warm", dev, batch_size=8, num_workers=p.calibration_workers, splits=3)
    for key, k in (("tiny", short_n), ("tiny_few", 3)):
        with measure(dev) as m:  # three splits, as a task's extraction (a DataLoader and a merge each)
            marble_run(tiny, short[:k], tmp / f"cache-{key}", dev, batch_size=8, num_workers=p.calibration_workers,
                       splits=3)
        cal[key] = {**_t(m), "audio_s": k * short_s, "windows": k, "splits": 3, "num_workers": p.calibration_workers,
                    "gflop": round(k * gflop, 4)}
        suite.save()
    # the handcrafted encoder on the same short clips: its own per-window cost, apart from its cost per audio second
    with measure(dev) as m:
        marble_run(hc, short, tmp / "cache-hc-short", dev, batch_size=8, num_workers=p.calibration_workers, splits=3)
    cal["handcrafted_short"] = {**_t(m), "audio_s": short_n * short_s, "windows": short_n, "splits": 3}
    suite.save()
    del tiny, hc

    for preset in p.extract_presets:
        rec = fig.setdefault(preset, {"paths": {}})
        enc = random_mert(preset, dev)
        cfg = enc.model.config.to_dict()
        n = int(p.clip_seconds * enc.sample_rate)
        rec.update(params_M=round(sum(t.numel() for t in enc.parameters()) / 1e6, 1), states=enc.num_states,
                   dim=enc.dim, gflop_per_window=round(transformer_gflop(cfg, n), 2), windows=p.clips,
                   gflop=round(p.clips * transformer_gflop(cfg, n), 2))
        warm_up(enc, dev)
        suite.save()
        paths = [("reference", None), ("fp32", {}), ("tf32", {"tf32": True}), ("bf16", {"dtype": "bf16"})]
        for label, opts in paths:
            if label == "tf32" and not tf32_supported():
                rec["paths"][label] = {"status": "not available",
                                       "note": "extract has no tf32 option on this marble (issue 19 not landed)"}
                continue
            with measure(dev) as m:
                if opts is None:
                    reference_run(enc, items, dev, p.clip_seconds)
                else:
                    marble_run(enc, items, tmp / f"cache-{preset}-{label}", dev, batch_size=p.batch_size,
                               num_workers=p.num_workers, **opts)
            rec["paths"][label] = {"status": "ok", **_t(m), "x_realtime": round(audio_s / max(m.wall_s, 1e-9), 1),
                                   "x_realtime_cpu": round(audio_s / max(m.cpu_s, 1e-9), 2)}
            suite.save()
        rec["largest_batch"] = largest_batch(enc, dev, p.clip_seconds, p.batch_search_limit)
        suite.save()
        if dev.type == "cuda":
            rec["largest_batch_bf16"] = largest_batch(enc, dev, p.clip_seconds, p.batch_search_limit, torch.bfloat16)
            suite.save()
        del enc
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return ""


def startup_cost(root: Path) -> dict:
    """Wall and CPU seconds of a ``marble run`` (a child process) that finds its result kept: the imports, the
    checks of data, cache and result, and the closing leaderboard rows that every run pays once."""
    from marble.testing.fixtures import write_folder_dataset

    card = write_folder_dataset(root / "data", "multiclass", per_split=2, seconds=1.0, task_id="startup")
    cmd = [sys.executable, "-m", "marble", "run", "--model", "handcrafted", "--tasks", "startup", "--tasks-dir",
           str(card.parent), "--data-dir", str(root / "data"), "--cache-dir", str(root / "cache"), "--results-dir",
           str(root / "results"), "--max-epochs", "1", "--device", "cpu", "-q"]
    subprocess.run(cmd, check=True, cwd=HERE.parent, capture_output=True)
    c0, w0 = cpu_seconds(), time.perf_counter()
    subprocess.run(cmd, check=True, cwd=HERE.parent, capture_output=True)
    return {"wall_s": round(time.perf_counter() - w0, 3), "cpu_s": round(cpu_seconds() - c0, 3)}


def transformer_load_cost(root: Path) -> dict:
    """CPU seconds a fresh process spends loading a local MERT checkpoint (``marble.demo.tiny_mert``, Hugging Face
    layout): transformers' imports and the model's construction, which a run with a transformer model pays once
    beyond ``startup`` (a tiny model: the weights' size is not what this measures)."""
    from marble.demo import tiny_mert

    path = tiny_mert(root)
    code = ("import sys, time; import marble.encoders as e; c = time.process_time(); "
            "e.load_encoder(sys.argv[1], device='cpu'); print(time.process_time() - c)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True)  # warm the file cache
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True)
    return {"cpu_s": round(float(out.stdout.split()[-1]), 3)}


def section_probe(fig: dict, suite: Suite) -> str:
    from probe import sweep_bench

    p, dev = suite.profile, str(suite.device)
    fig["gtzan"] = sweep_bench(dev, p.probe_max_epochs, p.probe_single, p.probe_sizes, p.probe_states, p.probe_width)
    suite.save()
    # two more points for the cost model: the same sweep with narrow features (the per-probe-epoch cost without
    # the matrix products) and a one-epoch sweep (the fixed cost of a task: loading, final scoring, the result)
    fig["narrow"] = sweep_bench(dev, p.probe_max_epochs, 1, p.probe_sizes, p.probe_states, 8)
    suite.save()
    few = {k: max(4, v // 8) for k, v in p.probe_sizes.items()}
    fig["few_rows"] = sweep_bench(dev, p.probe_max_epochs, 1, few, p.probe_states, 8)
    suite.save()
    fig["few_probes"] = sweep_bench(dev, p.probe_max_epochs, 1, p.probe_sizes, p.probe_states, 8, lrs=(1e-3,))
    suite.save()
    fig["one_epoch"] = sweep_bench(dev, 1, 1, p.probe_sizes, p.probe_states, 8)
    suite.save()
    fig["metrics"] = metric_costs(suite.smoke)
    suite.save()
    # how long probes train under a continuous monitor (R2, ROC-AUC) rather than accuracy
    for task in ("emo", "mtt"):
        fig[f"{task}_narrow"] = sweep_bench(dev, p.probe_max_epochs, 1, p.probe_sizes, p.probe_states, 8, task=task)
        suite.save()
    return ""


def metric_costs(smoke: bool) -> dict:
    """CPU seconds of one call of each monitor metric per file x label (the probe scores every active probe
    on valid every epoch; ROC-AUC over 50 tags is the expensive one)."""
    from marble.metrics import METRICS

    rng = np.random.default_rng(0)
    files, labels = (64, 8) if smoke else (2000, 50)
    out = {}
    ref_ml = (rng.random((files, labels)) < 0.2).astype(np.uint8)
    ref_ml[0], ref_ml[1] = 1, 0
    est = rng.random((files, labels)).astype(np.float32)
    ref_mc = rng.integers(0, labels, files)
    for name, ref in (("roc_auc_macro", ref_ml), ("ap_macro", ref_ml), ("accuracy", ref_mc)):
        reps = 3
        c0 = cpu_seconds()
        for _ in range(reps):
            METRICS[name](ref, est, labels=[str(i) for i in range(labels)])
        out[name] = {"files": files, "labels": labels, "cpu_s_per_call": round((cpu_seconds() - c0) / reps, 5)}
    return out


def _cycle(items: list, n: int) -> list:
    """``n`` items reusing the few written files (real split sizes without writing every file)."""
    return [dataclasses.replace(items[i % len(items)], uid=f"{items[i % len(items)].uid}#{i}") for i in range(n)]


def section_beat(fig: dict, suite: Suite) -> str:
    from extract import random_mert

    import marble.beat.train as beat_train
    from marble.beat.dbn import DBNBeatTracker
    from marble.datasets import get_dataset
    from marble.probe.frames import FrameFeatures
    from marble.probe.sweep import WEIGHTED, Probe
    from marble.registry import get_card
    from marble.testing import fixtures

    p, dev = suite.profile, suite.device
    card = get_card("gtzan-beat")
    tmp = Path(tempfile.mkdtemp(prefix="marble-suite-beat-"))
    fixtures.write_gtzan_beat(tmp, per_split=p.beat_unique, seconds=p.beat_seconds)
    ds = get_dataset(card, tmp, allow_partial=True)
    items = {s: _cycle(ds.items(s), p.beat_tracks[s]) for s in ("train", "valid", "test")}
    enc = random_mert(p.beat_preset, dev)
    lrs = list(p.beat_lrs or card.training.learning_rates)
    probes = [Probe(layer, lr) for layer in list(range(enc.num_states)) + [WEIGHTED] for lr in lrs]
    real = {s: c.expected for s, c in zip(("train", "valid", "test"), get_dataset(card, tmp / "none").check().splits)}
    fig.update(preset=p.beat_preset, probes=len(probes), tracks={s: len(v) for s, v in items.items()},
               track_seconds=p.beat_seconds, crop_seconds=card.audio.train_chunk_seconds, real_tracks=real,
               frame_rate=enc.frame_rate, dim=enc.dim, head_hidden=card.head.hidden)
    clock = PhaseClock({
        "reading audio": [(beat_train.CropSource, "batch")],
        "encoding train crops": [(FrameFeatures, "encode")],
        "valid/test features": [(FrameFeatures, "__call__")],
        "decoding": [(DBNBeatTracker, "batch")],
        "scoring": [(beat_train, "score_beats")],
    }, dev)
    fig["units"] = {"probe_train_frames": len(probes) * len(items["train"]) * card.audio.train_chunk_seconds * enc.frame_rate,
                    "probe_valid_track_seconds": len(probes) * len(items["valid"]) * p.beat_seconds,
                    "probe_valid_tracks": len(probes) * len(items["valid"]),
                    "train_crop_seconds": len(items["train"]) * card.audio.train_chunk_seconds,
                    "valid_seconds": len(items["valid"]) * p.beat_seconds}
    start = {}

    def on_epoch(epoch, active, best):  # the epoch's figures saved now: the final decoding may time out
        if epoch != 1:
            return
        w0, c0 = start["t"]
        we, ce, pw, pc = time.perf_counter(), cpu_seconds(), dict(clock.wall), dict(clock.cpu)
        e = {"wall_s": round(we - w0, 3), "cpu_s": round(ce - c0, 3), "phases_wall_s": _r(pw), "phases_cpu_s": _r(pc)}
        for kind, t, ph in (("wall", we - w0, pw), ("cpu", ce - c0, pc)):
            e[f"phases_{kind}_s"]["training"] = round(t - sum(ph.values()), 3)
        fig["epoch"] = e
        if p.beat_preset == "95m" and all(real.values()):
            k = {"train": real["train"] / len(items["train"]), "valid": real["valid"] / len(items["valid"])}
            ph = e["phases_wall_s"]
            fig["epoch_at_real_size_s"] = round(
                (ph["reading audio"] + ph["encoding train crops"] + ph["training"]) * k["train"]
                + (ph["valid/test features"] + ph["decoding"] + ph["scoring"]) * k["valid"], 1)
        suite.save()

    suite.save()
    with clock, measure(dev) as total:
        start["t"] = (time.perf_counter(), cpu_seconds())
        beat_train.train_beat(card, enc, items, probes, 1, str(dev), None, {"batch_size": card.training.batch_size,
                                                                             "on_epoch": on_epoch})
    if "epoch" not in fig:
        raise RuntimeError("train_beat did not report an epoch (on_epoch not called)")
    fig["whole_call"] = {**_t(total), "phases_wall_s": _r(clock.wall), "phases_cpu_s": _r(clock.cpu),
                         "note": "one epoch, then every probe's best checkpoint decoded and scored on valid and test"}
    if clock.missing:
        fig["phases_not_found"] = clock.missing
    return ""


def _r(d: dict) -> dict:
    return {k: round(v, 3) for k, v in d.items()}


def section_musdb(fig: dict, suite: Suite) -> str:
    """One epoch of the third-edition MUSDB sweep (``marble.separation.train``: per-source models, 256-chunk
    steps in micro-batches, validation = each model's own reconstruction and SDR), then the final selection:
    every model reconstructs the validation tracks once more, the four selected ones the test tracks."""
    from extract import random_mert

    import marble.metrics.separation as sep_metrics
    import marble.separation.stems as stems
    import marble.separation.train as sep_train
    from marble.datasets import get_dataset
    from marble.probe.frames import FrameFeatures
    from marble.probe.sweep import WEIGHTED, Probe
    from marble.registry import get_card
    from marble.testing import fixtures

    p, dev = suite.profile, suite.device
    card = get_card("musdb")
    if p.musdb_hidden:
        card = dataclasses.replace(card, head=dataclasses.replace(card.head, hidden=p.musdb_hidden))
    if p.musdb_chunk_seconds:
        card = dataclasses.replace(card, audio=dataclasses.replace(card.audio, train_chunk_seconds=p.musdb_chunk_seconds))
    tmp = Path(tempfile.mkdtemp(prefix="marble-suite-musdb-"))
    fixtures.write_musdb(tmp, per_split=max(1, min(4, max(p.musdb_tracks.values()))), seconds=p.musdb_seconds)
    ds = get_dataset(card, tmp, allow_partial=True)
    items = {s: _cycle(ds.items(s), n) for s, n in p.musdb_tracks.items()}
    enc = random_mert(p.musdb_preset, dev)
    lrs = list(p.musdb_lrs or card.training.learning_rates)
    grid = [Probe(layer, lr) for layer in list(range(enc.num_states)) + [WEIGHTED] for lr in lrs]
    probes = grid[:: max(1, len(grid) // p.musdb_rows)][: p.musdb_rows]
    K = len(card.vocabulary())
    tr = card.training
    fig.update(preset=p.musdb_preset, lstm_hidden=card.head.hidden, rows=len(probes), models=len(probes) * K,
               grid_rows=len(grid), chunks=p.musdb_chunks, tracks={s: len(v) for s, v in items.items()},
               track_seconds=p.musdb_seconds, chunk_seconds=card.audio.train_chunk_seconds,
               batch_size=tr.batch_size, accumulate=tr.accumulate, card_version=card.version)
    clock = PhaseClock({
        "reading audio": [(stems, "training_chunk"), (stems.TrackStems, "read"), (sep_train, "read_mixture")],
        "encoding": [(FrameFeatures, "encode"), (FrameFeatures, "__call__")],
        "STFT": [(sep_train, "mono_magnitude")],
        "separation (heads + Wiener EM + iSTFT)": [(sep_train, "separate_target"), (sep_train, "separate_targets")],
        "scoring": [(sep_train, "global_sdr")],
        "museval": [(sep_metrics, "museval_sdr_per_track")],
    }, dev)
    marks = {}
    orig_validate = sep_train.Separation.validate_epoch

    def validate(self, state, epoch):  # training ends where validation starts
        if "valid_start" not in marks:
            marks["valid_start"] = (time.perf_counter(), cpu_seconds(), dict(clock.wall), dict(clock.cpu))
        return orig_validate(self, state, epoch)

    start = {}

    def on_epoch(epoch, active, best):  # training and validation figures saved now: the final scoring may time out
        if epoch != 1 or "valid_start" not in marks:
            return
        marks["epoch"] = (time.perf_counter(), cpu_seconds(), dict(clock.wall), dict(clock.cpu))
        (w0, c0), (wv, cv, pwv, pcv), (we, ce, pwe, pce) = start["t"], marks["valid_start"], marks["epoch"]
        train = {"wall_s": round(wv - w0, 3), "cpu_s": round(cv - c0, 3), "phases_wall_s": _r(pwv),
                 "phases_cpu_s": _r(pcv)}
        train["phases_wall_s"]["heads (forward, backward, Adam)"] = round(train["wall_s"] - sum(pwv.values()), 3)
        train["phases_cpu_s"]["heads (forward, backward, Adam)"] = round(train["cpu_s"] - sum(pcv.values()), 3)
        dw = {k: pwe[k] - pwv[k] for k in pwe}
        dc = {k: pce[k] - pcv[k] for k in pce}
        valid = {"wall_s": round(we - wv, 3), "cpu_s": round(ce - cv, 3), "phases_wall_s": _r(dw), "phases_cpu_s": _r(dc)}
        valid["phases_wall_s"]["other"] = round(valid["wall_s"] - sum(dw.values()), 3)
        valid["phases_cpu_s"]["other"] = round(valid["cpu_s"] - sum(dc.values()), 3)
        fig.update(train=train, valid=valid)
        suite.save()

    suite.save()
    sep_train.Separation.validate_epoch = validate
    try:
        with clock, measure(dev) as total:
            start["t"] = (time.perf_counter(), cpu_seconds())
            out = sep_train.train_separation(card, enc, items, probes, 1, str(dev), None,
                                             {"chunks_per_epoch": p.musdb_chunks, "on_epoch": on_epoch,
                                              "workers": 1})  # one model at a time: each phase's own CPU time
            # the final selection as marble probe makes it: each source's best model (validation SDR of its kept
            # epoch) reconstructs the test tracks, and with museval the valid tracks once more
            sep_train.sweep_outputs(out, len(probes), seed=0, seeds=1, seeds_sweep=False, museval=p.musdb_museval,
                                    max_epochs=1, train_extra=None)
    finally:
        sep_train.Separation.validate_epoch = orig_validate
    if "epoch" not in marks:
        raise RuntimeError("train_separation did not report its epoch (on_epoch / validation not seen)")
    (w0, c0), (we, ce, pwe, pce) = start["t"], marks["epoch"]
    fw = {k: clock.wall[k] - pwe[k] for k in pwe}
    fc = {k: clock.cpu[k] - pce[k] for k in pce}
    final = {"wall_s": round(total.wall_s - (we - w0), 3), "cpu_s": round(total.cpu_s - (ce - c0), 3),
             "phases_wall_s": _r(fw), "phases_cpu_s": _r(fc), "museval": p.musdb_museval, "selection": "sweep_outputs",
             "note": "the selected model of each source reconstructs the test tracks" +
                     (" and the valid tracks again, museval on both" if p.musdb_museval else " (museval off)")}
    fig["final"] = final
    if clock.missing:
        fig["phases_not_found"] = clock.missing
    suite.save()
    train, valid = fig["train"], fig["valid"]
    real_chunks = sep_train.CHUNKS_PER_TRACK * 86
    if p.musdb_preset == "95m":
        scale_models = len(grid) / len(probes)
        real_valid_s = 14 * 236.0  # the 14 validation tracks, 236 s on average (MUSDB18: 10 h for 150 tracks)
        vs = real_valid_s / (len(items["valid"]) * p.musdb_seconds)
        heads_t = train["phases_wall_s"]["heads (forward, backward, Adam)"]
        per_model_v = sum(valid["phases_wall_s"].get(k, 0.0) for k in ("separation (heads + Wiener EM + iSTFT)", "scoring"))
        fig["epoch_at_real_size_s"] = {
            "training": round((train["wall_s"] - heads_t) * real_chunks / p.musdb_chunks
                              + heads_t * real_chunks / p.musdb_chunks * scale_models, 1),
            "validation": round(per_model_v * vs * scale_models + (valid["wall_s"] - per_model_v) * vs, 1),
            "how": f"measured {p.musdb_chunks} of {real_chunks} chunks, {len(probes)} of {len(grid)} rows, "
                   f"{len(items['valid'])} x {p.musdb_seconds:g} s of the ~{real_valid_s:.0f} s of validation audio; "
                   "scaled linearly (heads, reconstruction and scoring by models, encoding and reading by chunks / seconds)"}
    return ""


def finetune_step(preset: str, device, method: str, batch: int, seconds: float, steps: int, warmup: int = 1) -> dict:
    """Seconds per optimiser step of ``marble finetune``'s network (``marble.finetune.model.TunedModel``: the card's
    head on the weighted sum, LoRA adapters / every weight / a frozen encoder) on GTZAN crops of ``seconds``, with
    the trainer's ingredients: AdamW over its parameter groups, bf16 autocast on CUDA, gradient clipping."""
    from extract import random_mert

    from marble.finetune.config import resolve
    from marble.finetune.model import TunedModel
    from marble.registry import get_card

    card = get_card("gtzan")
    dev = torch.device(device)
    enc = random_mert(preset, dev)
    cfg = resolve(method)
    model = TunedModel(enc, card, cfg, seed=0).to(dev).train()
    opt = torch.optim.AdamW(model.param_groups(cfg, cfg.learning_rates[0]), weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(0)
    wav = (0.1 * torch.randn(batch, int(seconds * enc.sample_rate), generator=g)).to(dev)
    y = torch.randint(0, card.num_outputs, (batch,), generator=g).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for s in range(warmup + steps):
        with measure(dev) as m:
            opt.zero_grad(set_to_none=True)
            amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
            with amp:
                out = model([wav])[0]
            loss = torch.nn.functional.cross_entropy(out.float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
            opt.step()
        if s >= warmup:
            times.append(m)
    counts = model.counts()
    out = {"method": method, "preset": preset, "batch": batch, "crop_seconds": seconds, "steps_timed": len(times),
           "s_per_step": round(float(np.median([t.wall_s for t in times])), 4),
           "cpu_s_per_step": round(float(np.median([t.cpu_s for t in times])), 4),
           "trainable_parameters": counts["trainable_parameters"], "total_parameters": counts["total_parameters"],
           "wall_s": round(sum(t.wall_s for t in times), 3), "cpu_s": round(sum(t.cpu_s for t in times), 3)}
    if dev.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return out


def section_finetune(fig: dict, suite: Suite) -> str:
    try:
        import marble.finetune.model  # noqa: F401
    except ImportError:
        raise NotAvailable("marble.finetune is not on this marble yet (issue 20, the unconstrained track)") from None
    p = suite.profile
    for method in ("head", "lora", "full"):
        fig[method] = finetune_step(p.finetune_preset, suite.device, method, p.finetune_batch, p.finetune_seconds,
                                    p.finetune_steps)
        suite.save()
    return ""


def section_precision(fig: dict, suite: Suite) -> str:
    from bf16_probe import one_task
    from extract import random_mert, tf32_supported

    p, dev = suite.profile, suite.device
    enc = random_mert(p.precision_preset, dev)
    modes = (("tf32",) if tf32_supported() else ()) + ("bf16",)
    if not tf32_supported():
        fig["tf32"] = {"status": "not available", "note": "extract has no tf32 option on this marble (issue 19)"}
    if dev.type == "cpu":
        fig["note"] = "on a CPU TF32 does not exist (tf32 = fp32 here); bf16 runs under CPU autocast"
    tmp = Path(tempfile.mkdtemp(prefix="marble-suite-precision-"))
    fig["gtzan"] = one_task("gtzan", tmp, enc, enc.name, p.precision_per_split, p.precision_seconds, modes,
                            device=str(dev), batch_size=p.batch_size, max_epochs=p.precision_max_epochs)
    fig["preset"], fig["per_split"], fig["seconds"] = p.precision_preset, p.precision_per_split, p.precision_seconds
    return ""


RUNNERS = {"extraction": section_extraction, "probe": section_probe, "beat": section_beat, "musdb": section_musdb,
           "finetune": section_finetune, "precision": section_precision}


# ------------------------------------------------------------------------------------------------
# the per-unit costs marble run --plan reads (marble/plan/costs.py documents each key)


def _solve2(a1, b1, y1, a2, b2, y2):
    """x, z with a1 x + b1 z = y1, a2 x + b2 z = y2 (None when singular); negatives clipped to 0."""
    det = a1 * b2 - a2 * b1
    if abs(det) < 1e-18:
        return None, None
    x = (y1 * b2 - y2 * b1) / det
    z = (a1 * y2 - a2 * y1) / det
    return max(x, 0.0), max(z, 0.0)


def _solve3(a, y):
    """x with a x = y for a 3 x 3 ``a`` (None x 3 when singular); negatives clipped to 0."""
    try:
        x = np.linalg.solve(np.asarray(a, dtype=float), np.asarray(y, dtype=float))
    except np.linalg.LinAlgError:
        return None, None, None
    return tuple(max(float(v), 0.0) for v in x)


def unit_costs(doc: dict) -> dict:
    """Per-unit costs from what has been measured so far; keys absent when their section has not run."""
    kind = "cpu_s" if doc["time_kind"] == "cpu" else "wall_s"
    out: dict = {"time_kind": doc["time_kind"]}
    sec = doc.get("sections", {})
    ex = (sec.get("extraction") or {}).get("figures", {})
    cal = ex.get("calibration", {})
    if "startup" in cal:
        out["startup_s"] = cal["startup"][kind]
    if "transformer_load" in cal:
        out["transformer_load_s"] = cal["transformer_load"]["cpu_s"]  # CPU work on any device
    if "decode" in cal:
        d = cal["decode"]
        out["decode_s_per_audio_s"] = d["cpu_s"] / d["audio_s"]  # always CPU work, in workers or the main process
    big = next((ex[p] for p in ("95m", "330m", "tiny")  # tiny: the smoke's only model (long clips vs the short ones)
                if p in ex and ex[p].get("paths", {}).get("fp32", {}).get("status") == "ok"), None)
    if "tiny" in cal and big is not None and "decode_s_per_audio_s" in out:
        dec = out["decode_s_per_audio_s"]
        t, b = cal["tiny"], big["paths"]["fp32"]
        y1 = t[kind] - (0.0 if kind == "wall_s" and t.get("num_workers", 0) else dec * t["audio_s"])
        overlapped = kind == "wall_s" and ex.get("num_workers", 0) > 0  # decoded in workers while the GPU runs
        y2 = b[kind] - (0.0 if overlapped else dec * ex["clips"] * ex["clip_seconds"])
        per_split = 0.0
        if "tiny_few" in cal:  # rate, per window and per split from three extractions (tiny many / few, big)
            f = cal["tiny_few"]
            y0 = f[kind] - (0.0 if kind == "wall_s" and f.get("num_workers", 0) else dec * f["audio_s"])
            rate, per_window, per_split = _solve3([[t["gflop"], t["windows"], t["splits"]],
                                                   [f["gflop"], f["windows"], f["splits"]],
                                                   [big["gflop"], big["windows"], 1]], [y1, y0, y2])
        else:  # an older JSON: no per-split term
            rate, per_window = _solve2(t["gflop"], t["windows"], y1, big["gflop"], big["windows"], y2)
        if rate is not None:
            out["transformer_s_per_gflop"] = rate
            out["s_per_window"] = per_window
            if "tiny_few" in cal:
                out["s_per_split"] = per_split
            for mode in ("tf32", "bf16"):
                m = big["paths"].get(mode, {})
                if m.get("status") == "ok":
                    out[f"transformer_s_per_gflop_{mode}"] = max(
                        m[kind] - (0.0 if overlapped else dec * ex["clips"] * ex["clip_seconds"])
                        - per_window * big["windows"] - per_split, 0.0) / big["gflop"]
    if "handcrafted" in cal and "decode_s_per_audio_s" in out:
        h, dec, split = cal["handcrafted"], out["decode_s_per_audio_s"], out.get("s_per_split", 0.0)
        if "handcrafted_short" in cal and "s_per_split" in out:  # long and short clips: per audio second, per window
            hs = cal["handcrafted_short"]
            rate, per_window = _solve2(h["audio_s"], ex["clips"], h[kind] - dec * h["audio_s"] - split * h["splits"],
                                       hs["audio_s"], hs["windows"], hs[kind] - dec * hs["audio_s"] - split * hs["splits"])
            if rate is not None:
                out["handcrafted_s_per_audio_s"], out["handcrafted_s_per_window"] = rate, per_window
        else:
            left = h[kind] - dec * h["audio_s"] - out.get("s_per_window", 0.0) * ex["clips"] - split * h.get("splits", 0)
            out["handcrafted_s_per_audio_s"] = max(left, 0.0) / h["audio_s"]
    pr = (sec.get("probe") or {}).get("figures", {})
    fits = [k for k in ("gtzan", "narrow", "few_rows", "few_probes") if k in pr]
    if "one_epoch" in pr and len(fits) >= 3:
        fixed = pr["one_epoch"]["batched"][kind]
        rows, ys = [], []
        for name in fits:  # cost = fixed + GFLOPs + per probe-epoch + per probe-epoch-row + per sweep epoch
            r = pr[name]
            per_row = 2.0 * (r["width"] * r["head_hidden"] + r["head_hidden"] * r["classes"])
            gflop = r["probe_epochs"] * (3 * r["sizes"]["train"] + r["sizes"]["valid"]) * per_row / 1e9
            rows.append([gflop, r["probe_epochs"], r["probe_epochs"] * r["sizes"]["train"], r["sweep_epochs"]])
            ys.append(max(r["batched"][kind] - fixed, 0.0))
        a = np.array(rows)
        if len(fits) < 4:
            a = a[:, :3]
        sol = np.clip(np.linalg.lstsq(a, np.array(ys), rcond=None)[0], 0.0, None)
        out["probe_s_per_gflop"], out["probe_s_per_probe_epoch"], out["probe_s_per_probe_epoch_row"] = map(float, sol[:3])
        out["probe_s_per_sweep_epoch"] = float(sol[3]) if len(sol) > 3 else 0.0
        out["probe_fixed_s_per_task"] = fixed
        g = pr["gtzan"] if "gtzan" in pr else pr[fits[0]]
        out["probe_epochs_per_patience"] = g["probe_epochs"] / g["probes"] / max(1, g["early_stop_patience"])
        out["probe_sweep_epochs_per_mean"] = g["sweep_epochs"] / (g["probe_epochs"] / g["probes"])
    for name in ("emo_narrow", "mtt_narrow"):
        if name in pr:
            r = pr[name]
            out[f"probe_epochs_per_patience_{r['prediction']}"] = r["probe_epochs"] / r["probes"] / max(1, r["early_stop_patience"])
    if "metrics" in pr:
        for name, m in pr["metrics"].items():
            out[f"metric_{name}_s_per_file_label"] = m["cpu_s_per_call"] / (m["files"] * m["labels"])
    bt = (sec.get("beat") or {}).get("figures", {})
    if "epoch" in bt and "units" in bt:
        ph, u = bt["epoch"][f"phases_{kind.split('_')[0]}_s"], bt["units"]
        # the heads' matrix products at the probe's measured rate; the rest per probe-frame
        dim = bt.get("dim") or {"tiny": 32, "95m": 768, "330m": 1024}[bt["preset"]]
        gflop = u["probe_train_frames"] * 3 * 2.0 * (dim * bt.get("head_hidden", 512) + bt.get("head_hidden", 512)) / 1e9
        rest = ph["training"] - out.get("probe_s_per_gflop", 0.0) * gflop
        out["beat_train_s_per_probe_frame"] = max(rest, 0.0) / max(u["probe_train_frames"], 1)
        out["beat_decode_s_per_probe_track_second"] = ph["decoding"] / max(u["probe_valid_track_seconds"], 1e-9)
        out["beat_score_s_per_probe_track"] = ph["scoring"] / max(u["probe_valid_tracks"], 1)
    ms = (sec.get("musdb") or {}).get("figures", {})
    if "train" in ms and "valid" in ms and "accumulate" in ms:  # the third edition (card v3) only
        k = kind.split("_")[0]
        chunk_frames = ms["chunk_seconds"] * 75.0
        out["musdb_train_s_per_model_frame"] = (ms["train"][f"phases_{k}_s"]["heads (forward, backward, Adam)"]
                                                / max(ms["models"] * ms["chunks"] * chunk_frames, 1))
        vsec = ms["tracks"]["valid"] * ms["track_seconds"]
        v = ms["valid"][f"phases_{k}_s"]
        out["musdb_valid_s_per_model_second"] = ((v.get("separation (heads + Wiener EM + iSTFT)", 0.0) + v.get("scoring", 0.0))
                                                 / max(ms["models"] * vsec, 1e-9))
        out["musdb_stft_s_per_audio_second"] = (ms["train"][f"phases_{k}_s"].get("STFT", 0.0)
                                                / max(ms["chunks"] * ms["chunk_seconds"], 1e-9))
        if ms.get("final", {}).get("selection") == "sweep_outputs":  # the final selection as marble probe makes it
            f = ms["final"][f"phases_{k}_s"]
            valid_s, test_s = vsec, ms["tracks"]["test"] * ms["track_seconds"]
            sources = ms["models"] // max(ms["rows"], 1)
            # the selected model of each source reconstructs the test tracks (with museval, the valid ones again)
            museval = bool(ms["final"].get("museval"))
            model_seconds = sources * (test_s + (valid_s if museval else 0.0))
            out["musdb_final_s_per_model_second"] = ((f.get("separation (heads + Wiener EM + iSTFT)", 0.0)
                                                      + f.get("scoring", 0.0)) / max(model_seconds, 1e-9))
            if museval:
                out["musdb_museval_s_per_source_second"] = f.get("museval", 0.0) / max(sources * (valid_s + test_s), 1e-9)
    return {k: (round(v, 12) if isinstance(v, float) else v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------
# the table


def markdown(doc: dict) -> str:
    d = doc["device"]
    kind = "process CPU seconds" if doc["time_kind"] == "cpu" else "wall seconds"
    lines = [f"# marble bench suite: {d['name']} ({d['type']})", "",
             f"{doc['date']}, commit {(doc.get('commit') or 'unknown')[:12]}{' (dirty)' if doc.get('dirty') else ''}, "
             f"torch {doc['torch']}, profile {doc['profile']}{' (SMOKE: tiny sizes, not a measurement)' if doc['smoke'] else ''}; "
             f"{doc['elapsed_s']:.0f} of {doc['budget_s']:.0f} s used. Times: wall and process CPU seconds.", "",
             *([f"Sizes: {doc['profile_note']}.", ""] if doc.get("profile_note") else []),
             "| section | status | measured (date, commit) | measurement | wall s | CPU s | figure |",
             "|---|---|---|---|---|---|---|"]
    when = ""

    def row(sec, status, what, m=None, figure=""):
        w = "" if not m else f"{m.get('wall_s', ''):.2f}" if isinstance(m.get("wall_s"), (int, float)) else ""
        c = "" if not m else f"{m.get('cpu_s', ''):.2f}" if isinstance(m.get("cpu_s"), (int, float)) else ""
        lines.append(f"| {sec} | {status} | {when} | {what} | {w} | {c} | {figure} |")

    for name, rec in doc["sections"].items():
        f, st = rec.get("figures", {}), rec["status"]
        when = f"{rec.get('date', doc['date'])}, {(rec.get('commit') or doc.get('commit') or 'unknown')[:10]}"
        shown = False
        if name == "extraction":
            for preset in ("tiny", "95m", "330m"):
                r = f.get(preset)
                if not r:
                    continue
                for label, m in r.get("paths", {}).items():
                    if m.get("status") != "ok":
                        row(name, m.get("status"), f"{preset} {label}", None, m.get("note", ""))
                    else:
                        gpu = f", peak {m['peak_gpu_mb']:.0f} MB" if m.get("peak_gpu_mb") else ""
                        row(name, st, f"MERT-v1-{preset} shape, {f['clips']} x {f['clip_seconds']:g} s, {label}", m,
                            f"{m['x_realtime']}x realtime{gpu}")
                    shown = True
                lb = r.get("largest_batch") or {}
                if lb.get("batch") is not None:
                    row(name, st, f"MERT-v1-{preset}: largest batch of {lb['window_seconds']:g} s windows (fp32)", None,
                        f"{lb['batch']}{' (search cap)' if lb.get('capped_at') else ''}, peak {lb['peak_gpu_mb']} MB")
        elif name == "probe" and "gtzan" in f:
            g = f["gtzan"]
            row(name, st, f"constrained sweep, {g['probes']} probes, {g['sizes']['train']}/{g['sizes']['valid']}/"
                f"{g['sizes']['test']} x {g['states']} x {g['width']}, batched", g["batched"],
                f"{g['probe_epochs']} probe-epochs")
            row(name, st, f"the same, one configuration at a time (timed {', '.join(g['single_configs_timed'])}, "
                "extrapolated by probe-epochs)", {"wall_s": g["one_at_a_time_extrapolated_s"],
                                                  "cpu_s": g["one_at_a_time_extrapolated_cpu_s"]},
                f"batched is {g['speedup']}x faster (wall)")
            shown = True
        elif name == "beat" and "epoch" in f:
            e = f["epoch"]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in e["phases_wall_s"].items())
            row(name, st, f"gtzan-beat epoch, {f['preset']} shape, {f['probes']} probes, "
                f"{f['tracks']['train']}/{f['tracks']['valid']} tracks", e, f"wall s: {parts}"
                + (f"; at real size ~{f['epoch_at_real_size_s']} s" if f.get("epoch_at_real_size_s") else ""))
            shown = True
        elif name == "musdb" and "train" in f:
            for part in [x for x in ("train", "valid", "final") if x in f]:
                e = f[part]
                parts = ", ".join(f"{k} {v:.2f}" for k, v in e["phases_wall_s"].items())
                row(name, st, f"MUSDB {part}, {f['preset']} shape, {f['rows']} rows x 4 models, {f['chunks']} chunks, "
                    f"{f['tracks']['valid']} valid track(s) of {f['track_seconds']:g} s", e, f"wall s: {parts}")
            if f.get("epoch_at_real_size_s"):
                r = f["epoch_at_real_size_s"]
                row(name, st, "MUSDB epoch at real size (extrapolated)", None,
                    f"training ~{r['training']} s, validation ~{r['validation']} s ({r['how']})")
            shown = True
        elif name == "precision" and "gtzan" in f:
            for mode, m in f["gtzan"]["modes"].items():
                rel = m["feature_rel_diff_per_state"]
                row(name, st, f"GTZAN fixture, {f['preset']} shape, {mode} vs fp32", None,
                    f"features {min(rel):.1e}..{max(rel):.1e} rel.; {m['rows_changed']}/{m['sweep_rows']} rows moved, "
                    f"|test diff| mean {m['test_abs_diff_mean']} max {m['test_abs_diff_max']}; selected test "
                    f"{f['gtzan']['selected_test_fp32']:.4f} -> {m['selected_test']:.4f}")
            shown = True
        elif name == "finetune" and f:
            for mode, m in f.items():
                gpu = f", peak {m['peak_gpu_mb']:.0f} MB" if m.get("peak_gpu_mb") else ""
                row(name, st, f"one fine-tuning step, {mode}, MERT-v1-{m['preset']} shape, batch {m['batch']} x "
                    f"{m['crop_seconds']:g} s", m, f"{m['s_per_step']} s/step (median of {m['steps_timed']}), "
                    f"{m['trainable_parameters'] / 1e6:.2f} M trainable{gpu}")
            shown = True
        if not shown:
            row(name, st, "", None, (rec.get("note") or "").replace("|", "/"))
    lines += ["", f"Per-unit costs for `marble run --plan` ({kind}): see `unit_costs` in the JSON.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    ap.add_argument("--smoke", action="store_true", help="every section on the CPU with tiny sizes (CI)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default=None,
                    help="sizes (default: gpu on CUDA, cpu on a CPU, smoke with --smoke)")
    ap.add_argument("--minutes", type=float, default=None, help="total time budget (default: the profile's)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, default=None, help="folder of the JSON and the table (default bench/results, "
                    "bench/results/smoke for --smoke)")
    ap.add_argument("--commit", default=None, help="the commit measured, when this is not a git checkout")
    ap.add_argument("--budget", action="append", default=[], metavar="SECTION=SECONDS",
                    help="override a section's time budget (repeatable), e.g. --budget probe=3000")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--merge", action="store_true", help="keep the sections of today's earlier run (same profile and "
                    "device) that --sections does not rerun; each section records its own commit")
    ap.add_argument("--recompute", type=Path, default=None, metavar="JSON",
                    help="re-derive unit_costs and the table of an earlier run's JSON from its figures, and exit")
    a = ap.parse_args(argv)
    if a.recompute is not None:
        doc = json.loads(a.recompute.read_text())
        if doc.get("profile") in PROFILES:  # a run from before profile_note existed: the profile's description
            doc.setdefault("profile_note", PROFILES[doc["profile"]].note)
        doc["unit_costs"] = unit_costs(doc)
        write_atomic(a.recompute, json.dumps(doc, indent=1, default=_json_default) + "\n")
        write_atomic(a.recompute.with_suffix(".md"), markdown(doc))
        print(json.dumps(doc["unit_costs"], indent=1))
        return 0
    from marble.devices import resolve_device

    device = torch.device("cpu") if a.smoke else resolve_device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    profile = PROFILES[a.profile or ("smoke" if a.smoke else "gpu" if device.type == "cuda" else "cpu")]
    for item in a.budget:
        name, _, seconds = item.partition("=")
        if name not in RUNNERS or not seconds.replace(".", "", 1).isdigit():
            ap.error(f"--budget {item!r}: give SECTION=SECONDS with a section among {', '.join(SECTIONS)}")
        profile = dataclasses.replace(profile, budgets={**profile.budgets, name: float(seconds)})
    out = a.out or (HERE / "results" / ("smoke" if a.smoke else ""))
    wanted = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in RUNNERS]
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    suite = Suite(device, profile, out, a.smoke, a.minutes or profile.minutes, a.commit)
    if a.merge and suite.json_path.is_file():  # keep the sections measured earlier today that are not rerun
        old = json.loads(suite.json_path.read_text())
        if old.get("profile") != profile.name or old.get("device", {}).get("name") != suite.doc["device"]["name"]:
            ap.error(f"--merge: {suite.json_path} was measured with another profile or device")
        for rec in old.get("sections", {}).values():  # each section keeps the commit and date it was measured at
            rec.setdefault("commit", old.get("commit"))
            rec.setdefault("date", old.get("date"))
        suite.doc["sections"] = {k: v for k, v in old.get("sections", {}).items() if k not in wanted}
        suite.doc["merged_from"] = old.get("started")
    suite.save()
    print(f"[suite] writing {suite.json_path} (and .md) as it goes", file=sys.stderr, flush=True)
    for name in SECTIONS:
        if name in wanted:
            suite.run(name, RUNNERS[name])
    suite.doc["peak_rss_mb"] = round(peak_rss_mb(), 1)
    suite.save()
    print(suite.md_path.read_text())
    print(f"[suite] {suite.json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
