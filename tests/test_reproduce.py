"""``marble reproduce``: a submitted model's probe re-run from the user's own cache gives the submitted
numbers (difference 0, exit 0); from different features it prints the difference and exits 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np

from marble.leaderboard.repo import init_repo
from marble.leaderboard.reproduce import probe_args
from marble.registry import get_card
from marble.results import read_result
from tests.leaderboard_fixtures import model_info

sys.path.insert(0, os.path.dirname(__file__))
from probe_helpers import synth_split, write_cache  # noqa: E402

MODEL = "toy/enc-v1"


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "marble", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def _cache(root, seed):
    rng = np.random.default_rng(seed)
    splits = {s: synth_split(n, 10, 4, 16, rng, prefix=s[0], strength=1.0) for s, n in
              (("train", 64), ("valid", 24), ("test", 24))}
    write_cache(root, MODEL, get_card("gtzan"), splits)


def test_probe_args_repeat_how_the_seeds_ran():
    card = get_card("gtzan")
    layers = [*range(13), "weighted"]
    r = {"track": "constrained", "source": "ours", "manifest": {"seed": 1}, "seeds": {"n": 3},
         "training": {"seed_repeat": "sweep", "max_epochs": card.training.max_epochs},
         "sweep": [{"layer": x, "lr": lr} for x in layers for lr in card.training.learning_rates]}
    assert probe_args(r, card) == ["--track", "constrained", "--seed", "1", "--seeds", "3", "--seeds-sweep"]
    r["training"]["seed_repeat"] = "selected"
    assert probe_args(r, card) == ["--track", "constrained", "--seed", "1", "--seeds", "3"]


def test_reproduce_gives_the_submitted_numbers(tmp_path):
    _cache(tmp_path / "cache", 0)
    res = _cli("probe", "--model", MODEL, "--task", "gtzan", "--cache-dir", tmp_path / "cache", "--results-dir",
               tmp_path / "res", "--max-epochs", "3", "--lrs", "1e-3,1e-2", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    submitted = tmp_path / "res" / "toy__enc-v1" / "gtzan" / "constrained.json"
    r = read_result(submitted)
    assert probe_args(r, get_card("gtzan")) == ["--track", "constrained", "--seed", "1234", "--max-epochs", "3",
                                                "--lrs", "0.001,0.01"]
    # the entry as the leaderboard repository holds it (what a merged submission looks like)
    init_repo(tmp_path / "lb")
    entry = tmp_path / "lb" / "models" / "toy__enc-v1@v1"
    (entry / "gtzan").mkdir(parents=True)
    shutil.copy(submitted, entry / "gtzan" / "constrained.json")
    (entry / "model.json").write_text(json.dumps(model_info(MODEL)))

    res = _cli("reproduce", entry, "--model", MODEL, "--task", "gtzan", "--cache-dir", tmp_path / "cache", "--device", "cpu")
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("gtzan"))
    score = f"{r['test']['accuracy'] * 100:.2f}"
    sel = f"layer {r['selected']['layer']}, lr {r['selected']['lr']:g}"
    assert line.split()[:5] == ["gtzan", "constrained", score, score, "+0.00"] and f"{sel} -> {sel}" in line

    # other features under the same name: the difference shows and the exit code says so
    shutil.rmtree(tmp_path / "cache")
    _cache(tmp_path / "cache", 7)
    res = _cli("reproduce", tmp_path / "lb" / "toy__enc-v1@v1", "--model", MODEL, "--cache-dir", tmp_path / "cache", "--device", "cpu",
               "--tolerance", "0")
    line = next(x for x in res.stdout.splitlines() if x.startswith("gtzan"))
    assert res.returncode == 1 and line.split()[2] == score and line.split()[4] != "+0.00", res.stdout
    diff = float(line.split()[3]) - float(score)  # re-computed (a number, not an error) and the difference shown
    assert abs(diff - float(line.split()[4])) <= 0.011

    res = _cli("reproduce", entry, "--model", MODEL, "--task", "mtt")
    assert res.returncode == 2 and "no submitted result for task(s) mtt (have: gtzan)" in res.stderr
    res = _cli("reproduce", tmp_path / "lb" / "models" / "MERT-v1-95M@published", "--model", "MERT-v1-95M")
    assert res.returncode == 2 and "published numbers (source: reported) have no run to reproduce" in res.stderr


def test_reproduce_semi_constrained_rebuilds_its_config(tmp_path):
    """A semi-constrained result is re-run with a --config written from what it records (head, grid,
    layers): the submitter's TOML is not part of a submission. Without it the re-run could not start."""
    _cache(tmp_path / "cache", 0)
    cfg = tmp_path / "head.toml"
    cfg.write_text('[head]\nhidden = [64, 32]\ndropout = 0.1\n\n[training]\nlearning_rates = [1e-3, 3e-3]\n'
                   'batch_size = 16\nmax_epochs = 3\nearly_stop_patience = 2\nlayers = [1, 3, "weighted"]\n')
    res = _cli("probe", "--model", MODEL, "--task", "gtzan", "--cache-dir", tmp_path / "cache", "--results-dir",
               tmp_path / "res", "--track", "semi-constrained", "--config", cfg, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    submitted = tmp_path / "res" / "toy__enc-v1" / "gtzan" / "semi-constrained.json"
    r = read_result(submitted)
    from marble.leaderboard.reproduce import semi_constrained_config
    from marble.probe.config import load_config

    rebuilt = tmp_path / "rebuilt.toml"
    rebuilt.write_text(semi_constrained_config(r))
    a, b = load_config(cfg, get_card("gtzan")), load_config(rebuilt, get_card("gtzan"))
    assert (a.train, a.learning_rates, a.layers, a.training) == (b.train, b.learning_rates, b.layers, b.training)
    assert b.train.hidden == (64, 32) and b.layers == (1, 3, "weighted") and b.learning_rates == (1e-3, 3e-3)

    init_repo(tmp_path / "lb")
    entry = tmp_path / "lb" / "models" / "toy__enc-v1@v1"
    (entry / "gtzan").mkdir(parents=True)
    shutil.copy(submitted, entry / "gtzan" / "semi-constrained.json")
    (entry / "model.json").write_text(json.dumps(model_info(MODEL)))
    res = _cli("reproduce", entry, "--model", MODEL, "--cache-dir", tmp_path / "cache", "--device", "cpu", "--out", tmp_path / "re")
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("gtzan"))
    score = f"{r['test']['accuracy'] * 100:.2f}"
    assert line.split()[:5] == ["gtzan", "semi-constrained", score, score, "+0.00"], line
