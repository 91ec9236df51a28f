"""MUSDB18 is a first-class frame task (issue 19): a SIGKILLed sweep resumes to the bytes of an uninterrupted one,
``--seeds N`` [``--seeds-sweep``] and ``--track semi-constrained --config`` work through the CLI, and a model of a
sweep trains exactly as it would alone; its result ships each test track's SDR per source, from which `leaderboard
check` recomputes the reported scores exactly and `marble compare` resamples tracks, and its four selected source
models as one probe file, which `marble predict` applies to new mixtures: the stems of a test mixture score exactly
the shipped SDRs (issue 21). Tiny: a 16-unit LSTM head, 1 s chunks, 2 s tracks, museval off where the CLI is not the
point (museval is slow)."""

from __future__ import annotations

import json
from pathlib import Path
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


# ---------------------------------------------------------------- the shipped probe and marble predict (issue 21)

SETTINGS = {"n_fft": 2048, "hop": 320, "sample_rate": 24000, "wiener_iterations": 1, "wiener_eps": 1e-10,
            "wiener_frames": 600, "wiener_scale": 10.0}  # the card's reconstruction (docs/fidelity.md)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """One tiny MUSDB result (layers 0 and weighted: with this seed vocals, drums and other select the weighted sum,
    bass layer 0), museval off; its data folder and result path."""
    from marble.probe.sequence import run
    from musdb_fixtures import tiny_card

    root = tmp_path_factory.mktemp("musdb_probe")
    names = write_musdb(root / "data", per_split=2, seconds=2.0)
    run(tiny_card(), "handcrafted", data_dir=root / "data", results_dir=root / "res", layers=[0, "weighted"],
        lrs=[1e-3], max_epochs=1, chunks_per_epoch=4, batch_size=1, museval=False, name="lab/p")
    return {"root": root, "names": names, "path": _musdb_path(root / "res", "lab/p")}


def _mixture(root, name, split):
    return root / "data" / "MUSDB18" / ("test" if split == "test" else "train") / name / "mixture.wav"


def _predict(probe, files, out_dir, *extra):
    res = CliRunner().invoke(app, ["predict", "--probe", str(probe), "--model", "handcrafted", "--device", "cpu",
                                   "--out-dir", str(out_dir), *map(str, files), *extra])
    return res


def test_musdb_result_ships_its_four_source_models(shipped):
    """The probe file is recorded (name + sha256) under the sealed result; it holds each source's selected model:
    the layer (or the weighted sum's weights) and LR the result selected, the head the result declares, the STFT
    and Wiener settings of the card, the card version and the encoder; `leaderboard check` accepts it."""
    from marble.encoders import load_encoder
    from marble.separation.head import OpenUnmixHead
    from probe_helpers import shipped_probe_of

    p = shipped["path"]
    r, probe = shipped_probe_of(p)
    m = probe.meta
    assert (m["task"], m["task_version"], m["prediction"], m["track"], m["model"]) == ("musdb", 3, "separation",
                                                                                       "constrained", "lab/p")
    assert probe.vocabulary == ["vocals", "drums", "bass", "other"] and probe.is_modules and probe.layer is None
    assert m["separation"] == SETTINGS and m["encoder"] == r["manifest"]["encoder"]
    dim = load_encoder("handcrafted").dim
    assert m["head"] == {"kind": "openunmix", "in_dim": dim, "num_bins": 1025, "hidden": 16, "layers": 3,
                         "dropout": 0.4, "bidirectional": False}
    assert (r["head"]["hidden"], r["head"]["layers"], r["head"]["dropout"]) == (16, 3, 0.4)
    layers = {}
    for s, sel in r["selected"]["per_source"].items():
        info = m["modules"][s]
        assert (info["layer"], info["lr"]) == (sel["layer"], sel["lr"])
        layers[s] = info["layer"]
        if sel["layer"] == "weighted":  # the one weighted row: the result's weights of this source
            assert info["weights"] == pytest.approx(r["training"]["weighted_sum_per_source"][s]["weights"], abs=1e-12)
            assert probe.tensors[f"{s}.mix"].shape == (load_encoder("handcrafted").num_states - 1,)
        else:
            assert info["weights"] is None and f"{s}.mix" not in probe.tensors
    assert sorted(set(layers.values()), key=str) == [0, "weighted"], layers  # both kinds of model are covered
    want = OpenUnmixHead(dim, 1025, 16, 3, 0.4).state_dict()
    for s in probe.vocabulary:  # every parameter and BatchNorm statistic of each source's head
        assert sorted(k[len(s) + 1:] for k in probe.tensors if k.startswith(f"{s}.") and k != f"{s}.mix") == sorted(want)
    res = CliRunner().invoke(app, ["leaderboard", "check", str(p)])
    assert res.exit_code == 0 and "OK" in res.output, res.output


def test_predict_separates_mixtures_into_the_stems_the_result_scored(shipped, tmp_path):
    """`marble predict` on the test mixtures writes four 24 kHz float stems each, whose global SDR against the
    references (the trainer's `global_sdr`, the estimate as the [C, T] array the trainer scores) equals the SDR the
    result ships for that track and source exactly; on the validation mixtures the mean SDR of each source equals
    the validation score the result selected that source's model with, computed from the trained model before it
    was shipped, so the file holds the trained weights."""
    import numpy as np
    import soundfile as sf

    from marble.datasets.base import Item
    from marble.results.artifacts import read_test_outputs
    from marble.separation.stems import TrackStems
    from marble.separation.train import global_sdr

    p, root = shipped["path"], shipped["root"]
    r = read_result(p)
    outs = read_test_outputs(p, r)
    sources = list(outs.vocabulary)
    valid = shipped["names"]["valid"]
    files = [_mixture(root, k.rsplit("/", 1)[-1], "test") for k in outs.keys] + [_mixture(root, n, "valid")
                                                                                  for n in valid]
    res = _predict(p, files, tmp_path / "out", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{\n"):])
    assert doc["prediction"] == "separation" and doc["skipped"] == [] and len(doc["files"]) == 4

    def sdrs(entry, wav):
        refs = TrackStems(Item(uid=wav.parent.name, path=wav), sources, 24000)
        out = []
        for s in sources:
            est, sr = sf.read(entry["stems"][s], dtype="float32", always_2d=True)
            assert sr == 24000 and sf.info(entry["stems"][s]).subtype == "FLOAT" and est.shape == (48000, 2)
            out.append(global_sdr(refs.read(s), np.ascontiguousarray(est.T)))
        return out

    for i, (entry, wav) in enumerate(zip(doc["files"][:2], files[:2])):
        assert entry["file"] == str(wav)
        assert Path(entry["stems"]["vocals"]) == tmp_path / "out" / wav.parent.name / "mixture" / "vocals.wav"
        assert sdrs(entry, wav) == outs.estimate[i].tolist()  # bit for bit
    got = np.array([sdrs(e, w) for e, w in zip(doc["files"][2:], files[2:])])  # [tracks, sources]
    for k, s in enumerate(sources):
        assert float(np.mean(got[:, k])) == r["selected"]["per_source"][s]["valid_score"]


def test_predict_refuses_a_changed_musdb_probe(shipped, tmp_path):
    """A probe file whose bytes differ from the sha256 the sealed result records is refused by `marble predict` (and
    by `leaderboard check`)."""
    import shutil

    src = shipped["path"]
    shutil.copytree(src.parent, tmp_path / "m" / "musdb")
    p = tmp_path / "m" / "musdb" / "constrained.json"
    probe = p.parent / read_result(p)["artifacts"]["probe"]["file"]
    probe.write_bytes(probe.read_bytes()[:-4] + b"\0\0\0\0")  # the last weights changed
    res = CliRunner().invoke(app, ["leaderboard", "check", str(p)])
    assert res.exit_code == 2 and "artifacts.probe.sha256" in res.output and "changed or replaced" in res.output
    res = _predict(p, [_mixture(shipped["root"], shipped["names"]["test"][0], "test")], tmp_path / "out")
    assert res.exit_code != 0 and "artifacts.probe.sha256" in str(res.exception or res.output)
    assert not (tmp_path / "out").exists()


def test_predict_stems_skips_an_unreadable_file_and_duplicates_a_mono_one(shipped, tmp_path):
    """An unreadable file gets an error line and exit 2 while the others are separated; a mono file is separated as
    the stereo file whose two channels are that one (a note says so), bit for bit."""
    import numpy as np
    import soundfile as sf

    src = _mixture(shipped["root"], shipped["names"]["test"][0], "test")
    x, sr = sf.read(src, dtype="float32", always_2d=True)
    sf.write(tmp_path / "mono.wav", x[:, 0], sr, subtype="FLOAT")
    sf.write(tmp_path / "dual.wav", np.stack([x[:, 0], x[:, 0]], 1), sr, subtype="FLOAT")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....not audio")
    files = [tmp_path / "mono.wav", broken, tmp_path / "dual.wav"]
    res = _predict(shipped["path"], files, tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = res.output.splitlines()
    assert any(ln.startswith(f"error: {broken}: ") and ln.endswith("; not predicted") for ln in lines), res.output
    assert f"note: {files[0]} is mono: its channel was duplicated to two" in res.output
    assert sum("is mono" in ln for ln in lines) == 1
    for f in (files[0], files[2]):
        line = next(ln for ln in lines if ln.startswith(f"{f}: "))
        assert line == (f"{f}: stems vocals, drums, bass, other written to {tmp_path / 'out' / f.stem}/<stem>.wav "
                        "(24 kHz, float)")
    for s in ("vocals", "drums", "bass", "other"):
        mono, _ = sf.read(tmp_path / "out" / "mono" / f"{s}.wav", dtype="float32", always_2d=True)
        dual, _ = sf.read(tmp_path / "out" / "dual" / f"{s}.wav", dtype="float32", always_2d=True)
        assert mono.shape == (48000, 2) and np.array_equal(mono, dual) and np.abs(mono).max() > 0


def test_stem_folders_keep_inputs_apart(tmp_path):
    """Each input's stems get their own folder: its name, its parent folder's too where names are shared (every
    MUSDB track is a mixture.wav), numbered where even that is shared."""
    from marble.probe.predict import stem_folders

    paths = [str(tmp_path / "a" / "mixture.wav"), str(tmp_path / "b" / "mixture.wav"), str(tmp_path / "song.mp3"),
             str(tmp_path / "x" / "a" / "mixture.wav")]
    got = stem_folders(paths, tmp_path / "out")
    assert [got[p].relative_to(tmp_path / "out").as_posix() for p in paths] == [
        "a/mixture", "b/mixture", "song", "a/mixture-2"]
