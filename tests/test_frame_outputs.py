"""Per-track test outputs of a gtzan-beat result (issue 21 for frame tasks): the selected probe's decoded test beats and
the evaluated references, keyed by uid, in a sidecar recorded (name + sha256) under the sealed result; the reported
beat F-measures recompute exactly from it (checked against mir_eval called directly), `leaderboard check` refuses a
swapped or forged sidecar, and the paired bootstrap resamples pooled F with the references at frame resolution."""

from __future__ import annotations

import hashlib
import json

import mir_eval
import numpy as np
import pytest
from typer.testing import CliRunner

from beat_fixtures import write_metronome_gtzan
from marble.cli import app
from marble.registry import get_card
from marble.results import read_result, write_result
from marble.results.artifacts import META_KEY, TestOutputs, read_test_outputs, safetensors_metadata
from safetensors.numpy import load, save
from tests.test_pipeline import _ok


@pytest.fixture(scope="module")
def beat(tmp_path_factory):
    root = tmp_path_factory.mktemp("beat_outputs")
    truth = write_metronome_gtzan(root, seconds=8.0)
    runner = CliRunner()
    _ok(runner.invoke(app, ["probe", "--model", "handcrafted", "--task", "gtzan-beat", "--data-dir", str(root),
                            "--results-dir", str(root / "res"), "--layers", "0", "--lrs", "1e-3,5e-3",
                            "--max-epochs", "2", "--device", "cpu"]))
    return {"root": root, "truth": truth, "runner": runner,
            "path": root / "res" / "handcrafted" / "gtzan-beat" / "constrained.json"}


def _mir_eval_f(refs, ests):
    """The per-track F of the card, straight from mir_eval: 70 ms, first 5 s trimmed, mean over tracks."""
    return float(np.mean([mir_eval.beat.f_measure(mir_eval.beat.trim_beats(r), mir_eval.beat.trim_beats(e), 0.07)
                          for r, e in zip(refs, ests)]))


def _pooled_f(refs, ests, fps):
    """The pooled F of the card from mir_eval's matching, references rounded to the frames (a float64 recomputation)."""
    m = ne = nr = 0
    for r, e in zip(refs, ests):
        r = np.unique(np.round(r * fps)) / fps
        m += len(mir_eval.util.match_events(r, e, 0.07)) if len(r) and len(e) else 0
        ne, nr = ne + len(e), nr + len(r)
    p, rc = m / ne, m / nr
    return 2 * p * rc / (p + rc)


def test_beat_result_records_per_track_outputs_that_recompute_its_scores(beat):
    p = beat["path"]
    r = read_result(p)
    rec = r["artifacts"]["test_outputs"]
    side = p.parent / rec["file"]
    assert rec["file"] == "constrained.test-outputs.safetensors" and rec["unit"] == "track" and rec["n"] == 2
    assert hashlib.sha256(side.read_bytes()).hexdigest() == rec["sha256"]
    outs = read_test_outputs(p, r)
    assert outs.unit == "track" and outs.ragged and outs.frame_rate == 75.0
    assert [k.split("/")[-1] for k in outs.keys] == ["blues.00012.wav", "blues.00013.wav"]
    for k, ref in zip(outs.keys, outs.reference):  # the annotated beats inside the evaluated 8 s, float64
        want = beat["truth"]["test"][k.split("/")[-1][:-4]]
        np.testing.assert_allclose(ref, want[want < 8.0], atol=1e-9)
        assert ref.dtype == np.float64
    assert all(e.dtype == np.float64 and e.size > 0 for e in outs.estimate)
    refs, ests = list(outs.reference), list(outs.estimate)
    assert r["test"]["beat_f_measure"] == pytest.approx(_mir_eval_f(refs, ests), abs=1e-12)
    assert r["test"]["beat_f_measure_pooled"] == pytest.approx(_pooled_f(refs, ests, 75.0), abs=1e-12)
    assert outs.metrics(list(r["test"])) == r["test"]  # exactly, as the check compares
    best = next(row for row in r["sweep"] if row["layer"] == r["selected"]["layer"] and row["lr"] == r["selected"]["lr"])
    assert best["test"] == r["test"]
    res = _ok(beat["runner"].invoke(app, ["leaderboard", "check", str(p)]))
    assert "OK" in res.output


def _copy(beat, tmp_path):
    import shutil

    dst = tmp_path / "handcrafted" / "gtzan-beat"
    shutil.copytree(beat["path"].parent, dst)
    return dst / "constrained.json"


