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
``transformer_s_per_gflop[_tf32|_bf16]`` forward GFLOP of a HuBERT/MERT-shaped encoder (``shapes.transformer_gflop``)
``s_per_window``                       encoder window (batching, pooling, host copy, cache writes)
``startup_s``                          a ``marble run`` that keeps its result: imports, checks, the leaderboard rows
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
    "measured": "2026-12-02",
    "commit": "a1f3aec9d010dd27769be8f0704b10b1edd18e5e",
    "device": "Intel(R) Xeon(R) Processor",
    "unit_costs": {
        "time_kind": "cpu",
        "startup_s": 3.255,
        "decode_s_per_audio_s": 0.000333333333,
        "transformer_s_per_gflop": 0.010936079874,
        "s_per_window": 0.076856792894,
        "transformer_s_per_gflop_tf32": 0.011360147725,
        "transformer_s_per_gflop_bf16": 0.008595397672,
        "handcrafted_s_per_audio_s": 0.00785477357,
        "probe_s_per_gflop": 0.047823982669,
        "probe_s_per_probe_epoch": 0.0,
        "probe_s_per_probe_epoch_row": 0.000139519035,
        "probe_s_per_sweep_epoch": 0.284403217012,
        "probe_fixed_s_per_task": 1.375,
        "probe_epochs_per_patience": 1.256547619048,
        "probe_sweep_epochs_per_mean": 1.830412126954,
        "probe_epochs_per_patience_regression": 1.755952380952,
        "metric_roc_auc_macro_s_per_file_label": 1.181e-07,
        "metric_ap_macro_s_per_file_label": 8.09e-08,
        "metric_accuracy_s_per_file_label": 2e-09,
        "beat_train_s_per_probe_frame": 7.2245546e-05,
        "beat_decode_s_per_probe_track_second": 0.000472395833,
        "beat_score_s_per_probe_track": 0.000171875,
        "musdb_train_s_per_model_frame": 0.000502146267,
        "musdb_valid_s_per_model_second": 0.06271875,
        "musdb_stft_s_per_audio_second": 0.022743489583,
        "musdb_final_s_per_model_second": 0.0714375,
        "musdb_museval_s_per_source_second": 0.043640625
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
