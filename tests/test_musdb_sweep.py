"""MUSDB18 is a first-class frame task (issue 19): a SIGKILLed sweep resumes to the bytes of an uninterrupted one,
``--seeds N`` [``--seeds-sweep``] and ``--track semi-constrained --config`` work through the CLI, and a model of a
sweep trains exactly as it would alone. Tiny: a 16-unit LSTM head, 1 s chunks, 2 s tracks, museval off where the CLI
is not the point (museval is slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from marble.cli import app
from marble.results import read_result
from marble.testing.fixtures import write_musdb
from tests.test_pipeline import _ok
from probe_helpers import sigkill_once_saved
from tests.test_probe_run import _strip_timing

# a sweep through marble.probe.sequence.run in its own process (so it can be SIGKILLed): tiny head, museval off
SWEEP = """
import sys
from musdb_fixtures import tiny_card
from marble.probe.sequence import run
run(tiny_card(), "handcrafted", data_dir=sys.argv[1], results_dir=sys.argv[2], layers=[0, 3], lrs=[1e-3],
    max_epochs=int(sys.argv[3]), checkpoint_every=1, chunks_per_epoch=8, batch_size=1, museval=False,
    on_epoch=lambda epoch, active, best: print("epoch", epoch, flush=True))
"""


def test_sigkilled_musdb_sweep_resumes_to_the_same_result(tmp_path):
    """A MUSDB sweep SIGKILLed after a saved epoch restarts from its state (every model's weights, optimiser,
    scheduler, best checkpoint, counters) and writes the result of an uninterrupted run (all but the wall-time
    fields); the state is removed once the result is written."""
    write_musdb(tmp_path / "data", per_split=1, seconds=2.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__),
                                                                                  os.environ.get("PYTHONPATH", "")])}

    def cmd(results, epochs=4):
        return [sys.executable, "-c", SWEEP, str(tmp_path / "data"), str(results), str(epochs)]

    subprocess.run(cmd(tmp_path / "full"), check=True, capture_output=True, env=env, timeout=900)
    out = tmp_path / "res" / "handcrafted" / "musdb"
    state = out / "constrained.state.pt"
    sigkill_once_saved(cmd(tmp_path / "res"), state, env, settle=0.3)  # somewhere inside a later epoch
    rerun = subprocess.run(cmd(tmp_path / "res"), check=True, capture_output=True, text=True, env=env, timeout=900)
    ran = [int(line.split()[1]) for line in rerun.stdout.splitlines() if line.startswith("epoch ")]
    assert ran and ran[0] > 1, rerun.stdout  # resumed after the saved epochs, not started again
    full = json.loads((tmp_path / "full" / "handcrafted" / "musdb" / "constrained.json").read_text())
    resumed = json.loads((out / "constrained.json").read_text())
    assert _strip_timing(resumed) == _strip_timing(full)
    assert not state.exists()
    assert full["training"]["per_source_epochs"]["0|0.001"]["vocals"][1] >= 3  # the kill came before the end


def test_musdb_semi_constrained_seeds_through_the_cli(tmp_path):
    """`marble probe --task musdb --track semi-constrained --config head.toml --seeds 2`: the config's LSTM (size,
    layers, dropout), LR grid, schedule and layers are trained and declared; the selected (layer, LR) of each
    source is trained again with seed 1235, exactly what a run with that --seed computes alone; `--seeds-sweep`
    gives every seed its own sweep and per-source selection."""
    from marble.probe.report import seed_summary
    from marble.probe.sequence import run
    from marble.registry import get_card

    write_musdb(tmp_path / "data", per_split=1, seconds=2.0)
    cfg = tmp_path / "head.toml"
    cfg.write_text("[head]\nhidden = [16, 16]\ndropout = 0.1\n\n[training]\nlearning_rates = [2e-3]\nmax_epochs = 2\n"
                   "early_stop_patience = 1\nlayers = [0]\n")
    base = ["probe", "--model", "handcrafted", "--task", "musdb", "--data-dir", str(tmp_path / "data"),
            "--track", "semi-constrained", "--config", str(cfg), "--chunks-per-epoch", "4"]
    _ok(CliRunner().invoke(app, [*base, "--results-dir", str(tmp_path / "res"), "--seeds", "2"]))
    r = read_result(tmp_path / "res" / "handcrafted" / "musdb" / "semi-constrained.json")
    assert (r["head"]["kind"], r["head"]["hidden"], r["head"]["layers"], r["head"]["dropout"]) == ("openunmix", 16, 2, 0.1)
    assert r["head"]["config"] == str(cfg)
    assert r["training"]["learning_rates"] == [2e-3] and r["training"]["early_stop_patience"] == 1
    assert [(row["layer"], row["lr"]) for row in r["sweep"]] == [(0, 2e-3)]
    main, s = r["main_metric"], r["seeds"]
    assert s["n"] == 2 and s["seeds"] == [1234, 1235] and r["training"]["seed_repeat"] == "selected"
    assert s["values"][0] == r["test"][main]
    want = seed_summary([1234, 1235], s["values"], main)
    assert s["mean"] == pytest.approx(want["mean"]) and s["ci95"] == pytest.approx(want["ci95"])
    opts = dict(data_dir=tmp_path / "data", results_dir=None, track="semi-constrained", config=cfg, chunks_per_epoch=4,
                museval=False)
    alone = run(get_card("musdb"), "handcrafted", seed=1235, **opts)
    assert alone["test"][main] == s["values"][1]
    sw = run(get_card("musdb"), "handcrafted", seeds=2, seeds_sweep=True, **opts)
    assert sw["seeds"]["seeds"] == [1234, 1235] and sw["training"]["seed_repeat"] == "sweep"
    assert sw["seeds"]["values"] == [r["test"][main], alone["test"][main]]
    assert not list(tmp_path.rglob("*.state.pt"))