def test_check_refuses_a_tampered_beat_sidecar(beat, tmp_path):
    p = _copy(beat, tmp_path)
    r = read_result(p)
    side = p.parent / r["artifacts"]["test_outputs"]["file"]
    outs = read_test_outputs(p, r)
    est = list(outs.estimate)
    est[0] = est[0][:-1]  # one decoded beat less on one track (the last: the first 5 s are trimmed)
    forged = TestOutputs(outs.keys, list(outs.reference), est, "track", (), None, outs.frame_rate)
    assert forged.metrics(["beat_f_measure"])["beat_f_measure"] != r["test"]["beat_f_measure"]
    data = forged.to_bytes()
    side.write_bytes(data)  # the recorded sha256 no longer matches
    res = beat["runner"].invoke(app, ["leaderboard", "check", str(p)])
    assert res.exit_code == 2 and "artifacts.test_outputs.sha256" in res.output and "changed or replaced" in res.output

    r["artifacts"]["test_outputs"]["sha256"] = hashlib.sha256(data).hexdigest()
    write_result(p, r)  # re-sealed by marble's writer: only the recomputation can catch it
    res = beat["runner"].invoke(app, ["leaderboard", "check", str(p)])
    assert res.exit_code == 2
    assert "field 'test.beat_f_measure'" in res.output and "does not recompute" in res.output

    # references rounded to another frame rate: the pooled F moves, and that is caught too
    other = TestOutputs(outs.keys, list(outs.reference), list(outs.estimate), "track", (), None, 3.0)
    assert other.metrics(["beat_f_measure_pooled"]) != {"beat_f_measure_pooled": r["test"]["beat_f_measure_pooled"]}
    data = other.to_bytes()
    side.write_bytes(data)
    r["artifacts"]["test_outputs"]["sha256"] = hashlib.sha256(data).hexdigest()
    write_result(p, r)
    res = beat["runner"].invoke(app, ["leaderboard", "check", str(p)])
    assert res.exit_code == 2 and "field 'test.beat_f_measure_pooled'" in res.output


def test_ragged_outputs_round_trip_to_the_same_bytes_and_refuse_bad_offsets():
    refs = [np.array([0.5, 1.0, 1.5]), np.array([], dtype=np.float64), np.array([2.25])]
    ests = [np.array([0.51, 1.49]), np.array([0.3]), np.array([], dtype=np.float64)]
    a = TestOutputs(["x/a.wav", "x/b.wav", "x/c.wav"], refs, ests, "track", (), None, 75.0)
    data = a.to_bytes()
    b = TestOutputs.from_bytes(data)
    assert b.keys == a.keys and b.frame_rate == 75.0 and b.unit == "track" and b.ragged
    for x, y in zip(list(b.reference) + list(b.estimate), refs + ests):
        assert x.dtype == np.float64 and np.array_equal(x, y)
    assert b.to_bytes() == data and TestOutputs(b.keys, list(b.reference), list(b.estimate), "track", (), None,
                                                75.0).to_bytes() == data
    arrays = load(data)
    arrays["estimate_offsets"] = np.array([0, 2, 1, 3], dtype=np.int64)  # item 1 would end before it starts
    bad = save(arrays, metadata={META_KEY: json.dumps(safetensors_metadata(data))})
    with pytest.raises(ValueError, match="offsets"):
        TestOutputs.from_bytes(bad)


def test_beat_bootstrap_resamples_pooled_f_at_frame_resolution():
    """A reference beat 70.5 ms from its estimate matches only once rounded to the 75 Hz frames (66.7 ms): each
    resample's pooled F is the metric of the drawn tracks with frame-resolution references, as the reported score."""
    from marble.leaderboard.significance import Scored, task_score_resamples
    from marble.metrics import beat_f_measure_pooled
    from marble.metrics.beat import at_frame_resolution
    from marble.metrics.resample import indices

    ests = [(30 * np.arange(40 + 5 * i) + i) / 75 for i in range(6)]  # 0.4 s apart, on the 75 Hz frames
    refs = [e[: 20 + 3 * i] + 0.0705 for i, e in enumerate(ests)]  # 70.5 ms late: 5.29 frames, rounded to 5
    outs = TestOutputs([f"t{i}" for i in range(6)], refs, ests, "track", (), None, 75.0)
    card = get_card("gtzan-beat")
    assert beat_f_measure_pooled(refs, ests) == 0.0  # raw references: nothing within 70 ms
    full, boots = task_score_resamples(card, Scored("m", None, {"task": "gtzan-beat"}, outs), outs.keys, 20, 7)
    want_full = beat_f_measure_pooled(at_frame_resolution(refs, 75.0), ests) * 100
    assert full == pytest.approx(want_full) and full > 50
    idx = next(indices(6, 20, 7))
    want = [beat_f_measure_pooled(at_frame_resolution([refs[i] for i in row], 75.0), [ests[i] for i in row]) * 100
            for row in idx]
    np.testing.assert_array_equal(boots, want)  # the fast path's pooled counts: the metric's F to the bit


