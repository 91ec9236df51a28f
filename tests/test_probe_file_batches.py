"""Batches count files (PROTOCOL §1): a training batch holds every window of 64 files.

The reference (MARBLE v1) feeds a DataLoader over *files*; its ``train_collate_fn`` stacks the windows of
the batch's files (``torch.vstack``), each window carrying its file's label, and the loss is the mean over
those rows. ``plain_run`` below is that loop for one configuration in plain PyTorch (``nn.Linear`` MLP,
``torch.optim.Adam``, ``ReduceLROnPlateau``, hand-written early stopping); it shares with the sweep only the
documented randomness contract (``batch_order`` over files, ``dropout_mask``/``dropout_key``). Tolerances
are those of tests/test_probe_sweep.py: validation curves within 2e-5, test outputs within 1e-4.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score

from marble.probe.sweep import (
    WEIGHTED, FileBatches, Probe, TrainConfig, batch_order, dropout_key, dropout_mask, load_state, predict, train_sweep,
)

torch.set_num_threads(1)

S, H = 4, 12


def emo_like(n_files: int, seed: int, windows=6, C=2):
    """An EMO-shaped cache split: ``windows`` 5 s windows a file (an int, or one count per file), a
    file's windows contiguous, regression targets [arousal, valence] repeated on each window."""
    g = np.random.default_rng(seed)
    counts = np.full(n_files, windows) if np.isscalar(windows) else np.asarray(windows)
    y_file = g.normal(size=(n_files, C)).astype(np.float32)
    proj = np.random.default_rng(99).normal(size=(C, H))
    X, y, files = [], [], []
    for f in range(n_files):
        for _ in range(counts[f]):
            x = g.normal(size=(S, H))
            x[2] += y_file[f] @ proj
            X.append(x)
            y.append(y_file[f])
            files.append(f)
    return torch.tensor(np.array(X), dtype=torch.float16), torch.tensor(np.array(y)), np.array(files), y_file


def r2_per_file(files, y_file):
    """Validation score: window outputs averaged per file, then sklearn's mean R²."""
    inv = torch.as_tensor(files)

    def f(outputs):  # [P, W, C]
        out = []
        for o in outputs.double():
            s = torch.zeros(len(y_file), o.shape[-1], dtype=torch.float64).index_add_(0, inv, o)
            s /= torch.bincount(inv, minlength=len(y_file))[:, None]
            out.append(r2_score(y_file, s.numpy()))
        return np.array(out)
    return f


def collate(batch):
    """The reference's train collate: stack the windows of the batch's files, labels repeated per window."""
    feats, labels = zip(*batch)
    return torch.vstack(feats), torch.vstack(labels)


def plain_run(probe: Probe, cfg: TrainConfig, Xtr, ytr, ftr, Xva, score, Xte):
    """One configuration alone, batches of ``cfg.batch_size`` files through ``collate``."""
    torch.manual_seed(probe.seed)
    hid, C = cfg.hidden[0], ytr.shape[1]
    model = torch.nn.Sequential(torch.nn.Linear(H, hid), torch.nn.ReLU(), torch.nn.Linear(hid, C))
    params = list(model.parameters())
    mix = torch.nn.Parameter(torch.randn(S - 1)) if probe.layer == WEIGHTED else None
    if mix is not None:
        params.append(mix)

    def inputs(xb):
        xb = xb.float()
        return xb[:, probe.layer] if mix is None else (torch.softmax(mix, 0)[None, :, None] * xb[:, 1:]).sum(1)

    def run(X):
        with torch.no_grad():
            return model(inputs(X))

    per_file = [(Xtr[ftr == f], ytr[ftr == f]) for f in range(ftr.max() + 1)]  # the dataset: one item a file
    opt = torch.optim.Adam(params, lr=probe.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.scheduler_factor,
                                                       patience=cfg.scheduler_patience)
    best, wait, best_epoch, curve, stopped, steps, batch_rows = -math.inf, 0, 0, [], "max_epochs", 0, []
    best_state = (copy.deepcopy(model.state_dict()), None if mix is None else mix.detach().clone())
    for epoch in range(cfg.max_epochs):
        order = batch_order(probe.seed, epoch, len(per_file))
        for b, start in enumerate(range(0, len(order), cfg.batch_size)):
            xb, yb = collate([per_file[f] for f in order[start:start + cfg.batch_size]])
            batch_rows.append(len(xb))
            h = model[1](model[0](inputs(xb)))
            if cfg.dropout > 0:
                h = h * dropout_mask([dropout_key(probe, epoch, b, 0)], len(xb), hid, cfg.dropout)[0]
            loss = F.mse_loss(model[2](h), yb)  # mean over rows (and outputs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        v = float(score(run(Xva)[None])[0])
        curve.append(v)
        sched.step(v)
        if v > best:
            best, wait, best_epoch = v, 0, epoch + 1
            best_state = (copy.deepcopy(model.state_dict()), None if mix is None else mix.detach().clone())
        else:
            wait += 1
            if wait >= cfg.early_stop_patience:
                stopped = "early"
                break
    model.load_state_dict(best_state[0])
    if mix is not None:
        mix.data.copy_(best_state[1])
    return curve, best_epoch, stopped, run(Xte), steps, batch_rows


