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
    np.testing.assert_allclose(boots, want, rtol=1e-12)


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