def test_beat_outputs_are_compared_track_by_track():
    """Two models' beat outputs on the same tracks and references are comparable; another reference beat on one
    track, or references rounded to another frame rate, are named."""
    from marble.leaderboard.significance import Scored, why_not_comparable

    refs = [np.array([0.5, 1.0, 1.5]), np.array([2.0, 2.5])]
    a = TestOutputs(["t0", "t1"], refs, [np.array([0.5, 1.0]), np.array([2.0])], "track", (), None, 75.0)
    b = TestOutputs(["t1", "t0"], refs[::-1], [np.array([2.5]), np.array([1.5])], "track", (), None, 75.0)
    result = {"task": "gtzan-beat", "track": "constrained", "task_version": 3}
    assert why_not_comparable(Scored("a", None, result, a), Scored("b", None, result, b)) is None
    c = TestOutputs(["t0", "t1"], [refs[0], np.array([2.0, 2.6])], list(a.estimate), "track", (), None, 75.0)
    assert "the reference of track 't1' differs" in why_not_comparable(Scored("a", None, result, a),
                                                                       Scored("c", None, result, c))
    d = TestOutputs(["t0", "t1"], refs, list(a.estimate), "track", (), None, 50.0)
    assert "frames/s" in why_not_comparable(Scored("a", None, result, a), Scored("d", None, result, d))


# ---------------------------------------------------------------- the shipped beat probe and marble predict

def test_beat_result_ships_its_selected_probe(beat):
    """The probe file is recorded (name + sha256) under the sealed result and says how to decode: the layer the
    result selected, the frame rate, the DBN settings the training record names, the card version, the encoder."""
    from probe_helpers import shipped_probe_of

    r, probe = shipped_probe_of(beat["path"])
    m = probe.meta
    assert (m["task"], m["task_version"], m["prediction"], m["track"]) == ("gtzan-beat", 3, "frame-binary",
                                                                           "constrained")
    assert probe.layer == r["selected"]["layer"] == 0 and m["lr"] == r["selected"]["lr"]
    assert m["frame_rate"] == 75.0 and m["decoder"] == r["training"]["decoder"] and m["decoder"]["kind"] == "dbn"
    assert m["encoder"] == r["manifest"]["encoder"] and probe.vocabulary == ["beat"]
    assert probe.tensors["w0"].shape[0] == m["dim"] and probe.tensors[f"w{probe.n_layers - 1}"].shape[1] == 1


def _predict_beats(beat, probe, files, *extra):
    """stdout and stderr of `marble predict` (the runner mixes them; extraction notes go to stderr); with
    ``--format json`` the JSON document."""
    res = _ok(beat["runner"].invoke(app, ["predict", "--probe", str(probe), "--model", "handcrafted", "--device", "cpu",
                                          *map(str, files), *extra]))
    text = res.output
    return json.loads(text[text.index("{\n  \"task\""):text.rindex("}") + 1]) if "json" in extra else text


def test_predict_reproduces_the_beat_results_test_outputs_exactly(beat):
    """`marble predict` on the test tracks' audio gives the beat times stored in the result's test outputs, bit for
    bit (the JSON carries float64 in full); one file alone gives the same; the text output lists them in ms."""
    p = beat["path"]
    outs = read_test_outputs(p, read_result(p))
    audio = beat["root"] / "GTZAN" / "genres_original" / "blues"
    files = [audio / k.split("/")[-1] for k in outs.keys]
    got = _predict_beats(beat, p, files, "--format", "json")
    assert got["task"] == "gtzan-beat" and got["skipped"] == []
    assert [f["file"] for f in got["files"]] == list(map(str, files))
    for f, want in zip(got["files"], outs.estimate):
        beats = np.asarray(f["beats"], dtype=np.float64)
        assert want.size > 0 and np.array_equal(beats, want), (beats, want)
    one = _predict_beats(beat, p.parent / "constrained.probe.safetensors", files[-1:], "--format", "json")
    assert np.array_equal(np.asarray(one["files"][0]["beats"]), outs.estimate[-1])
    line = [ln for ln in _predict_beats(beat, p, files[:1]).splitlines() if ln.startswith(str(files[0]))][0]
    times = " ".join(f"{t:.3f}" for t in outs.estimate[0])
    assert line == f"{files[0]}: {len(outs.estimate[0])} beats at {times} s"


