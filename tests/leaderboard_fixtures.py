"""A leaderboard repository with a bare upstream, and complete constrained results for any card.

Results are written through ``marble.results.write_result`` exactly as ``marble probe`` writes them
(sealed), with the card's full sweep (states 0..3 + weighted sum x the card's LR grid), so they pass
``marble leaderboard check --submission``. Test scores are the published MERT-v1-95M numbers where a
reference column exists, so the computed MARBLE score has an independent value (63.3).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
from pathlib import Path

from marble.leaderboard.repo import init_repo
from marble.metrics import SCALE
from marble.registry import all_cards
from marble.results import result_path, write_result
from marble.results.schema import REFERENCE_CSV, data_dir, result_schema

GIT_ENV = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "Test",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_NOSYSTEM": "1"}
BASE = "MERT-v1-95M"


def git(repo, *args) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(Path(repo).parent)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def published(model: str = BASE) -> dict[str, str]:
    with (data_dir() / REFERENCE_CSV).open(newline="") as f:
        return next(r for r in csv.DictReader(f) if r["model"] == model)


def complete_result(task: str, model: str, *, offset: float = 0.0, num_states: int = 4, seeds: bool = False,
                    weights_sha256: str = "ab" * 32) -> dict:
    """A full constrained-protocol result of ``task``: the best valid row is (2, 1e-3); its test metrics
    are the published MERT-v1-95M numbers (+ ``offset`` on the x100 / dB scale)."""
    card = all_cards()[task]
    pub = published()
    m = card.metrics

    def test_value(name: str) -> float:
        col = m.reference_columns.get(name)
        if col and pub.get(col):
            return float(pub[col]) / SCALE[name] + offset / SCALE[name]
        return 0.5 if SCALE[name] > 1 else 4.0

    best_test = {n: round(test_value(n), 6) for n in m.names}
    if m.main not in m.reference_columns:  # e.g. r2_mean, sdr_mean: the mean of the aggregated metrics
        parts = [best_test[a] for a in m.aggregate if a in best_test]
        if parts:
            best_test[m.main] = round(sum(parts) / len(parts), 6)
    sign = 1 if m.direction == "max" else -1
    per_source = getattr(m, "per_source", None) or {}  # musdb: each source selected on its own first metric
    firsts = {names[0] for names in per_source.values()}
    sweep = []
    layers = list(range(num_states)) + ["weighted"]
    for i, layer in enumerate(layers):
        for j, lr in enumerate(card.training.learning_rates):
            best = (layer, lr) == (2, 1e-3)
            v = 0.9 if best else round(0.5 + 0.01 * i + 0.001 * j, 4)
            valid = {n: (v if n == m.main or (best and n in firsts) else 0.5) * (1 if sign > 0 or n != m.main else -1)
                     for n in m.names}
            test = dict(best_test) if best else {n: round(best_test[n] * 0.9, 6) for n in m.names}
            sweep.append({"layer": layer, "lr": lr, "valid": valid, "test": test, "best_epoch": 4, "epochs": 14,
                          "stopped": "early"})
    row = next(r for r in sweep if (r["layer"], r["lr"]) == (2, 1e-3))
    extra = {}
    if "data" in result_schema()["properties"]:  # per-split file accounting: every listed file scored
        extra["data"] = {"splits": {s: {"listed": 10, "cached": 10, "skipped": [], "scored": 10}
                                    for s in ("train", "valid", "test")},
                         "excluded": dict(getattr(card.splits, "excluded", {}) or {})}
    values = [best_test[m.main] - 0.01, best_test[m.main], best_test[m.main] + 0.01]
    return {
        "schema_version": 1, "source": "ours", "model": model, "task": task, "task_version": card.version,
        "protocol": card.protocol, "track": "constrained", "main_metric": m.main, "direction": m.direction,
        "selected": ({"per_source": {s: {"layer": 2, "lr": 1e-3, "valid_score": row["valid"][names[0]], "best_epoch": 4,
                                         "epochs": 14, "metrics": list(names)} for s, names in per_source.items()},
                      "valid_score": row["valid"][m.main], "group_rule": None} if per_source else
                     {"layer": 2, "lr": 1e-3, "valid_score": row["valid"][m.main], "best_epoch": 4, "epochs": 14,
                      "group_rule": None}),
        "valid": dict(row["valid"]), "test": dict(row["test"]), "sweep": sweep,
        "weighted_sum": {"lr": 1e-3, "weights": [1 / (num_states - 1)] * (num_states - 1)},
        "seeds": ({"n": 3, "seeds": [1234, 1, 2], "metric": m.main, "values": values, "mean": sum(values) / 3,
                   "std": 0.01, "ci95": [values[0] - 0.015, values[2] + 0.015]} if seeds else None),
        "head": dataclasses.asdict(card.head),
        "training": {"batch_size": card.training.batch_size, "accumulate": card.training.accumulate,
                     "learning_rates": list(card.training.learning_rates),
                     "max_epochs": card.training.max_epochs},
        "manifest": {"toolkit_version": "0.1.0", "git_hash": None, "task_sha256": card.sha256,
                     "split_checksums": {"train": "ab", "valid": "cd", "test": "ef"}, "cache_manifest_sha256": None,
                     "encoder": {"name": model, "num_states": num_states, "dim": 8, "weights_sha256": weights_sha256},
                     "seed": 1234, "device": "cpu", "wall_time_s": 1.5, "peak_memory_mb": 100.0,
                     "created": "2026-11-23T12:00:00Z"},
        **extra,
    }


def model_info(model: str, revision: str = "v1", **changes) -> dict:
    info = {"name": model, "revision": revision, "display_name": model.split("/")[-1], "parameters": 94_000_000,
            "sample_rate": 24000, "link": "https://example.org/model", "license": "CC-BY-4.0",
            "weights_public": True, "track": "constrained", "source": "ours"}
    info.update(changes)
    return info


def write_model(results_dir, model: str, tasks, *, info: dict | None = None, outputs: dict | None = None,
                **kw) -> dict[str, Path]:
    """Results of ``model`` for ``tasks`` plus its model.json under ``results_dir``; returns task -> file.
    ``outputs``: task -> test outputs those results carry (:func:`write_with_outputs`)."""
    out = {}
    for t in tasks:
        if outputs and t in outputs:
            out[t] = write_with_outputs(results_dir, model, t, outputs[t], **kw)
            continue
        p = result_path(results_dir, model, t, "constrained")
        write_result(p, complete_result(t, model, **kw))
        out[t] = p
    mj = result_path(results_dir, model, "x", "constrained").parent.parent / "model.json"
    mj.write_text(json.dumps(info or model_info(model), indent=2))
    return out


_TEMPLATE: dict[str, Path] = {}


def make_leaderboard(tmp_path) -> tuple[Path, Path]:
    """``(clone, upstream)``: a bare upstream holding a fresh leaderboard (published rows), and a clone.
    Made once per test session, then copied (the clone's origin re-pointed at its own upstream copy)."""
    import shutil
    import tempfile

    if "dir" not in _TEMPLATE:
        import atexit

        _TEMPLATE["dir"] = Path(tempfile.mkdtemp(prefix="marble-lb-template-"))
        atexit.register(shutil.rmtree, _TEMPLATE["dir"], True)
        _make_leaderboard(_TEMPLATE["dir"])
    upstream, clone = tmp_path / "upstream.git", tmp_path / "clone"
    shutil.copytree(_TEMPLATE["dir"] / "upstream.git", upstream, symlinks=True)
    shutil.copytree(_TEMPLATE["dir"] / "clone", clone, symlinks=True)
    git(clone, "remote", "set-url", "origin", str(upstream))
    return clone, upstream


def _make_leaderboard(tmp_path) -> tuple[Path, Path]:
    upstream, seed, clone = tmp_path / "upstream.git", tmp_path / "seed", tmp_path / "clone"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(upstream)], check=True)
    init_repo(seed)
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "leaderboard with the published rows")
    git(seed, "push", "-q", str(upstream), "main")
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    return clone, upstream