def test_file_batches_hold_every_window_of_their_files():
    counts = np.random.default_rng(0).integers(1, 9, size=150)  # MTG-like: a varying number of windows
    files = np.repeat(np.arange(150), counts)
    perm = np.random.default_rng(1).permutation(len(files))  # windows need not be contiguous in the cache
    files = files[perm]
    fb = FileBatches.build(files, len(files))
    order = batch_order(1234, 0, 150)
    rows, bounds = fb.epoch(order, 64)
    assert fb.n_files == 150 and fb.n_batches(64) == 3 == len(bounds) - 1
    assert sorted(rows.tolist()) == list(range(len(files)))  # every window once an epoch
    for b in range(3):
        chunk = order[b * 64:(b + 1) * 64]
        got = rows[bounds[b]:bounds[b + 1]]
        assert (files[got] == np.repeat(chunk, counts[chunk])).all()  # files in batch order, all their windows
        for f in chunk:
            assert (got[files[got] == f] == np.flatnonzero(files == f)).all()  # a file's windows in cache order
    with pytest.raises(ValueError, match="one file number per training window"):
        FileBatches.build(files[:-1], len(files))
    with pytest.raises(ValueError, match="every file with at least one window"):
        FileBatches.build(np.array([0, 2, 2]), 3)


@pytest.mark.parametrize("windows", ["emo", "varying"])
def test_file_batched_sweep_equals_plain_collate_loop(windows, tmp_path):
    n_train = 150  # -> ceil(150 / 64) = 3 optimiser steps an epoch, not ceil(900 / 64) = 15
    w = 6 if windows == "emo" else np.random.default_rng(5).integers(1, 9, size=n_train)
    Xtr, ytr, ftr, _ = emo_like(n_train, 0, w)
    Xva, _, fva, yva_file = emo_like(40, 1)
    Xte, *_ = emo_like(30, 2)
    score = r2_per_file(fva, yva_file)
    cfg = TrainConfig(hidden=(32,), dropout=0.2, batch_size=64, max_epochs=9, scheduler_patience=1,
                      early_stop_patience=3, loss="mse")
    probes = [Probe(0, 5e-4), Probe(2, 1e-2), Probe(3, 5e-2), Probe(WEIGHTED, 1e-2), Probe(2, 5e-3, seed=7),
              Probe(WEIGHTED, 1e-3, seed=7)]
    path = tmp_path / "state.pt"
    out = train_sweep(probes, cfg, Xtr, ytr, Xva, score, num_outputs=2, files=ftr, state_path=path)
    steps = load_state(path).steps
    test_out = predict(out.heads, out.best_params, Xte)
    reasons = set()
    for i, p in enumerate(probes):
        curve, best_epoch, stopped, ref_test, ref_steps, batch_rows = plain_run(p, cfg, Xtr, ytr, ftr, Xva, score, Xte)
        assert ref_steps == len(curve) * math.ceil(n_train / 64) == steps[i], p
        assert len(batch_rows) == ref_steps and sum(batch_rows[:3]) == len(Xtr)
        assert len(out.history[i]) == len(curve), p
        np.testing.assert_allclose(out.history[i], curve, atol=2e-5, rtol=0, err_msg=str(p))
        assert out.best_epoch[i] == best_epoch and out.stopped[i] == stopped, p
        np.testing.assert_allclose(test_out[i].numpy(), ref_test.numpy(), atol=1e-4, rtol=0, err_msg=str(p))
        reasons.add(stopped)
    if windows == "emo":
        assert batch_rows[:3] == [384, 384, 22 * 6]  # 64 files x 6 windows a batch
    assert reasons == {"early", "max_epochs"}  # both stopping paths were exercised
