"""Progress: a sweep's ETA from the measured time per probe-epoch; on a non-terminal, one line when a stage
starts and one when it ends, never carriage returns (extract, probe, the demo's sweep)."""

from __future__ import annotations

import io

import pytest
from typer.testing import CliRunner

from marble import progress
from marble.cli import app
from marble.testing.fixtures import write_gtzan


def test_sweep_eta_from_probe_epochs(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 3.0, 4.0, 4.5, 99.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    with progress.SweepProgress("gtzan sweep", max_epochs=20, n_probes=10, stream=out, live=False) as sp:
        # 1 s per epoch with 10 active probes: 0.1 s per probe-epoch
        sp(1, 10, 0.5)
        sp(2, 10, 0.6)
        assert sp.eta_s == pytest.approx(0.1 * 10 * 18)
        sp(3, 5, 0.7)  # 3 s for 30 probe-epochs; 5 probes left for 17 epochs
        assert sp.eta_s == pytest.approx(0.1 * 5 * 17)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 2
    assert lines[0] == "gtzan sweep: 20 epochs ..."
    assert lines[1].startswith("gtzan sweep: 3/3 epochs in ") and "active probes 5/10, best valid 0.7000" in lines[1]


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
    assert "gtzan constrained sweep: 3 epochs ..." in res.output
    assert "active probes" in res.output and "ETA <=" in res.output