def snapshot(repo) -> tuple:
    """Everything a refused submission must leave as it was: refs, HEAD, index/worktree status, objects."""
    return (git(repo, "for-each-ref"), git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain", "--ignored"),
            git(repo, "count-objects", "-v"), sorted(str(p) for p in Path(repo).rglob("*") if ".git" not in p.parts))


# ---------------------------------------------------------------- per-item test outputs (opt-in)

def multiclass_outputs(task: str, correct, *, seed: int = 0):
    """Test outputs of a multiclass task: item ``i`` is predicted right where ``correct[i]`` (else the next
    class). The references depend only on ``seed`` and the length, so models built this way are paired."""
    import numpy as np

    from marble.results.artifacts import TestOutputs

    card = all_cards()[task]
    C, n = card.num_outputs, len(correct)
    ref = np.random.default_rng(seed).integers(0, C, n)
    est = np.full((n, C), 0.5 / (C - 1), np.float32)
    est[np.arange(n), np.where(np.asarray(correct, bool), ref, (ref + 1) % C)] = 0.5
    return TestOutputs([f"{task}/item{i:04d}" for i in range(n)], ref, est, "file", tuple(card.vocabulary()))


def regression_outputs(task: str, noise, *, seed: int = 0):
    """Test outputs of a regression task: references from ``seed``, estimates = reference + ``noise`` [n, D]."""
    import numpy as np

    from marble.results.artifacts import TestOutputs

    card = all_cards()[task]
    noise = np.asarray(noise, np.float64)
    ref = np.random.default_rng(seed).normal(size=noise.shape)
    return TestOutputs([f"{task}/item{i:04d}" for i in range(len(ref))], ref.astype(np.float32),
                       (ref + noise).astype(np.float32), "file", tuple(card.vocabulary()))


