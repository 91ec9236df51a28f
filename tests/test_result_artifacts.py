"""Per-item test outputs and shipped probes beside every clip result, end to end through the real CLI on
official-format fixture data: the sidecars are recorded (name + sha256, under the seal), the reported test
metrics recompute from the outputs (checked against scikit-learn on the same arrays), `leaderboard check`
refuses a sidecar that was swapped or that does not recompute its score, and `marble predict` reproduces the
result's own test estimates exactly."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, r2_score, roc_auc_score
from typer.testing import CliRunner

from marble.cli import app
from marble.registry import get_card
from marble.results import read_result, write_result
from marble.results.artifacts import TestOutputs, read_test_outputs
from marble.testing import fixtures

MODEL = "handcrafted"
WRITERS = {"gtzan": fixtures.write_gtzan, "mtt": fixtures.write_mtt, "gs": fixtures.write_gs, "emo": fixtures.write_emo}


def _ok(res):
    assert res.exit_code == 0, f"exit {res.exit_code}\n{res.output}\n{res.exception!r}"
    return res


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    data, cache, results = root / "data", root / "cache", root / "results"
    runner = CliRunner()
    picked = {}
    for task, write in WRITERS.items():
        picked[task] = write(data, per_split=3)
        _ok(runner.invoke(app, ["extract", "--model", MODEL, "--task", task, "--data-dir", str(data),
                                "--cache-dir", str(cache), "--allow-partial", "--num-workers", "0", "-q"]))
        _ok(runner.invoke(app, ["probe", "--model", MODEL, "--task", task, "--cache-dir", str(cache),
                                "--results-dir", str(results), "--max-epochs", "2", "--device", "cpu"]))
    return {"root": root, "data": data, "results": results, "runner": runner, "picked": picked}


def _path(ws, task):
    return ws["results"] / MODEL / task / "constrained.json"


def _outputs(ws, task):
    p = _path(ws, task)
    r = read_result(p)
    return r, read_test_outputs(p, r)


@pytest.mark.parametrize("task", sorted(WRITERS))
def test_result_records_its_sidecars_and_check_accepts_it(ws, task):
    p = _path(ws, task)
    r, outs = _outputs(ws, task)
    arts = r["artifacts"]
    assert set(arts) == {"test_outputs", "probe"}
    for kind, rec in arts.items():
        import hashlib

        assert hashlib.sha256((p.parent / rec["file"]).read_bytes()).hexdigest() == rec["sha256"]
    assert arts["test_outputs"]["n"] == len(outs)
    res = _ok(ws["runner"].invoke(app, ["leaderboard", "check", str(p)]))
    assert "OK" in res.output


def test_outputs_are_what_the_metrics_consume_checked_against_sklearn(ws):
    vocab = get_card("gtzan").vocabulary()
    r, outs = _outputs(ws, "gtzan")
    test_files = ws["picked"]["gtzan"]["test"]
    assert outs.unit == "file" and sorted(outs.keys) == sorted(test_files)
    genre = [vocab.index(k.split("/")[0]) for k in outs.keys]  # the label, from the file's folder
    assert outs.reference.tolist() == genre
    assert outs.estimate.dtype == np.float32 and np.allclose(outs.estimate.sum(1), 1, atol=1e-6)  # probabilities
    assert r["test"]["accuracy"] == accuracy_score(genre, outs.estimate.argmax(1))

    r, outs = _outputs(ws, "mtt")
    keep = [j for j in range(outs.reference.shape[1]) if 0 < outs.reference[:, j].sum() < len(outs)]
    y, s = outs.reference[:, keep], outs.estimate[:, keep]
    assert r["test"]["roc_auc_macro"] == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    assert r["test"]["ap_macro"] == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)

    r, outs = _outputs(ws, "emo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_dim = r2_score(outs.reference.astype(np.float64), outs.estimate.astype(np.float64), multioutput="raw_values")
    assert r["test"]["r2_mean"] == pytest.approx(per_dim.mean(), abs=1e-12)

    r, outs = _outputs(ws, "gs")  # scored per song: the keys are the test songs, the rule the selected one
    assert outs.unit == "song" and sorted(outs.keys) == sorted(ws["picked"]["gs"]["test"])
    assert outs.group_rule == r["selected"]["group_rule"]


def _copy(ws, task, tmp_path):
    src = _path(ws, task).parent
    dst = tmp_path / MODEL / task
    shutil.copytree(src, dst)
    return dst / "constrained.json"


def _check(ws, path):
    return ws["runner"].invoke(app, ["leaderboard", "check", str(path)])


def test_check_refuses_a_sidecar_whose_hash_differs(ws, tmp_path):
    p = _copy(ws, "gtzan", tmp_path)
    r, outs = read_result(p), None
    sidecar = p.parent / r["artifacts"]["test_outputs"]["file"]
    outs = TestOutputs.from_bytes(sidecar.read_bytes())
    outs.estimate[0, ::-1] = outs.estimate[0].copy()  # a plausible edit: one file's probabilities reversed
    sidecar.write_bytes(outs.to_bytes())
    res = _check(ws, p)
    assert res.exit_code == 2
    assert "artifacts.test_outputs.sha256" in res.output and "changed or replaced" in res.output

    sidecar.unlink()
    res = _check(ws, p)
    assert res.exit_code == 2 and "is missing" in res.output

    p = _copy(ws, "mtt", tmp_path)
    probe = p.parent / read_result(p)["artifacts"]["probe"]["file"]
    probe.write_bytes(probe.read_bytes()[:-4] + b"\0\0\0\0")
    res = _check(ws, p)
    assert res.exit_code == 2 and "artifacts.probe.sha256" in res.output


@pytest.mark.parametrize("task", ["gtzan", "mtt"])
def test_check_refuses_outputs_that_do_not_recompute_the_score(ws, tmp_path, task):
    """Consistent hashes and a valid seal, but outputs that give another score: refused."""
    p = _copy(ws, task, tmp_path)
    r = read_result(p)
    outs = read_test_outputs(p, r)
    forged = TestOutputs(outs.keys, outs.reference, outs.estimate[::-1].copy(), outs.unit, outs.vocabulary)
    assert forged.metrics([r["main_metric"]])[r["main_metric"]] != r["test"][r["main_metric"]]
    data = forged.to_bytes()
    (p.parent / r["artifacts"]["test_outputs"]["file"]).write_bytes(data)
    import hashlib

    r["artifacts"]["test_outputs"]["sha256"] = hashlib.sha256(data).hexdigest()
    write_result(p, r)  # re-sealed by marble's writer: only the recomputation can catch it
    res = _check(ws, p)
    assert res.exit_code == 2
    assert f"field 'test.{r['main_metric']}'" in res.output and "does not recompute" in res.output
    res = ws["runner"].invoke(app, ["leaderboard", "check", "--submission", str(p)])
    assert res.exit_code == 2


# ---------------------------------------------------------------- marble predict

def _predict(ws, task, files, *extra):
    res = _ok(ws["runner"].invoke(app, ["predict", "--probe", str(_path(ws, task)), "--model", MODEL, "--device", "cpu",
                                        "--format", "json", *map(str, files), *extra]))
    text = res.output[res.output.index("{"):]
    return json.loads(text[:text.rindex("}") + 1])


@pytest.mark.parametrize("task", ["gtzan", "mtt", "emo"])
def test_predict_reproduces_the_results_own_test_estimates_exactly(ws, task):
    from marble.datasets import get_dataset

    r, outs = _outputs(ws, task)
    items = {it.uid: it for it in get_dataset(get_card(task), ws["data"], allow_partial=True).items("test")}
    files = [items[k].path for k in outs.keys]
    got = _predict(ws, task, files)
    assert [f["file"] for f in got["files"]] == [str(f) for f in files]
    vocab = get_card(task).vocabulary()
    est = np.array([[f["scores"][v] for v in vocab] for f in got["files"]], dtype=np.float32)
    assert np.array_equal(est, outs.estimate)  # bit for bit
    one = _predict(ws, task, files[-1:])  # scored alone: the same estimate
    assert np.array_equal(np.array([one["files"][0]["scores"][v] for v in vocab], np.float32), outs.estimate[-1])


def test_predict_scores_songs_with_the_selected_group_rule(ws):
    """GS: a song file is cut into the dataset's 30 s clips and aggregated with the result's rule."""
    r, outs = _outputs(ws, "gs")
    audio = ws["data"] / "GS" / "giantsteps-key-dataset" / "audio"
    files = [audio / f"{int(s)}.LOFI.mp3" for s in outs.keys]
    got = _predict(ws, "gs", files)
    assert got["group_rule"] == r["selected"]["group_rule"]
    vocab = get_card("gs").vocabulary()
    est = np.array([[f["scores"][v] for v in vocab] for f in got["files"]], dtype=np.float32)
    assert np.array_equal(est, outs.estimate)


def test_predict_text_output_and_refusals(ws, tmp_path):
    vocab = get_card("gtzan").vocabulary()
    r, outs = _outputs(ws, "gtzan")
    f = ws["data"] / "GTZAN" / "genres_original" / outs.keys[0]
    res = _ok(ws["runner"].invoke(app, ["predict", "--probe", str(_path(ws, "gtzan")), "--model", MODEL,
                                        "--device", "cpu", "--top", "2", str(f)]))
    line = [ln for ln in res.output.splitlines() if ln.startswith(str(f))][0]
    order = np.argsort(-outs.estimate[0], kind="stable")[:2]
    assert line == f"{f}: " + ", ".join(f"{vocab[i]} {outs.estimate[0][i]:.3f}" for i in order)

    other = tmp_path / "enc.py"
    shutil.copy(__file__.replace("test_result_artifacts.py", "extract_plugin.py"), other)
    res = ws["runner"].invoke(app, ["predict", "--probe", str(_path(ws, "gtzan")), "--model", f"{other}:ToyEncoder",
                                    "--device", "cpu", str(f)])
    assert res.exit_code != 0 and "trained on features of encoder 'handcrafted'" in str(res.exception or res.output)

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....not audio")
    res = ws["runner"].invoke(app, ["predict", "--probe", str(_path(ws, "gtzan")), "--model", MODEL, "--device", "cpu",
                                    str(f), str(broken)])
    assert res.exit_code == 2 and f"error: {broken}: " in res.output and f"{f}: " in res.output  # the rest is kept


def test_per_track_scores_round_trip_and_recompute_musdb_metrics():
    """MUSDB's layout: per-item scores (no reference), a dense float64 estimate [tracks, sources] and a museval
    array with NaN for an unscored track; the same bytes after a round trip; the card's metrics are plain means
    (SDR) and medians ignoring NaN (museval) of the columns; malformed scores are refused."""
    sources = tuple(get_card("musdb").vocabulary())
    sdr = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 9.0], [0.5, -1.0, 0.0, 2.0]])
    mus = np.array([[1.5, np.nan, 3.0, 1.0], [2.5, np.nan, 5.0, 2.0], [0.5, np.nan, np.nan, 4.0]])
    a = TestOutputs(["t/a", "t/b", "t/c"], None, sdr, "track", sources, extra={"museval": mus})
    data = a.to_bytes()
    b = TestOutputs.from_bytes(data)
    assert b.scores and b.reference is None and b.vocabulary == sources and b.unit == "track"
    assert np.array_equal(b.estimate, sdr) and b.estimate.dtype == np.float64
    assert np.array_equal(b.extra["museval"], mus, equal_nan=True) and b.to_bytes() == data
    names = get_card("musdb").metrics.names
    got = b.metrics(names)
    want = {"sdr_vocals": 3.5 / 3, "sdr_drums": 5.0 / 3, "sdr_bass": 3.0, "sdr_other": 5.0,
            "museval_sdr_vocals": 1.5, "museval_sdr_drums": None, "museval_sdr_bass": 4.0, "museval_sdr_other": 2.0}
    want["sdr_mean"] = (3.5 / 3 + 5.0 / 3 + 3.0 + 5.0) / 4
    assert got == pytest.approx(want, abs=1e-15)
    assert TestOutputs(a.keys, None, sdr, "track", sources).metrics(["museval_sdr_bass"]) == {"museval_sdr_bass": None}
    with pytest.raises(ValueError, match="dense"):
        TestOutputs(["t/a"], None, np.zeros(4), "track", sources)
    with pytest.raises(ValueError, match="3 keys, 3 references, 3 estimates, 2 museval"):
        TestOutputs(a.keys, None, sdr, "track", sources, extra={"museval": mus[:2]})
    with pytest.raises(ValueError, match="4 sources"):
        TestOutputs(a.keys, None, sdr[:, :3], "track", sources).metrics(["sdr_bass"])
