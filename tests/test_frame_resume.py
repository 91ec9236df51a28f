"""Frame tasks are first-class (issue 19): a SIGKILLed gtzan-beat sweep resumes to the bytes of an uninterrupted one,
``--seeds N`` [``--seeds-sweep``] and ``--track semi-constrained --config`` work through the CLI, and a probe of a
frame sweep trains exactly as it would alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from beat_fixtures import write_metronome_gtzan
from marble.cli import app
from marble.results import read_result
from tests.test_pipeline import _ok
from probe_helpers import sigkill_once_saved
from tests.test_probe_run import _strip_timing

BEAT = ["--model", "handcrafted", "--task", "gtzan-beat", "--lrs", "1e-3,5e-3"]


def _probe(tmp_path, results, *extra):
    return ["probe", *BEAT, "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--results-dir",
            str(results), *extra]


def test_sigkilled_beat_sweep_resumes_to_the_same_result(tmp_path):
    """`marble probe --task gtzan-beat` SIGKILLed after a saved epoch restarts from its state and writes the result
    of an uninterrupted run (all but the wall-time fields); the state is removed once the result is written."""
    write_metronome_gtzan(tmp_path, seconds=8.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(results):
        return [sys.executable, "-m", "marble", *_probe(tmp_path, results, "--layers", "0,weighted", "--max-epochs", "4",
                                                         "--checkpoint-every", "1")]

    subprocess.run(cmd(tmp_path / "full"), check=True, capture_output=True, env=env, timeout=900)
    out = tmp_path / "res" / "handcrafted" / "gtzan-beat"
    state = out / "constrained.state.pt"
    sigkill_once_saved(cmd(tmp_path / "res"), state, env, settle=0.2)  # somewhere inside a later epoch
    subprocess.run(cmd(tmp_path / "res"), check=True, capture_output=True, env=env, timeout=900)
    full = json.loads((tmp_path / "full" / "handcrafted" / "gtzan-beat" / "constrained.json").read_text())
    resumed = json.loads((out / "constrained.json").read_text())
    assert _strip_timing(resumed) == _strip_timing(full)
    assert not state.exists()
    assert full["sweep"][0]["epochs"] >= 3  # the kill came before the end of the sweep


def test_beat_seeds_repeat_the_selected_configuration(tmp_path):
    """`--seeds 3`: the selected (layer, LR) trained again with seeds 1235 and 1236, each exactly what a run with
    that --seed computes alone; mean, std and the 95 % CI of the three test scores. `--seeds-sweep`: every seed's
    own sweep and selection."""
    from marble.probe.report import seed_summary

    write_metronome_gtzan(tmp_path, seconds=6.0)
    runner = CliRunner()
    _ok(runner.invoke(app, _probe(tmp_path, tmp_path / "r3", "--layers", "0,2", "--max-epochs", "2", "--seeds", "3")))
    r = read_result(tmp_path / "r3" / "handcrafted" / "gtzan-beat" / "constrained.json")
    main = r["main_metric"]
    s = r["seeds"]
    assert s["n"] == 3 and s["seeds"] == [1234, 1235, 1236] and s["metric"] == main
    assert s["values"][0] == r["test"][main] and r["training"]["seed_repeat"] == "selected"
    want = seed_summary([1234, 1235, 1236], s["values"], main)
    assert s["mean"] == pytest.approx(want["mean"]) and s["ci95"] == pytest.approx(want["ci95"])
    sel = r["selected"]
    _ok(runner.invoke(app, _probe(tmp_path, tmp_path / "alone", "--layers", str(sel["layer"]), "--lrs", str(sel["lr"]),
                                  "--max-epochs", "2", "--seed", "1235")))
    alone = read_result(tmp_path / "alone" / "handcrafted" / "gtzan-beat" / "constrained.json")
    assert alone["test"][main] == s["values"][1]

    _ok(runner.invoke(app, _probe(tmp_path, tmp_path / "sw", "--layers", "0,2", "--max-epochs", "2", "--seeds", "2",
                                  "--seeds-sweep")))
    sw = read_result(tmp_path / "sw" / "handcrafted" / "gtzan-beat" / "constrained.json")
    assert sw["seeds"]["seeds"] == [1234, 1235] and sw["training"]["seed_repeat"] == "sweep"
    assert sw["seeds"]["values"][0] == sw["test"][main] and len(sw["sweep"]) == 4  # the table: the first seed's grid
    assert not list((tmp_path / "sw").rglob("*.state.pt")) and not list((tmp_path / "r3").rglob("*.state.pt"))


def test_beat_semi_constrained_config_is_trained_and_declared(tmp_path):
    """`--track semi-constrained --config head.toml` on gtzan-beat: the config's head (hidden sizes, dropout), LR grid,
    schedule and layers are what is trained, and the result declares them."""
    write_metronome_gtzan(tmp_path, seconds=6.0)
    cfg = tmp_path / "head.toml"
    cfg.write_text("[head]\nhidden = [32]\ndropout = 0.1\n\n[training]\nlearning_rates = [2e-3]\nmax_epochs = 2\n"
                   "early_stop_patience = 1\nlayers = [1, \"weighted\"]\n")
    runner = CliRunner()
    _ok(runner.invoke(app, ["probe", "--model", "handcrafted", "--task", "gtzan-beat", "--data-dir", str(tmp_path),
                            "--results-dir", str(tmp_path / "res"), "--track", "semi-constrained", "--config", str(cfg)]))
    r = read_result(tmp_path / "res" / "handcrafted" / "gtzan-beat" / "semi-constrained.json")
    assert r["track"] == "semi-constrained"
    assert r["head"] == {"kind": "mlp", "hidden": [32], "dropout": 0.1, "config": str(cfg)}
    assert r["training"]["learning_rates"] == [2e-3] and r["training"]["max_epochs"] == 2
    assert r["training"]["early_stop_patience"] == 1 and [row["layer"] for row in r["sweep"]] == [1, "weighted"]
    # the declared head is the one trained: the same sweep through the Python API with that plan gives these scores
    from marble.datasets import get_dataset
    from marble.encoders import load_encoder
    from marble.probe.config import load_config
    from marble.probe.sequence import TRAINERS
    from marble.probe.sweep import Probe
    from marble.registry import get_card

    card = get_card("gtzan-beat")
    ds = get_dataset(card, tmp_path, allow_partial=True)
    items = {s: ds.items(s) for s in ("train", "valid", "test")}
    plan = load_config(cfg, card)
    out = TRAINERS["frame-binary"](card, load_encoder("handcrafted"), items, [Probe(1, 2e-3)], 2, "cpu", None,
                                   {"plan": plan})
    assert out["scored"][0].test == r["sweep"][0]["test"] and plan.train.hidden == (32,)


def test_a_beat_probe_trains_as_it_would_alone(tmp_path):
    """Layer 3 at 5e-3 inside a 10-probe sweep (micro-steps of a 4-track batch) ends two epochs with the weights of
    layer 3 trained alone, up to float rounding (batched and single matrix products round differently, as in the
    clip sweep): same initial weights, crops, dropout masks (slices of the batch's mask) and micro-steps (a fixed
    size). Before, the micro-step size and the dropout keys depended on how many probes were active, so the two
    trained with different dropout."""
    import torch

    from marble.datasets import get_dataset
    from marble.encoders import load_encoder
    from marble.probe.sequence import TRAINERS
    from marble.probe.sweep import Probe, load_state
    from marble.registry import get_card

    write_metronome_gtzan(tmp_path, seconds=12.0)
    card = get_card("gtzan-beat")
    ds = get_dataset(card, tmp_path, allow_partial=True)
    items = {s: ds.items(s) for s in ("train", "valid", "test")}
    enc = load_encoder("handcrafted")

    def two_epochs(probes, name):
        out = TRAINERS["frame-binary"](card, enc, items, probes, 3, "cpu", None,
                                       {"batch_size": 4, "state_path": tmp_path / name, "stop_after_epoch": 2})
        assert out == {"interrupted": True}
        return load_state(tmp_path / name)

    sweep = [Probe(layer, lr) for layer in (0, 1, 2, 3, "weighted") for lr in (1e-3, 5e-3)]
    full, alone = two_epochs(sweep, "all.pt"), two_epochs([Probe(3, 5e-3)], "one.pt")
    k = sweep.index(Probe(3, 5e-3))
    assert full.epoch == alone.epoch == 2
    for name in ("w0", "b0", "w1", "b1"):
        torch.testing.assert_close(full.params[name][k], alone.params[name][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(full.exp_avg[name][k], alone.exp_avg[name][0], rtol=1e-4, atol=1e-9)
    assert full.history[k] == alone.history[0]
