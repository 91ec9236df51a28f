"""The saved sweep state holds only what a resume reads (issue 23 item 19: a 561-wide sweep wrote ~250 MB every
5 epochs): a stopped probe's last weights and Adam moments are left out, and writes wait while writing would take
more than a tenth of the pass. A resume from a compacted state equals an uninterrupted pass, bit for bit."""

from __future__ import annotations

import torch

from marble.probe.sweep import Checkpoints, Probe, TrainConfig, load_state, save_state, train_sweep

torch.set_num_threads(1)

N, S, H, C = 120, 3, 32, 3


def _data(seed, n=N):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n,), generator=g)
    X = torch.randn(n, S, H, generator=g)
    X[:, 2, :C] += 2.0 * torch.nn.functional.one_hot(y, C).float()
    return X.half(), y


def _score(yv):
    def f(outputs):
        p = torch.softmax(outputs.double(), -1)
        return p[:, torch.arange(len(yv)), yv].mean(1).numpy()
    return f


# probes that stop at different epochs: a huge LR diverges and stops first, a tiny one keeps improving
PROBES = [Probe(2, 3.0), Probe(1, 1.0), Probe(2, 1e-3), Probe(1, 1e-4)]
CFG = TrainConfig(hidden=(64,), dropout=0.1, batch_size=16, max_epochs=12, scheduler_patience=0, early_stop_patience=2)


def _run(**kw):
    (Xtr, ytr), (Xva, yva) = _data(0), _data(1, 60)
    return train_sweep(PROBES, CFG, Xtr, ytr, Xva, _score(yva), num_outputs=C, **kw)


def test_a_compacted_state_resumes_to_the_uninterrupted_result(tmp_path):
    full = _run()
    path = tmp_path / "s.pt"
    for stop in range(1, CFG.max_epochs):  # the first epoch at which some probes stopped and some did not
        _run(state_path=path, checkpoint_every=1, stop_after_epoch=stop, fingerprint="f")
        st = load_state(path)
        if 0 < sum(s is not None for s in st.stopped) < len(PROBES):
            break
        path.unlink()
    else:
        raise AssertionError("no epoch with both stopped and running probes: the test lost its purpose")
    saved = torch.load(path, weights_only=True)
    live = [i for i, s in enumerate(st.stopped) if s is None]
    assert saved["live_rows"] == live and saved["params"]["w0"].shape[0] == len(live) < len(PROBES)
    resumed = _run(state_path=path, checkpoint_every=1, fingerprint="f")
    assert resumed.history == full.history and resumed.stopped == full.stopped
    assert resumed.best_epoch == full.best_epoch
    for k in full.best_params:
        assert torch.equal(resumed.best_params[k], full.best_params[k])


def test_the_state_file_shrinks_with_the_stopped_probes(tmp_path):
    out = _run(state_path=tmp_path / "s.pt", checkpoint_every=1, stop_after_epoch=CFG.max_epochs, fingerprint="f")
    st = load_state(tmp_path / "s.pt")
    assert all(s is not None for s in st.stopped)  # every probe done: only the best checkpoints remain
    compact = (tmp_path / "s.pt").stat().st_size
    from dataclasses import asdict

    torch.save(asdict(st), tmp_path / "full.pt")  # what was written before: four copies of every probe
    assert compact < 0.3 * (tmp_path / "full.pt").stat().st_size
    for k in out.best_params:
        assert torch.equal(st.best_params[k], out.best_params[k])
        assert torch.equal(st.params[k], st.best_params[k])  # filled back from the best checkpoint


def test_writes_wait_while_writing_would_take_over_a_tenth_of_the_time(tmp_path):
    path = tmp_path / "s.pt"
    _run(state_path=path, checkpoint_every=1, stop_after_epoch=1, fingerprint="f")
    st = load_state(path)
    path.unlink()
    cp = Checkpoints(path, every=1)
    cp.spent = 1e9  # as if writing had already taken far longer than the pass
    st.epoch = 2
    cp.after_epoch(st)
    assert not path.exists()  # due, but waits
    st.stopped = ["early"] * len(st.stopped)
    cp.after_epoch(st)
    assert path.exists()  # the last epoch's state is always written
    cp2 = Checkpoints(tmp_path / "t.pt", every=3)
    st.stopped = [None] * len(st.stopped)
    for epoch, written in ((1, False), (2, False), (3, True)):
        st.epoch = epoch
        cp2.after_epoch(st)
        assert (tmp_path / "t.pt").exists() == written
    save_state(tmp_path / "u.pt", st)  # a state with every probe running is written whole
    assert "live_rows" not in torch.load(tmp_path / "u.pt", weights_only=True)
