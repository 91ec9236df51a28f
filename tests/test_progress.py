"""Progress: a sweep's ETA from the measured time per probe-epoch; on a non-terminal, one line when a stage
starts and one when it ends, never carriage returns (extract, probe, the demo's sweep)."""

from __future__ import annotations

import io

import pytest
from typer.testing import CliRunner

from marble import progress
from marble.cli import app
from marble.testing.fixtures import write_gtzan


def test_sweep_eta_from_measured_epochs(monkeypatch):
    """An epoch costs a fixed part (a frame sweep's crops) plus a part per active probe: fitted to the epochs
    measured, the ETA is the epochs left at the current number of probes; while that number has not changed, the
    whole epoch time counts (an upper bound)."""
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    out = io.StringIO()
    with progress.SweepProgress("gtzan-beat sweep", max_epochs=20, n_probes=10, stream=out, live=False) as sp:
        for epoch, seconds, active in ((1, 3.0, 10), (2, 3.0, 10), (3, 3.0, 4)):  # 10 probes trained each
            now[0] += seconds
            sp(epoch, active, 0.5)
        assert sp.eta_s == pytest.approx(3.0 * 17)  # 4 probes left, but no epoch told fixed from per-probe cost yet
        now[0] += 1.8  # epoch 4 trained 4 probes in 1.8 s: 1 s fixed + 0.2 s per probe
        sp(4, 4, 0.6)
        assert progress.epoch_model(sp.samples) == pytest.approx((1.0, 0.2))
        assert sp.eta_s == pytest.approx((1.0 + 0.2 * 4) * 16)
        now[0] += 3.6  # 1.8 s each, 4 probes trained
        sp(6, 2, 0.7)  # two epochs reported at once (a resumed sweep's first report, or a checkpoint interval)
        assert sp.eta_s == pytest.approx((1.0 + 0.2 * 2) * 14)
        with sp.stage("gtzan-beat: every probe's best checkpoint on valid and test", 2, "split") as st:
            st.update(2)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 4
    assert lines[0] == f"gtzan-beat sweep: 20 epochs ({progress.EARLY_STOP_NOTE}) ..."
    assert lines[1].startswith("gtzan-beat sweep: 6/6 epochs in ") and "active probes 2/10, best valid 0.7000" in lines[1]
    assert lines[2] == "gtzan-beat: every probe's best checkpoint on valid and test: 2 splits ..."
    assert lines[3].startswith("gtzan-beat: every probe's best checkpoint on valid and test: 2/2 splits in ")


def test_a_sweep_that_stops_early_says_so():
    """Issue 23 item 12: "100 epochs ..." then "57/57" read as lost epochs; the start line says the count is a cap
    and the end line that every probe stopped improving (early stopping)."""
    out = io.StringIO()
    with progress.SweepProgress("gtzan sweep", max_epochs=100, n_probes=30, stream=out, live=False) as sp:
        for epoch in range(1, 58):
            sp(epoch, 30 if epoch < 57 else 0, 0.81)
    start, end = out.getvalue().splitlines()
    assert start == "gtzan sweep: 100 epochs (at most; each probe stops early once its validation score stops improving) ..."
    assert end.startswith("gtzan sweep: 57/57 epochs in ")
    assert end.endswith("early stopping: every probe stopped improving after 57 of at most 100 epochs, best valid 0.8100")


def test_epoch_model_never_negative():
    assert progress.epoch_model([(10, 1.0), (5, 1.2)]) == (1.1, 0.0)  # slower with fewer probes: load, all fixed
    assert progress.epoch_model([(10, 1.0), (5, 0.4)]) == pytest.approx((0.0, 1.4 / 15))  # negative fixed part


def test_stage_lines_when_not_a_terminal():
    out = io.StringIO()
    with progress.Stage("gtzan/train", 3, "file", stream=out, live=False) as st:
        for _ in range(3):
            st.update(1)
    assert out.getvalue().splitlines()[0] == "gtzan/train: 3 files ..."
    assert out.getvalue().splitlines()[1].startswith("gtzan/train: 3/3 files in ")
    out = io.StringIO()
    with progress.Stage("teacher features", 2, "batch", stream=out, live=False) as st:
        st.update(2)
    assert out.getvalue().splitlines()[0] == "teacher features: 2 batches ..."


def test_cli_output_to_a_pipe_has_no_carriage_returns(tmp_path):
    write_gtzan(tmp_path / "d", per_split=2, seconds=1.5)
    common = ["--model", "handcrafted", "--task", "gtzan", "--cache-dir", str(tmp_path / "c")]
    res = CliRunner().invoke(app, ["extract", *common, "--data-dir", str(tmp_path / "d"), "--allow-partial",
                                   "--num-workers", "0"])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.output and "gtzan/train: 2 files ..." in res.output
    assert "gtzan/train: 2/2 files in " in res.output
    res = CliRunner().invoke(app, ["probe", *common, "--results-dir", str(tmp_path / "r"), "--max-epochs", "3",
                                   "--lrs", "1e-3"])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.output
    assert f"gtzan constrained sweep: 3 epochs ({progress.EARLY_STOP_NOTE}) ..." in res.output
    assert "active probes" in res.output and "ETA <=" in res.output