def test_check_and_predict_refuse_a_beat_probe_whose_hash_differs(beat, tmp_path):
    p = _copy(beat, tmp_path)
    probe = p.parent / read_result(p)["artifacts"]["probe"]["file"]
    probe.write_bytes(probe.read_bytes()[:-4] + b"\0\0\0\0")  # the last weights changed
    res = beat["runner"].invoke(app, ["leaderboard", "check", str(p)])
    assert res.exit_code == 2 and "artifacts.probe.sha256" in res.output and "changed or replaced" in res.output
    wav = beat["root"] / "GTZAN" / "genres_original" / "blues" / "blues.00012.wav"
    res = beat["runner"].invoke(app, ["predict", "--probe", str(p), "--model", "handcrafted", "--device", "cpu",
                                      str(wav)])
    assert res.exit_code != 0 and "artifacts.probe.sha256" in str(res.exception or res.output)


def test_predict_reproduces_a_weighted_sum_beat_probe(beat):
    """The weighted-sum probe reads states 1..L: the trainer's features hold 0..L, predict extracts 1..L only; the
    mixing weights shipped are the result's, and the beat times are the sidecar's, bit for bit."""
    from marble.probe.shipped import ShippedProbe

    res_dir = beat["root"] / "res-weighted"
    _ok(beat["runner"].invoke(app, ["probe", "--model", "handcrafted", "--task", "gtzan-beat", "--data-dir",
                                    str(beat["root"]), "--results-dir", str(res_dir), "--layers", "weighted",
                                    "--lrs", "1e-3", "--max-epochs", "1", "--device", "cpu"]))
    p = res_dir / "handcrafted" / "gtzan-beat" / "constrained.json"
    r = read_result(p)
    probe = ShippedProbe.load(p.parent / r["artifacts"]["probe"]["file"])
    assert probe.layer == "weighted" and probe.mixing_weights == pytest.approx(r["weighted_sum"]["weights"], abs=1e-7)
    outs = read_test_outputs(p, r)
    audio = beat["root"] / "GTZAN" / "genres_original" / "blues"
    got = _predict_beats(beat, p, [audio / k.split("/")[-1] for k in outs.keys], "--format", "json")
    for f, want in zip(got["files"], outs.estimate):
        assert want.size > 0 and np.array_equal(np.asarray(f["beats"], dtype=np.float64), want)


def test_predict_beats_skips_an_unreadable_file_and_keeps_the_rest(beat, tmp_path):
    wav = beat["root"] / "GTZAN" / "genres_original" / "blues" / "blues.00012.wav"
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....not audio")
    res = beat["runner"].invoke(app, ["predict", "--probe", str(beat["path"]), "--model", "handcrafted", "--device",
                                      "cpu", str(wav), str(broken)])
    assert res.exit_code == 2 and f"error: {broken}: " in res.output and f"{wav}: " in res.output
    assert "beats at" in [ln for ln in res.output.splitlines() if ln.startswith(f"{wav}: ")][0]


def test_shipped_head_reads_the_states_its_features_hold():
    """``window_outputs(X, states=...)``: features holding only some hidden states give the outputs of the full
    stack (checked against a numpy float64 forward pass); a state the features lack is refused."""
    import torch

    from marble.probe.shipped import ShippedProbe

    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 4, 6, generator=g)  # [frames, states 0..3, dim]
    t = {"w0": torch.randn(6, 5, generator=g), "b0": torch.randn(5, generator=g), "w1": torch.randn(5, 1, generator=g),
         "b1": torch.randn(1, generator=g), "mix": torch.randn(3, generator=g)}
    x64, w = X.double().numpy(), {k: v.double().numpy() for k, v in t.items()}

    def ref(h):
        return np.maximum(h @ w["w0"] + w["b0"], 0) @ w["w1"] + w["b1"]

    mixed = np.einsum("tsh,s->th", x64[:, 1:], np.exp(w["mix"]) / np.exp(w["mix"]).sum())
    single = ShippedProbe({k: v for k, v in t.items() if k != "mix"}, {"layer": 2})
    weighted = ShippedProbe(t, {"layer": "weighted"})
    for probe, want in ((single, ref(x64[:, 2])), (weighted, ref(mixed))):
        full = probe.window_outputs(X).numpy()
        np.testing.assert_allclose(full, want, rtol=1e-12)
        part = probe.window_outputs(X[:, 1:], states=[1, 2, 3]).numpy()
        np.testing.assert_allclose(part, want, rtol=1e-12)
    assert np.array_equal(single.window_outputs(X[:, 2:3], states=[2]).numpy(), single.window_outputs(X).numpy())
    with pytest.raises(ValueError, match=r"reads hidden states \[1, 2, 3\]; the features hold \[0, 2, 3\]"):
        weighted.window_outputs(X[:, [0, 2, 3]], states=[0, 2, 3])
