"""Shared fixtures for the probe tests: task cards built in code, synthetic caches in the real
on-disk format (``write_clip_split``), and metric functions."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

from marble.cache.store import ClipSplit, cache_dir, write_clip_split
from marble.io import write_json
from marble.registry import Labels, Metrics, Source, Splits, TaskCard, Training


def sk_accuracy(reference, estimate, labels=None):
    return accuracy_score(reference, np.asarray(estimate).argmax(-1))


def sk_roc_auc_macro(reference, estimate, labels=None):
    return roc_auc_score(reference, estimate, average="macro")


def sk_r2_mean(reference, estimate, labels=None):
    return r2_score(reference, estimate, multioutput="uniform_average")


FALLBACK = {"accuracy": sk_accuracy, "roc_auc_macro": sk_roc_auc_macro, "r2_mean": sk_r2_mean}


def metrics_for(names):
    """marble.metrics when it is importable (branch `metrics` merged), else sklearn equivalents."""
    try:
        from marble.metrics import METRICS

        return {n: METRICS[n] for n in names}
    except ImportError:
        return {n: FALLBACK[n] for n in names}


def make_card(prediction="multiclass", n_out=4, main="accuracy", *, group_rules=(), loss=None, lrs=(1e-3, 1e-2),
              sched=2, es=4, max_epochs=6, direction="max", dropout=0.2, hidden=512) -> TaskCard:
    from marble.registry import Head

    loss = loss or {"multiclass": "cross-entropy", "multilabel": "bce", "regression": "mse"}[prediction]
    return TaskCard(
        id="synth", version=1, protocol="marble-v1", name="synthetic", dataset="synth", prediction=prediction,
        source=Source(subdir="synth"), labels=Labels(values=[f"c{i}" for i in range(n_out)]), splits=Splits("x.tsv"),
        metrics=Metrics(main=main, names=[main], direction=direction, group_rules=list(group_rules)),
        head=Head(hidden=hidden, dropout=dropout),
        training=Training(learning_rates=list(lrs), scheduler_patience=sched, early_stop_patience=es,
                          max_epochs=max_epochs, loss=loss))


def synth_split(n_files, n_classes, S, H, rng, *, windows=1, signal_state=3, strength=2.0, prediction="multiclass",
                prefix="f", groups_of=1):
    """Features where state ``signal_state`` carries a class direction; other states are noise."""
    dirs = np.random.default_rng(7).normal(size=(n_classes, H))
    y = rng.integers(0, n_classes, size=n_files)
    feats, uids, wins, groups, labels = [], [], [], [], []
    for f in range(n_files):
        for w in range(windows):
            x = rng.normal(size=(S, H))
            x[signal_state] += strength * dirs[y[f]]
            feats.append(x)
            uids.append(f"{prefix}{f}")
            wins.append(w)
            groups.append(f"{prefix}song{f // groups_of}")
            if prediction == "multiclass":
                labels.append(y[f])
            elif prediction == "multilabel":
                labels.append(np.eye(n_classes, dtype=np.uint8)[y[f]])
            else:
                labels.append(np.eye(n_classes, dtype=np.float32)[y[f]] * 2 - 1)
    return ClipSplit(np.asarray(feats, dtype=np.float16), np.asarray(uids), np.asarray(wins), np.asarray(groups),
                     np.asarray(labels))


def write_cache(root: Path, model: str, card: TaskCard, splits: dict) -> Path:
    d = cache_dir(root, model, card.id)
    content = {name: write_clip_split(d / name, sp) for name, sp in splits.items()}  # sha256 of each file
    n_files = {name: len(set(sp.uids)) for name, sp in splits.items()}
    write_json(d / "manifest.json", {
        "encoder": {"name": model}, "split_checksums": {"train": "x"},
        "task": {"id": card.id, "version": card.version, "sha256": card.sha256},
        "splits": {name: {"status": "complete", "n_items": n, "n_ok": n, "errors": [], "content_sha256": content[name]}
                   for name, n in n_files.items()}})
    return d


def sigkill_once_saved(cmd, state: Path, env: dict, settle: float, wait: float = 600) -> None:
    """Start ``cmd``, wait until it has saved its sweep ``state``, let it run ``settle`` s into a later epoch, then
    SIGKILL it; asserts it died by the signal (not finished) and left its state and no result beside it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + wait
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(settle)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the sweep finished before it could be killed: make it longer"
    assert state.exists() and not (state.parent / "constrained.json").exists()


def shipped_probe_of(result_path: Path):
    """``(result, ShippedProbe)`` of a written result whose probe file is recorded under its sealed artifacts with
    the expected name and the file's own sha256 (asserted)."""
    import hashlib

    from marble.probe.shipped import ShippedProbe
    from marble.results import read_result

    r = read_result(result_path)
    rec = r["artifacts"]["probe"]
    data = (Path(result_path).parent / rec["file"]).read_bytes()
    assert rec["file"] == f"{r['track']}.probe.safetensors" and hashlib.sha256(data).hexdigest() == rec["sha256"]
    return r, ShippedProbe.from_bytes(data)

