"""The result JSON of one (model, task, track) — field names as in RESULT_FORMAT (schema_version 1)."""

from __future__ import annotations

import datetime as _dt
import math
import os
import subprocess
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from marble.results.accounting import compact
from marble.results import result_path  # noqa: F401  (re-exported: one definition of the results layout)

SCHEMA_VERSION = 1




def git_hash() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def seed_summary(seeds: Sequence[int], values: Sequence[float], metric: str) -> dict:
    """Mean, sample std and a two-sided 95 % t interval of the per-seed values, clipped to the metric's
    range (a t interval of an accuracy near 1 would otherwise reach past 1)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else 0.0
    from marble.metrics import RANGE

    lo, hi = RANGE.get(metric, (-math.inf, math.inf))
    return {"n": n, "seeds": [int(s) for s in seeds], "metric": metric, "values": [float(x) for x in v],
            "mean": mean, "std": std, "ci95": [max(mean - half, lo), min(mean + half, hi)]}


def _clean(x: Any) -> Any:
    """JSON-safe values: numpy scalars to python, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def build_result(*, card, model: str, track: str, selected: dict, valid: dict, test: dict, sweep: list[dict],
                 weighted_sum: dict | None, seeds: dict | None, head: dict, training: dict, manifest: dict,
                 source: str = "ours", data: dict | None = None, artifacts: dict | None = None) -> dict:
    """Assemble the result dict (no I/O). ``sweep`` rows: layer, lr, valid, test, best_epoch, epochs, stopped.
    ``training.seed`` is the run's seed (``manifest.seed``), not the card's default that the plan starts from.
    ``artifacts``: the sidecar records (:func:`marble.results.artifacts.entry`) of the files written beside it."""
    if "seed" in manifest:
        training = dict(training, seed=manifest["seed"])
    return _clean({
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "model": model,
        "task": card.id,
        "task_version": card.version,
        "protocol": card.protocol,
        "track": track,
        "main_metric": card.metrics.main,
        "direction": card.metrics.direction,
        "scales": metric_scales(list(dict.fromkeys([*test, *valid])) or card.metrics.names),
        "selected": selected,
        "valid": valid,
        "test": test,
        "sweep": sweep,
        "weighted_sum": weighted_sum,
        "seeds": seeds,
        "head": head,
        "training": training,
        "manifest": manifest,
        "data": compact(data, card.splits.excluded),
        **({"artifacts": artifacts} if artifacts else {}),
    })


def metric_scales(names) -> dict:
    """Each metric's unit and the factor the MARBLE tables multiply it by: scores explain themselves."""
    from marble.metrics import SCALE

    return {n: {"unit": "dB" if SCALE.get(n, 100.0) == 1.0 else "ratio", "table_factor": int(SCALE.get(n, 100.0))}
            for n in names}


def command_line() -> str | None:
    """How this process was started: ``marble <args>`` for the CLI, else the interpreter's argv."""
    import shlex
    import sys

    argv = list(sys.argv or [])
    if not argv:
        return None
    head = Path(argv[0]).name
    if head in ("marble", "__main__.py") or argv[0].endswith(("marble/__main__.py", "marble/cli/__init__.py")):
        argv = ["marble", *argv[1:]]
    return " ".join(shlex.quote(a) for a in argv)


def versions() -> dict:
    """python, torch, transformers, numpy and marble versions (None for a package that is absent)."""
    import platform
    from importlib import metadata

    from marble import __version__

    out = {"python": platform.python_version(), "marble": __version__}
    for pkg in ("torch", "transformers", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def peak_memory_mb(device) -> float:
    """Peak memory of this run: CUDA allocator peak on a GPU, else the process's max RSS."""
    import resource

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_manifest(*, card, cache_manifest: dict | None, cache_manifest_sha256: str | None, seed: int, device: str,
                   wall_time_s: float, peak_memory_mb: float | None, encoder: dict | None = None,
                   cache_verified: bool | None = None) -> dict:
    """The run manifest; ``encoder`` (an identity dict) is used when no cache manifest names it
    (frame tasks computing features on the fly); ``cache_verified``: whether the cached files were re-hashed
    against the sha256 extraction recorded (False: ``--no-verify``; None: no cache was read)."""
    from marble import __version__

    cm = cache_manifest or {}
    return {
        "toolkit_version": __version__,
        "git_hash": git_hash(),
        "task_sha256": card.sha256 or None,
        # from each split's record in the cache (a cache of an older marble also kept a copy: split_checksums)
        "split_checksums": cm.get("split_checksums") or {s: {"items_sha256": v.get("items_sha256"),
                                                              "split_file_sha256": v.get("split_file_sha256")}
                                                          for s, v in cm.get("splits", {}).items()},
        "cache_manifest_sha256": cache_manifest_sha256,
        "cache_verified": cache_verified if cache_manifest is not None else None,
        "encoder": cm.get("encoder") or encoder or {},
        # the features' compute precision (PROTOCOL §2: fp32; bf16/fp16 autocast is a flagged deviation)
        "compute_dtype": cm.get("compute_dtype"),
        # TF32 matmuls at extraction (PROTOCOL §2: full fp32 matmuls; --tf32 is a flagged speed option)
        "tf32_matmul": bool(cm.get("tf32_matmul", False)),
        "seed": seed,
        "device": device,
        "wall_time_s": round(float(wall_time_s), 3),
        "peak_memory_mb": None if peak_memory_mb is None else round(float(peak_memory_mb), 1),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line(),
        "versions": versions(),
    }


def write_result(path: str | os.PathLike, result: dict, blobs: dict[str, bytes] | None = None) -> Path:
    """Schema-validated atomic write (``marble.results.write_result``); the sidecar ``blobs`` (artifact kind ->
    bytes, recorded in ``result['artifacts']``) are written first, so the JSON never names a missing file."""
    from marble.results import write_result as _validated
    from marble.results.artifacts import write_artifacts

    path = Path(path)
    if blobs:
        write_artifacts(path, result, blobs)
    _validated(path, result)
    return path

