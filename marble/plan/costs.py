"""Measured per-unit costs the plan multiplies by its counts, and where they come from.

Source, in order: the latest ``bench/results/*.json`` written by ``bench/suite.py`` for the device class
(``cpu``, or a CUDA GPU: the one present when there is one, else the latest GPU measured), when marble runs
from a source checkout; else, for the CPU only, :data:`BUILTIN_CPU` (the same figures, measured on the
project's 2-core machine and copied here so an installed marble has them). There are no built-in GPU
figures: a GPU plan without a GPU measurement gives counts and disk only.

Keys (seconds of the source's ``time_kind``: process CPU seconds for a CPU, wall seconds for a GPU):

=====================================  ==========================================================================
key                                    per
=====================================  ==========================================================================
``decode_s_per_audio_s``               audio second decoded and resampled (CPU seconds, in any process)
``handcrafted_s_per_audio_s``          audio second through the handcrafted encoder
``handcrafted_s_per_window``           its window (the pipeline around a light encoder; ``s_per_window`` otherwise)
``transformer_s_per_gflop[_tf32|_bf16]`` forward GFLOP of a HuBERT/MERT-shaped encoder (``shapes.transformer_gflop``)
``s_per_window``                       encoder window (batching, pooling, host copy, cache writes)
``s_per_split``                        extracted split (its DataLoader and decode workers, the split's merge)
``startup_s``                          a ``marble run`` that keeps its result: imports, checks, the leaderboard rows
``transformer_load_s``                 loading a transformer checkpoint in a fresh process (transformers' imports)
``probe_fixed_s_per_task``             clip task: loading the cache, building the result (a one-epoch sweep)
``probe_s_per_gflop``                  forward GFLOP of the probe heads (training rows count 3x: backward)
``probe_s_per_probe_epoch``            probe and epoch (Adam step bookkeeping, the monitor's call)
``probe_s_per_probe_epoch_row``        probe, epoch and training row (batching, dropout masks)
``probe_s_per_sweep_epoch``            epoch of the whole sweep (the pass over the batches, the monitor's call)
``probe_epochs_per_patience[_kind]``   epochs a probe trains, in units of the card's early-stop patience (accuracy;
                                       ``_regression``, ``_multilabel``: continuous monitors), on synthetic sweeps
``probe_sweep_epochs_per_mean``        the sweep's epochs (its longest probe) over the probes' mean
``metric_<name>_s_per_file_label``     monitor metric, per validation file and label, per probe and epoch
``beat_*``                             gtzan-beat: training beyond the heads' FLOPs per probe-frame, DBN decoding
                                       per probe-track-second, scoring per probe-track
``musdb_*``                            MUSDB (third edition): training per model-frame, validation (a model's
                                       reconstruction and SDR) per model-second, the selected models' final
                                       reconstructions per model-second, museval per source-second, STFT per
                                       second of training chunk (its mixture's and its sources' STFTs together)
=====================================  ==========================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: the CPU figures of ``bench/results/cpu-*.json`` (``unit_costs``), for an installed marble; equal to the
#: committed file's (``tests/test_plan.py`` checks it)
BUILTIN_CPU: dict = {
    "measured": "2026-12-03",
    "commit": "f306a12f720fef4eb47c7071b924d666cd8e9bc9",
    "device": "Intel(R) Xeon(R) Processor",
    "unit_costs": {
        "time_kind": "cpu",
        "startup_s": 2.961,
        "transformer_load_s": 2.472,
        "decode_s_per_audio_s": 0.000316666667,
        "transformer_s_per_gflop": 0.009305320123,
        "s_per_window": 0.012513495694,
        "s_per_split": 0.123247191759,
        "transformer_s_per_gflop_tf32": 0.009705999616,
        "transformer_s_per_gflop_bf16": 0.005734902702,
        "handcrafted_s_per_audio_s": 0.006629394035,
        "handcrafted_s_per_window": 0.0,
        "probe_s_per_gflop": 0.03689874438,
        "probe_s_per_probe_epoch": 0.0,
        "probe_s_per_probe_epoch_row": 7.744999e-06,
        "probe_s_per_sweep_epoch": 0.007235823337,
        "probe_fixed_s_per_task": 0.22,
        "probe_epochs_per_patience": 1.256547619048,
        "probe_sweep_epochs_per_mean": 1.830412126954,
        "probe_epochs_per_patience_regression": 1.755952380952,
        "probe_epochs_per_patience_multilabel": 2.89880952381,
        "metric_roc_auc_macro_s_per_file_label": 1.41e-07,
        "metric_ap_macro_s_per_file_label": 1.009e-07,
        "metric_accuracy_s_per_file_label": 2.9e-09,
        "beat_train_s_per_probe_frame": 9.123936e-06,
        "beat_decode_s_per_probe_track_second": 0.0005140625,
        "beat_score_s_per_probe_track": 0.000203125,
        "musdb_train_s_per_model_frame": 0.000507215712,
        "musdb_valid_s_per_model_second": 0.06559375,
        "musdb_stft_s_per_audio_second": 0.007649088542,
        "musdb_final_s_per_model_second": 0.0528125,
        "musdb_museval_s_per_source_second": 0.048046875
    }
}


@dataclass
class UnitCosts:
    values: dict
    source: str
    time_kind: str  # "cpu": process CPU seconds | "wall"
    device_name: str | None = None

    def get(self, key: str, default=None):
        v = self.values.get(key)
        return default if v is None else v


def results_dir() -> Path:
    """``bench/results`` of the source checkout marble runs from (absent in an installed wheel)."""
    return Path(__file__).resolve().parents[2] / "bench" / "results"


def _candidates(kind: str, gpu_name: str | None, folder: Path) -> list[tuple[str, Path, dict]]:
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("schema") != "marble-bench-suite/1" or doc.get("smoke"):
            continue
        dev = doc.get("device") or {}
        if dev.get("type") != kind or not (doc.get("unit_costs") or {}).get("transformer_s_per_gflop"):
            continue
        if gpu_name is not None and dev.get("name") != gpu_name:
            continue
        out.append((str(doc.get("date", "")), path, doc))
    return sorted(out, key=lambda t: (t[0], t[1].name))


def load_costs(device_type: str, gpu_name: str | None = None, folder: Path | None = None) -> UnitCosts | None:
    """The unit costs for ``device_type`` (``cpu`` | ``cuda``); None when no GPU figure exists."""
    folder = results_dir() if folder is None else folder
    found = _candidates(device_type, gpu_name, folder)
    if not found and gpu_name is not None:
        found = _candidates(device_type, None, folder)  # another GPU's figures, said so in the source
    if found:
        date, path, doc = found[-1]
        dev = doc["device"]
        commit = (doc.get("commit") or "unknown commit")[:10]
        other = " (another GPU than this one)" if gpu_name is not None and dev.get("name") != gpu_name else ""
        return UnitCosts(dict(doc["unit_costs"]), f"measured figures of {path.name} ({dev.get('name')}{other}, "
                         f"{date}, commit {commit}, profile {doc.get('profile')})", doc.get("time_kind", "cpu"),
                         dev.get("name"))
    if device_type == "cpu" and BUILTIN_CPU["unit_costs"]:
        b = BUILTIN_CPU
        return UnitCosts(dict(b["unit_costs"]), f"built-in CPU figures (measured {b['measured']} at commit "
                         f"{(b['commit'] or '?')[:10]} on {b['device']})", "cpu", b["device"])
    return None