def beat_outputs(n: int = 6, *, seed: int = 0):
    """Test outputs of gtzan-beat: per track, reference beats 0.5 s apart and estimates within 30 ms of most of
    them (one in five dropped), float64 seconds at 75 frames/s."""
    import numpy as np

    from marble.results.artifacts import TestOutputs

    rng = np.random.default_rng(seed)
    refs = [np.arange(rng.uniform(0.1, 0.5), 29.5, 0.5) for _ in range(n)]
    ests = [(r + rng.uniform(-0.03, 0.03, len(r)))[rng.random(len(r)) > 0.2] for r in refs]
    return TestOutputs([f"gtzan-beat/track{i:03d}.wav" for i in range(n)], refs, ests, "track", (), None, 75.0)


def musdb_outputs(sdr):
    """MUSDB test outputs: per-track global SDR [tracks, sources] (no reference: per-item scores)."""
    import numpy as np

    from marble.results.artifacts import TestOutputs

    return TestOutputs([f"Fixture - Track {i:02d}" for i in range(len(sdr))], None, np.asarray(sdr, np.float64),
                       "track", tuple(all_cards()["musdb"].vocabulary()))


def _tiny_probe(card, result: dict, n: int):
    """A small shipped probe of ``card``'s kind (the bytes only travel; nothing applies it): a two-layer head, or for
    MUSDB one tiny module per source."""
    import torch

    from marble.probe.shipped import FORMAT, ShippedProbe

    g = torch.Generator().manual_seed(n)
    meta = {"format": FORMAT, "task": card.id, "task_version": card.version, "model": result["model"],
            "prediction": card.prediction, "vocabulary": list(card.vocabulary()), "group_rule": None}
    if card.prediction == "separation":
        tensors = {f"{s}.fc1.weight": torch.randn(4, 8, generator=g) for s in card.vocabulary()}
        meta.update(modules={s: {"layer": 2, "lr": 1e-3, "seed": 1234, "weights": None} for s in card.vocabulary()},
                    head={"kind": "openunmix", "in_dim": 8, "num_bins": 1025, "hidden": 4, "layers": 1,
                          "dropout": 0.0, "bidirectional": False})
        return ShippedProbe(tensors, meta)
    tensors = {"w0": torch.randn(8, 16, generator=g), "b0": torch.zeros(16),
               "w1": torch.randn(16, card.num_outputs, generator=g), "b1": torch.zeros(card.num_outputs)}
    meta["layer"] = 2
    if card.prediction == "frame-binary":  # a beat probe says how its activations become beat times
        from marble.beat import DBNBeatTracker

        meta.update(frame_rate=75.0, decoder={"kind": "dbn", **DBNBeatTracker(fps=75.0).config()})
    return ShippedProbe(tensors, meta)


def attach_outputs(result: dict, outputs, *, probe: bool = True) -> dict[str, bytes]:
    """Make ``result`` (a :func:`complete_result`) carry ``outputs``: its test metrics (and its selected sweep row's)
    become the outputs' metrics, the test split's scored count their length, and ``artifacts`` records the
    sidecars (a small shipped probe too). Returns the sidecar bytes to write beside the result."""
    from marble.results.artifacts import sidecars

    card = all_cards()[result["task"]]
    test = outputs.metrics(card.metrics.names)
    result["test"] = dict(test)
    sel = result["selected"]
    chosen = {(v["layer"], v["lr"]) for v in sel["per_source"].values()} if "per_source" in sel else \
        {(sel["layer"], sel["lr"])}  # musdb: every source selects (2, 1e-3) in complete_result
    for row in result["sweep"]:
        if (row["layer"], row["lr"]) in chosen:
            row["test"] = dict(test)
    split = result["data"]["splits"]["test"]
    split.update(listed=len(outputs), cached=len(outputs), scored=len(outputs))
    blobs, result["artifacts"] = sidecars("constrained", outputs,
                                          _tiny_probe(card, result, len(outputs)) if probe else None)
    return blobs


def write_with_outputs(results_dir, model: str, task: str, outputs, **kw) -> Path:
    """A complete result of ``task`` carrying ``outputs`` (and a probe), written as `marble probe` writes one."""
    from marble.results.artifacts import write_artifacts

    r = complete_result(task, model, **kw)
    blobs = attach_outputs(r, outputs)
    p = result_path(results_dir, model, task, "constrained")
    write_artifacts(p, r, blobs)
    write_result(p, r)
    return p
