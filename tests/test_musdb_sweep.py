"""MUSDB18 is a first-class frame task (issue 19): a SIGKILLed sweep resumes to the bytes of an uninterrupted one,
``--seeds N`` [``--seeds-sweep``] and ``--track semi-constrained --config`` work through the CLI, and a model of a
sweep trains exactly as it would alone; its result ships each test track's SDR per source, from which `leaderboard
check` recomputes the reported scores exactly and `marble compare` resamples tracks (issue 21). Tiny: a 16-unit LSTM
head, 1 s chunks, 2 s tracks, museval off where the CLI is not the point (museval is slow)."""

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


# ---------------------------------------------------------------- per-track test scores (issue 21)

@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Two tiny MUSDB results on the same two test tracks: lab/a (layer 0, museval on), lab/b (layer 3, museval off)."""
    from marble.probe.sequence import run
    from musdb_fixtures import tiny_card

    root = tmp_path_factory.mktemp("musdb_outputs")
    write_musdb(root / "data", per_split=2, seconds=2.0)
    for name, layer, museval in (("lab/a", 0, True), ("lab/b", 3, False)):
        run(tiny_card(), "handcrafted", data_dir=root / "data", results_dir=root / "res", layers=[layer], lrs=[1e-3],
            max_epochs=1, chunks_per_epoch=4, batch_size=1, museval=museval, name=name)
    return root / "res"


def _musdb_path(res, model):
    return res / model.replace("/", "__") / "musdb" / "constrained.json"


def test_musdb_result_ships_per_track_sdrs_that_recompute_its_scores(two):
    """The sidecar holds each test track's global SDR per source (and museval's per-track median when it ran),
    keyed by uid; the reported per-source SDRs are the means over the tracks, sdr_mean the mean of the four and
    museval the median over tracks, all exactly (float64, in the stored order), and `leaderboard check` accepts it."""
    import hashlib

    import numpy as np

    from marble.results.artifacts import read_test_outputs

    sources = ["vocals", "drums", "bass", "other"]
    for model, museval in (("lab/a", True), ("lab/b", False)):
        p = _musdb_path(two, model)
        r = read_result(p)
        rec = r["artifacts"]["test_outputs"]
        assert (rec["file"], rec["unit"], rec["n"]) == ("constrained.test-outputs.safetensors", "track", 2)
        assert hashlib.sha256((p.parent / rec["file"]).read_bytes()).hexdigest() == rec["sha256"]
        outs = read_test_outputs(p, r)
        assert outs.scores and outs.reference is None and list(outs.vocabulary) == sources
        assert [k.rsplit("/", 1)[-1] for k in outs.keys] == ["Fixture Artist - Test Song 0",
                                                            "Fixture Artist - Test Song 1"]
        e = outs.estimate
        assert e.dtype == np.float64 and e.shape == (2, 4) and len(set(e.ravel().tolist())) == 8
        t = r["test"]
        for k, s in enumerate(sources):
            assert t[f"sdr_{s}"] == (e[0, k] + e[1, k]) / 2  # the mean of two tracks, exactly
            if museval:
                m = outs.extra["museval"]
                assert m.shape == (2, 4) and t[f"museval_sdr_{s}"] == (m[0, k] + m[1, k]) / 2  # their median
            else:
                assert "museval" not in outs.extra and t[f"museval_sdr_{s}"] is None
        assert t["sdr_mean"] == float(np.mean([t[f"sdr_{s}"] for s in sources]))
        assert outs.metrics(list(t)) == t
        for s in sources:  # each source's selected row reports the same number
            sel = r["selected"]["per_source"][s]
            row = next(w for w in r["sweep"] if (w["layer"], w["lr"]) == (sel["layer"], sel["lr"]))
            assert row["test"][f"sdr_{s}"] == t[f"sdr_{s}"]
        res = CliRunner().invoke(app, ["leaderboard", "check", str(p)])
        assert res.exit_code == 0 and "OK" in res.output, res.output


def test_check_refuses_a_tampered_musdb_sidecar(two, tmp_path):
    """A changed byte shows as a sha256 mismatch; a changed per-track SDR, re-sealed with its new hash, no longer
    recomputes the reported score; so does a changed museval value."""
    import hashlib
    import shutil

    from marble.results import write_result
    from marble.results.artifacts import TestOutputs, read_test_outputs

    src = _musdb_path(two, "lab/a")
    shutil.copytree(src.parent, tmp_path / "m" / "musdb")
    p = tmp_path / "m" / "musdb" / "constrained.json"
    r = read_result(p)
    side = p.parent / r["artifacts"]["test_outputs"]["file"]
    outs = read_test_outputs(p, r)
    runner = CliRunner()

    def check():
        res = runner.invoke(app, ["leaderboard", "check", str(p)])
        assert res.exit_code == 2, res.output
        return res.output

    data = bytearray(side.read_bytes())
    data[-1] ^= 1  # one bit of one stored value
    side.write_bytes(bytes(data))
    out = check()
    assert "artifacts.test_outputs.sha256" in out and "changed or replaced" in out

    for which, field in (("estimate", "sdr_drums"), ("museval", "museval_sdr_drums")):
        est, extra = outs.estimate.copy(), {k: v.copy() for k, v in outs.extra.items()}
        (est if which == "estimate" else extra["museval"])[1, 1] += 0.5  # drums of the second track
        forged = TestOutputs(outs.keys, None, est, "track", outs.vocabulary, extra=extra).to_bytes()
        side.write_bytes(forged)
        r["artifacts"]["test_outputs"]["sha256"] = hashlib.sha256(forged).hexdigest()
        write_result(p, r)  # re-sealed by marble's writer: only the recomputation can catch it
        out = check()
        assert f"field 'test.{field}'" in out and "does not recompute" in out
        if which == "estimate":
            assert "field 'test.sdr_mean'" in out


def test_compare_two_musdb_results(two):
    """`marble compare` pairs two MUSDB results on their test tracks: the difference of the sdr_means with an
    interval from the resampled tracks."""
    import numpy as np

    from marble.metrics.resample import indices
    from marble.results.artifacts import read_test_outputs

    res = CliRunner().invoke(app, ["compare", "lab/a", "lab/b", "--results-dir", str(two), "--format", "json",
                                   "--resamples", "200"])
    assert res.exit_code == 0, res.output
    t = json.loads(res.output)["tasks"][0]
    assert (t["task"], t["unit"], t["n"]) == ("musdb", "track", 2)
    r = {m: read_result(_musdb_path(two, m)) for m in ("lab/a", "lab/b")}
    i = t["vs_first"]["lab/b"]
    assert i["diff"] == pytest.approx(r["lab/b"]["test"]["sdr_mean"] - r["lab/a"]["test"]["sdr_mean"], abs=1e-12)
    e = {m: read_test_outputs(_musdb_path(two, m), r[m]).estimate for m in r}
    d = [float(np.mean(e["lab/b"][row].mean(0)) - np.mean(e["lab/a"][row].mean(0)))
         for row in np.concatenate(list(indices(2, 200, 1234)))]
    assert (i["lo"], i["hi"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])), abs=1e-12)
    assert i["lo"] < i["hi"] and i["resamples"] == 200
