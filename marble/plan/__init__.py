"""``marble run --plan``: what the benchmark will cost before it starts, from counts times measured unit costs.

Per task: the items extraction reads (the same loader and rules as ``marble run``; from the official lists
when the data is not on disk), their audio hours, the disk of the feature cache, and the estimated extraction
and probing time on the chosen device. Counts are exact where the data is on disk; times are estimates:
the measured per-unit costs (:mod:`marble.plan.costs`) times the work (:mod:`marble.plan.shapes` FLOPs,
windows, probe-epochs). How long a probe trains depends on early stopping, which no count predicts: the
estimate assumes the measured typical epochs (``probe_epochs_per_patience`` x the card's patience) and the
range runs from the shortest possible sweep (patience + 1 epochs) to the card's epoch cap.

Nothing is extracted, trained or downloaded; a hub model's shape comes from the local Hugging Face cache or
the known architectures (``shapes.KNOWN_ARCHITECTURES``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from marble.plan.costs import UnitCosts, load_costs
from marble.plan.shapes import ModelShape, model_shape
from marble.plan.workload import TaskLoad, task_load

__all__ = ["Plan", "TaskPlan", "make_plan", "render", "ModelShape", "UnitCosts"]


@dataclass
class TaskPlan:
    load: TaskLoad
    cache_bytes: int | None = None
    extract_s: float | None = None
    probe_s: float | None = None
    probe_range: tuple[float, float] | None = None
    epochs: float | None = None
    probes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float | None:
        if self.extract_s is None or self.probe_s is None:
            return None
        return self.extract_s + self.probe_s


@dataclass
class Plan:
    model: str
    shape: ModelShape
    device: str
    costs: UnitCosts | None
    tasks: list[TaskPlan]
    startup_s: float | None = None
    dtype: str = "fp32"
    tf32: bool = False


def _probes(card, shape: ModelShape, layers, lrs) -> int:
    n_lrs = len(lrs) if lrs else len(card.training.learning_rates)
    if layers:
        return len(layers) * n_lrs
    s = shape.num_states or 1
    return (s + (1 if s > 1 else 0)) * n_lrs


def _epochs(card, costs: UnitCosts, max_epochs: int | None) -> tuple[float, float, float]:
    """(typical, shortest, longest) epochs a probe trains: the measured typical multiple of the card's patience for
    its kind of monitor (accuracy stops sooner than a continuous R2 or ROC-AUC), within patience + 1 and the cap."""
    cap = float(max_epochs or card.training.max_epochs)
    pat = float(card.training.early_stop_patience)
    r = costs.get(f"probe_epochs_per_patience_{card.prediction}") or costs.get("probe_epochs_per_patience", 1.6)
    lo = min(cap, pat + 1)
    return min(cap, max(lo, r * pat)), lo, cap


class _Cost:
    """Encoder and audio costs of one plan (the model's shape x the device's unit costs)."""

    def __init__(self, shape: ModelShape, costs: UnitCosts, dtype: str, tf32: bool, batch_size: int, num_workers: int):
        self.shape, self.c = shape, costs
        key = "transformer_s_per_gflop" + ("_bf16" if dtype in ("bf16", "fp16") else "_tf32" if tf32 else "")
        self.rate = costs.get(key) or costs.get("transformer_s_per_gflop")
        self.wall = costs.time_kind == "wall"
        self.workers = max(0, int(num_workers))

    def decode(self, seconds: float) -> float:
        d = self.c.get("decode_s_per_audio_s", 0.0) * seconds
        return d / max(1, self.workers) if self.wall else d

    def forward(self, windows: dict[int, int], audio_seconds: float) -> float | None:
        """The encoder's own computation: what a frame task's training crops cost, encoded on the fly in batches
        (no extraction pipeline around them: no per-window pooling, host copy or cache write)."""
        s = self.shape
        if s.kind == "handcrafted":
            h = self.c.get("handcrafted_s_per_audio_s")
            return None if h is None else h * audio_seconds
        if s.kind in ("transformer", "dense") and self.rate is not None:
            return sum(n * self.rate * s.gflop(length) for length, n in windows.items())
        return None

    def encoder(self, windows: dict[int, int], audio_seconds: float, splits: int = 1) -> float | None:
        """Extraction's encoder side: the computation plus the pipeline's cost per window and per split (a
        DataLoader with its decode workers, the split's merge)."""
        f = self.forward(windows, audio_seconds)
        per_window = self.c.get("handcrafted_s_per_window") if self.shape.kind == "handcrafted" else None
        per_window = self.c.get("s_per_window", 0.0) if per_window is None else per_window
        return None if f is None else f + per_window * sum(windows.values()) + self.c.get("s_per_split", 0.0) * splits

    def extraction(self, windows: dict[int, int], audio_seconds: float, splits: int = 1) -> float | None:
        enc = self.encoder(windows, audio_seconds, splits)
        if enc is None:
            return None
        dec = self.decode(audio_seconds)
        return max(enc, dec) if self.wall and self.workers else enc + dec


def _clip_probe(card, load: TaskLoad, shape: ModelShape, c: UnitCosts, probes: int, epochs: float,
                cap: float) -> float | None:
    need = ("probe_s_per_gflop", "probe_s_per_probe_epoch", "probe_s_per_probe_epoch_row", "probe_fixed_s_per_task")
    if shape.dim is None or any(c.get(k) is None for k in need):
        return None
    rows_train = sum(load.splits["train"].windows.values()) if "train" in load.splits else 0
    rows_valid = sum(load.splits["valid"].windows.values()) if "valid" in load.splits else 0
    files_valid = load.splits["valid"].items if "valid" in load.splits else 0
    hid, out = card.head.hidden, card.num_outputs
    pe = probes * epochs
    sweep_epochs = min(cap, epochs * c.get("probe_sweep_epochs_per_mean", 1.0))  # the sweep lasts its longest probe
    gflop = pe * (3 * rows_train + rows_valid) * 2.0 * (shape.dim * hid + hid * out) / 1e9
    t = (c.get("probe_fixed_s_per_task") + c.get("probe_s_per_gflop") * gflop + c.get("probe_s_per_probe_epoch") * pe
         + c.get("probe_s_per_probe_epoch_row") * pe * rows_train + c.get("probe_s_per_sweep_epoch", 0.0) * sweep_epochs)
    metric, base = c.get(f"metric_{card.metrics.main}_s_per_file_label"), c.get("metric_accuracy_s_per_file_label", 0.0)
    if metric is not None and files_valid:  # the monitor beyond accuracy's cost (already in the calibration)
        labels = out if card.prediction == "multilabel" else 1
        t += max(metric - base, 0.0) * files_valid * labels * pe * max(1, len(card.metrics.group_rules))
    return t


def _frame_probe(card, load: TaskLoad, shape: ModelShape, cost: _Cost, c: UnitCosts, probes: int,
                 epochs: float, cap: float) -> float | None:
    """gtzan-beat / MUSDB: training inputs read and encoded on the fly every epoch of the sweep (its longest probe,
    as in :func:`_clip_probe`: one draw feeds every probe still training), the heads over each probe's own epochs,
    decoding and scoring."""
    sr, fps = shape.sample_rate or 24000, shape.frame_rate or 75.0
    n_train = load.splits["train"].items if "train" in load.splits else 0
    valid_s = load.splits["valid"].seconds if "valid" in load.splits else 0.0
    test_s = load.splits["test"].seconds if "test" in load.splits else 0.0
    n_valid = load.splits["valid"].items or 0
    n_test = load.splits["test"].items or 0
    crop = float(card.audio.train_chunk_seconds or 10.0)
    sweep_epochs = min(cap, epochs * c.get("probe_sweep_epochs_per_mean", 1.0))
    if card.prediction == "frame-binary":
        keys = ("beat_train_s_per_probe_frame", "beat_decode_s_per_probe_track_second", "beat_score_s_per_probe_track")
        if any(c.get(k) is None for k in keys) or not n_train:
            return None
        enc = cost.forward({int(crop * sr): n_train}, n_train * crop)  # one crop per training track, read and encoded
        if enc is None:
            return None
        crops = enc + cost.decode(n_train * crop)
        frames = probes * n_train * crop * fps
        heads = c.get("probe_s_per_gflop", 0.0) * frames * 3 * 2.0 * (shape.dim * card.head.hidden + card.head.hidden) / 1e9
        per_epoch = (heads + c.get(keys[0]) * frames  # an epoch of every probe: training, DBN decoding, scoring
                     + c.get(keys[1]) * probes * valid_s + c.get(keys[2]) * probes * n_valid)
        final = c.get(keys[1]) * probes * (valid_s + test_s) + c.get(keys[2]) * probes * (n_valid + n_test)
        return crops * sweep_epochs + per_epoch * epochs + final
    if card.prediction == "separation":
        keys = ("musdb_train_s_per_model_frame", "musdb_valid_s_per_model_second")
        if any(c.get(k) is None for k in keys) or not n_train:
            return None
        from marble.separation.train import CHUNKS_PER_TRACK

        sources = len(card.vocabulary())
        chunks = CHUNKS_PER_TRACK * n_train
        models = probes * sources
        enc = cost.forward({int(crop * sr): chunks}, chunks * crop)  # the mixture of the stems, summed in memory
        if enc is None:
            return None
        reading = cost.decode(chunks * crop * sources)
        # per second of training chunk: its mixture's and its sources' magnitude STFTs together, as the suite
        # measures the figure (mono_magnitude's time over chunks x chunk seconds)
        stft = c.get("musdb_stft_s_per_audio_second", 0.0) * chunks * crop
        # an epoch: the chunks read, encoded and transformed once for every model still training, every model's
        # training and its reconstruction of the valid tracks; at the end each source's selected model
        # reconstructs the test tracks and, for museval (marble probe computes it), the valid tracks again, and
        # museval scores both
        per_model_epoch = c.get(keys[0]) * models * chunks * crop * fps + c.get(keys[1]) * models * valid_s
        # the final reconstructions are validation's operation again (its own figure when measured; a figure of 0
        # is a timer that saw nothing, not a free operation)
        final = (c.get("musdb_final_s_per_model_second") or c.get(keys[1])) * sources * (test_s + valid_s)
        museval = c.get("musdb_museval_s_per_source_second")
        if museval is None:
            return None
        return (enc + reading + stft) * sweep_epochs + per_model_epoch * epochs + final + museval * sources * (valid_s + test_s)
    return None


def make_plan(model: str, tasks="all", *, data_dir=None, cache_dir=None, tasks_dir=None, device: str = "auto",
              allow_partial: bool = False, layers=None, lrs=None, max_epochs: int | None = None, dtype: str = "auto",
              tf32: bool = False, batch_size: int = 8, num_workers: int = 2, costs: UnitCosts | None = None,
              progress: bool = False) -> Plan:
    """The plan of ``marble run`` with these options (see the module docstring); nothing is computed."""
    import torch

    from marble import settings
    from marble.benchmark import _complete_cache
    from marble.encoders.identity import model_cache_dir
    from marble.probe.config import parse_layers, parse_lrs
    from marble.registry import select_cards

    dev = "cuda" if (device in ("auto", None) and torch.cuda.is_available()) else ("cpu" if device in ("auto", None) else device)
    kind = "cuda" if str(dev).startswith("cuda") else "cpu"
    gpu = torch.cuda.get_device_name(torch.device(dev)) if kind == "cuda" and torch.cuda.is_available() else None
    if costs is None:
        costs = load_costs(kind, gpu)
    shape = model_shape(model)
    cards = select_cards(tasks, tasks_dir)
    layer_spec = list(parse_layers(layers) or [])
    data, cache_root = settings.data_dir(data_dir), settings.cache_dir(cache_dir)
    dtype_name = "bf16" if dtype in ("bf16", "bfloat16") else "fp16" if dtype in ("fp16", "float16") else "fp32"
    cost = _Cost(shape, costs, dtype_name, tf32, batch_size, num_workers) if costs is not None else None
    plans = []
    for card in cards:
        load = task_load(card, data, shape.sample_rate or 24000, allow_partial)
        tp = TaskPlan(load)
        plans.append(tp)
        if load.note:
            tp.notes.append(load.note)
        if shape.num_states and shape.dim and shape.frame_rate:
            states = shape.num_states
            if card.is_clip_level:
                rows = sum(sum(s.windows.values()) for s in load.splits.values())
                tp.cache_bytes = rows * states * shape.dim * 2
            else:
                secs = sum(s.seconds for s in load.splits.values() if s.cached)
                tp.cache_bytes = int(secs * shape.frame_rate * states * shape.dim * 2)
        if cost is None:
            continue
        cached = [s for s in load.splits.values() if s.cached]
        windows: dict[int, int] = {}
        for s in cached:
            for k, v in s.windows.items():
                windows[k] = windows.get(k, 0) + v
        if card.is_clip_level and _complete_cache(model_cache_dir(cache_root, model, card.id), card):
            tp.extract_s = 0.0
            tp.notes.append("its feature cache is complete: `marble run` probes it without extracting")
        elif load.items is not None or load.source == "data":
            tp.extract_s = cost.extraction(windows, sum(s.seconds for s in cached), len(cached))
        lr_list = parse_lrs(lrs, card.training.learning_rates) if lrs else None
        tp.probes = _probes(card, shape, layer_spec, lr_list)
        typical, lo, hi = _epochs(card, costs, max_epochs)
        tp.epochs = typical
        if load.items is None:
            continue
        if card.is_clip_level:
            f = lambda e: _clip_probe(card, load, shape, costs, tp.probes, e, hi)  # noqa: E731
        else:
            f = lambda e: _frame_probe(card, load, shape, cost, costs, tp.probes, e, hi)  # noqa: E731
        tp.probe_s = f(typical)
        if tp.probe_s is not None:
            tp.probe_range = (f(lo), f(hi))
        elif not card.is_clip_level:
            tp.notes.append("probing time not estimated: no measured frame-task costs for this device")
    startup = costs.get("startup_s") if costs is not None else None
    if startup is not None and shape.kind == "transformer":  # transformers' imports and the model's construction
        startup += costs.get("transformer_load_s", 0.0)
    return Plan(model, shape, kind if kind == "cpu" else (gpu or "cuda"), costs, plans, startup, dtype_name, tf32)


# ------------------------------------------------------------------------------------------------


def human_seconds(s: float | None, days: bool = True) -> str:
    if s is None:
        return "?"
    if not days and s >= 5400:
        return f"{s / 3600:,.1f} h"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def render(plan: Plan) -> str:
    """The plan as text: a header naming every source, a Markdown table, totals and notes."""
    s, c = plan.shape, plan.costs
    kind = "process CPU time" if (c is None or c.time_kind == "cpu") else "wall time"
    shape = (f"{s.num_states} states x {s.dim}, {s.frame_rate:g} frames/s at {s.sample_rate} Hz"
             + (f", {s.params / 1e6:.0f} M parameters" if s.params else "")) if s.num_states else "shape unknown"
    lines = [f"Plan for {plan.model} on {plan.device} (nothing is computed; `marble run` without --plan does the work)",
             f"model: {shape} (from {s.source})"]
    if c is None and plan.device == "cpu":
        lines.append("times: not estimated: no CPU figures (run `python bench/suite.py --device cpu` in a source "
                     "checkout)")
    elif c is None:
        lines.append(f"times: not estimated: no GPU measurement yet ({plan.device}). On the GPU machine run "
                     "`make bench-gpu` (python bench/suite.py --device cuda, ~8 min) and commit bench/results/*.json.")
    else:
        lines.append(f"times: {kind}, from the {c.source}")
        if s.kind == "unknown":
            lines.append("times: extraction not estimated: the model's size is unknown offline")
    lines += ["", "| task | data | files (train/valid/test) | audio | cache disk | extraction | probing (range) |",
              "|---|---|---|---|---|---|---|"]
    tot = {"items": 0, "seconds": 0.0, "bytes": 0, "extract": 0.0, "probe": 0.0}
    unknown = {"items": False, "bytes": False, "extract": False, "probe": False}
    for tp in plan.tasks:
        ld = tp.load
        counts = "/".join("?" if x.items is None else f"{x.items}" for x in ld.splits.values()) or "?"
        if ld.source == "official list":
            counts += " (official)"
        hours = human_seconds(ld.seconds, days=False) if ld.seconds else "?"
        rng = f" ({human_seconds(tp.probe_range[0])}-{human_seconds(tp.probe_range[1])})" if tp.probe_range else ""
        lines.append(f"| {ld.task} | {'on disk' if ld.source == 'data' else 'not found'} | {counts} | {hours} | "
                     f"{human_bytes(tp.cache_bytes)} | {human_seconds(tp.extract_s)} | {human_seconds(tp.probe_s)}{rng} |")
        for key, val in (("items", ld.items), ("bytes", tp.cache_bytes), ("extract", tp.extract_s), ("probe", tp.probe_s)):
            if val is None:
                unknown[key] = True
            else:
                tot[key] += val
        tot["seconds"] += ld.seconds
    mark = {k: (" + ?" if v else "") for k, v in unknown.items()}
    lines.append(f"| **total** | | {tot['items']}{mark['items']} | {human_seconds(tot['seconds'], days=False)} | "
                 f"{human_bytes(tot['bytes'])}{mark['bytes']} | {human_seconds(tot['extract'])}{mark['extract']} | "
                 f"{human_seconds(tot['probe'])}{mark['probe']} |")
    lines.append("")
    if plan.startup_s is not None and c is not None:
        all_s = tot["extract"] + tot["probe"] + plan.startup_s
        more = " (+ the tasks marked ?)" if unknown["extract"] or unknown["probe"] else ""
        lines.append(f"whole run: about {human_seconds(all_s)} of {kind}{more}, startup included.")
    if c is not None and c.time_kind == "cpu":
        lines.append("On an idle machine wall time is about the CPU time divided by the cores torch uses; on a "
                     "shared machine it is longer.")
    typical = next((tp for tp in plan.tasks if tp.epochs), None)
    if typical is not None and c is not None:
        kinds = ", ".join(f"{k} {c.get('probe_epochs_per_patience_' + k):.2f}" for k in ("regression", "multilabel")
                          if c.get("probe_epochs_per_patience_" + k))
        lines.append(f"Probing assumes each probe trains {c.get('probe_epochs_per_patience', 1.6):.2f} x the card's "
                     f"early-stop patience ({kinds + '; ' if kinds else ''}measured on synthetic sweeps, capped); the "
                     "range runs from stopping at patience + 1 epochs to the epoch cap.")
    absent = [tp.load.task for tp in plan.tasks if tp.load.source != "data"]
    if absent:
        lines.append(f"Not on disk ({', '.join(absent)}): `marble run` skips these tasks until their data is there "
                     "(`marble data download`); their counts come from the official lists, their lengths are nominal.")
    for tp in plan.tasks:
        for n in tp.notes:
            lines.append(f"note: {tp.load.task}: {n}")
    return "\n".join(lines) + "\n"
