"""Paired comparisons and tie groups: the bootstrap against plain numpy and scikit-learn references (the
metric recomputed on every resample), `marble compare`, and the leaderboard's top groups (a margin inside
the noise stays in one group, a clear margin separates), in every output format."""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, r2_score, roc_auc_score
from typer.testing import CliRunner

from marble.cli import app
from marble.leaderboard import build
from marble.leaderboard.significance import (CompareError, compare, holm, interval, load_scored,
                                             task_score_resamples)
from marble.metrics import METRICS
from marble.metrics.resample import indices, on_resamples
from marble.registry import all_cards
from marble.results import read_result
from tests.leaderboard_fixtures import multiclass_outputs, musdb_outputs, regression_outputs, write_with_outputs

N = 200
runner = CliRunner()


def _correct(n_right: int, *, flip_to_wrong=(), flip_to_right=()):
    """Item i right for i < n_right, then some flipped: models built from it share most items (paired)."""
    c = np.arange(N) < n_right
    c[list(flip_to_wrong)] = False
    c[list(flip_to_right)] = True
    return c


A = _correct(150)
B = _correct(150, flip_to_wrong=range(0, 10), flip_to_right=range(150, 157))  # 147 right: 3 items apart, 17 discordant
C = _correct(100)  # 100 right: 50 items apart, all in A's favour


@pytest.fixture
def three(tmp_path):
    for model, c in (("lab/a", A), ("lab/b", B), ("lab/c", C)):
        write_with_outputs(tmp_path, model, "gtzan", multiclass_outputs("gtzan", c))
    return tmp_path


def _scored(root, model, task="gtzan"):
    from marble.results import result_path

    p = result_path(root, model, task, "constrained")
    return load_scored(p, read_result(p))


def test_bootstrap_of_accuracy_matches_a_plain_numpy_reference(three):
    card = all_cards()["gtzan"]
    a, b = _scored(three, "lab/a"), _scored(three, "lab/b")
    keys = sorted(a.outputs.keys)
    full_a, boot_a = task_score_resamples(card, a, keys, resamples=1000, seed=5)
    full_b, boot_b = task_score_resamples(card, b, keys, resamples=1000, seed=5)

    # the reference: items in key order, the documented draws, accuracy of each resample in plain numpy
    order = np.argsort(a.outputs.keys)
    ref, est_a, est_b = a.outputs.reference[order], a.outputs.estimate[order], b.outputs.estimate[order]
    rng = np.random.default_rng(5)
    want_a, want_b = [], []
    for _ in range(1000):
        idx = rng.integers(0, N, size=N)
        want_a.append(np.mean(ref[idx] == est_a[idx].argmax(1)) * 100)
        want_b.append(np.mean(ref[idx] == est_b[idx].argmax(1)) * 100)
    assert np.array_equal(boot_a, want_a) and np.array_equal(boot_b, want_b)
    assert (full_a, full_b) == (75.0, 73.5)

    d = np.asarray(want_a) - np.asarray(want_b)
    i = interval(full_a - full_b, boot_a - boot_b)
    assert (i.lo, i.hi) == tuple(np.percentile(d, [2.5, 97.5]))
    assert i.p == min(1.0, 2 * min((d <= 0).sum() + 1, (d >= 0).sum() + 1) / 1001)


def _multilabel(n=150, C=9, seed=3):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, C)) < 0.15).astype(np.uint8)
    y[:, 4] = 0
    y[:1, 4] = 1  # a rare label: absent from about a third of the resamples
    s = np.round(rng.random((n, C)) + 0.4 * y, 1).astype(np.float32)  # many ties
    return y, s


def test_roc_auc_and_ap_are_recomputed_on_every_resample():
    y, s = _multilabel()
    roc, ap = on_resamples("roc_auc_macro", y, s), on_resamples("ap_macro", y, s)
    idx = next(indices(len(y), 120, seed=9))
    got_roc, got_ap = roc(idx), ap(idx)
    skipped = 0
    for b, rows in enumerate(idx):
        yb, sb = y[rows], s[rows]
        keep = [j for j in range(y.shape[1]) if 0 < yb[:, j].sum() < len(rows)]
        skipped += len(keep) < y.shape[1]
        assert got_roc[b] == pytest.approx(np.mean([roc_auc_score(yb[:, j], sb[:, j]) for j in keep]), abs=1e-12)
        assert got_ap[b] == pytest.approx(np.mean([average_precision_score(yb[:, j], sb[:, j]) for j in keep]), abs=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert got_roc[b] == pytest.approx(METRICS["roc_auc_macro"](yb, sb), abs=1e-12)
    assert skipped > 25  # the rare label really was missing from resamples, and left out there
    # not the mean of per-item anything: the full-sample ROC-AUC is not the mean of the resampled ones
    assert abs(np.mean(got_roc) - METRICS["roc_auc_macro"](y, s)) > 1e-6


def test_other_metrics_on_resamples_equal_the_metric_on_the_drawn_items():
    rng = np.random.default_rng(1)
    keys = all_cards()["gs"].vocabulary()
    ref = rng.integers(0, 24, 80)
    est = rng.random((80, 24)).astype(np.float32)
    est[np.arange(40), ref[:40]] = 2.0
    idx = next(indices(80, 50, seed=2))
    got = on_resamples("key_weighted_score", ref, est, keys)(idx)
    want = [METRICS["key_weighted_score"](ref[r], est[r], labels=keys) for r in idx]
    assert got == pytest.approx(want, abs=1e-12)
    o = regression_outputs("emo", rng.normal(size=(60, 2)) * 0.5)
    idx = next(indices(60, 30, seed=3))
    got = on_resamples("r2_valence", o.reference, o.estimate, o.vocabulary)(idx)
    want = [r2_score(o.reference[r][:, 1].astype(float), o.estimate[r][:, 1].astype(float)) for r in idx]
    assert got == pytest.approx(want, abs=1e-12)


def _beat_tracks(rng, n):
    """``n`` tracks of beat times (s) with the corner cases: no estimate, no reference, neither, references only
    before 5 s (empty once trimmed), estimates nowhere near; the rest jittered by 50 ms (some beyond 70 ms)."""
    refs, ests = [], []
    for i in range(n):
        r = np.arange(rng.uniform(0, 1), 30, rng.uniform(0.35, 0.7))
        jittered = (r + rng.normal(0, 0.05, r.size))[rng.random(r.size) < 0.85]  # missed beats
        e = np.sort(np.r_[jittered, rng.uniform(0, 30, i % 5)]).clip(0)  # and false alarms
        kind = i % 7
        if kind == 1:
            e = np.zeros(0)
        elif kind == 2:
            r = np.zeros(0)
        elif kind == 3:
            r, e = np.zeros(0), np.zeros(0)
        elif kind == 4:
            r = r[r < 5]  # nothing left after the 5 s trim
        elif kind == 5:
            e = r[: r.size // 2] + 0.2  # never within 70 ms
        refs.append(r)
        ests.append(e)
    return refs, ests


@pytest.mark.parametrize("name", ["beat_f_measure_pooled", "beat_f_measure"])
def test_beat_metrics_on_resamples_are_the_metric_on_the_drawn_tracks(name, monkeypatch):
    """Every resample's beat F equals the metric called on the drawn tracks (pooled: to the bit; per-track mean:
    exactly too, the same scores summed in the same order), over several blocks of resamples and tracks without
    estimates or references; and mir_eval runs once per track, not once per track and resample."""
    import mir_eval

    from marble.metrics.beat import at_frame_resolution

    for n, seed in ((29, 4), (7, 5)):  # 7 tracks: some resamples draw no matching track (F = 0)
        refs, ests = _beat_tracks(np.random.default_rng(seed), n)
        if name == "beat_f_measure_pooled":
            refs = at_frame_resolution(refs, 75.0)  # as TestOutputs.metric_inputs feeds this metric
        ref_items, est_items = np.empty(n, object), np.empty(n, object)
        ref_items[:], est_items[:] = refs, ests  # object arrays, as the test outputs hold them
        fn = mir_eval.util.match_events if name == "beat_f_measure_pooled" else mir_eval.beat.f_measure
        owner = mir_eval.util if name == "beat_f_measure_pooled" else mir_eval.beat
        calls = []
        monkeypatch.setattr(owner, fn.__name__, lambda *a, **k: calls.append(1) or fn(*a, **k))
        blocks = list(indices(n, 250, seed=seed))
        on = on_resamples(name, ref_items, est_items)
        got = np.concatenate([on(idx) for idx in blocks])
        assert len(calls) <= n  # counted once per track (no call for a track without beats)
        monkeypatch.setattr(owner, fn.__name__, fn)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = np.array([METRICS[name]([refs[i] for i in row], [ests[i] for i in row])
                             for idx in blocks for row in idx])
        assert got.dtype == np.float64 and np.array_equal(got, want)
        assert len(set(want)) > (100 if n == 29 else 10)  # the resamples really differ
        if n == 7 and name == "beat_f_measure_pooled":
            assert (want == 0).sum() >= 2 and (want > 0).sum() > 200


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])  # 4p, max(3p, .), 2p -> .09, p
    assert holm([0.5]) == [0.5] and holm([0.3, 0.4]) == pytest.approx([0.6, 0.6])


def _compare_json(root, *models, extra=()):
    res = runner.invoke(app, ["compare", *models, "--results-dir", str(root), "--format", "json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_compare_a_margin_inside_the_noise_and_a_clear_one(three):
    out = _compare_json(three, "lab/a", "lab/b")
    i = out["tasks"][0]["vs_first"]["lab/b"]
    assert out["tasks"][0]["n"] == N and out["tasks"][0]["unit"] == "file"
    assert i["diff"] == pytest.approx(-1.5) and i["lo"] < 0 < i["hi"] and i["p"] > 0.05
    out = _compare_json(three, "lab/a", "lab/c")
    i = out["tasks"][0]["vs_first"]["lab/c"]
    assert i["diff"] == pytest.approx(-25.0) and i["hi"] < 0 and i["p"] < 0.01
    out = _compare_json(three, "lab/a", "lab/b", "lab/c")  # several: Holm-adjusted too
    assert {m: v["p_holm"] is not None for m, v in out["tasks"][0]["vs_first"].items()} == {"lab/b": True, "lab/c": True}
    text = runner.invoke(app, ["compare", "lab/a", "lab/b", "--results-dir", str(three)]).output
    assert "gtzan" in text and "200 files" in text and "-1.50 [" in text


def test_compare_across_tasks_combines_the_resamples_of_each_task(tmp_path):
    noise = np.random.default_rng(4).normal(size=(80, 2))
    for model, scale, c in (("lab/a", 0.5, A), ("lab/b", 0.6, B)):
        write_with_outputs(tmp_path, model, "gtzan", multiclass_outputs("gtzan", c))
        write_with_outputs(tmp_path, model, "emo", regression_outputs("emo", noise * scale))
    cards = all_cards()
    res = {m: {t: (p := tmp_path / m.replace("/", "__") / t / "constrained.json", read_result(p)) for t in ("gtzan", "emo")}
           for m in ("lab/a", "lab/b")}
    c = compare(res, cards, resamples=300, seed=11)
    per = {}
    for m in ("lab/a", "lab/b"):
        per[m] = [task_score_resamples(cards[t], _scored(tmp_path, m, t), sorted(_scored(tmp_path, m, t).outputs.keys),
                                       300, 11) for t in ("emo", "gtzan")]
    want = np.mean([per["lab/b"][k][1] - per["lab/a"][k][1] for k in range(2)], axis=0)
    full = np.mean([per["lab/b"][k][0] - per["lab/a"][k][0] for k in range(2)])
    i = c.across["lab/b"]
    assert not c.across_is_marble and i.diff == pytest.approx(full)
    assert (i.lo, i.hi) == pytest.approx(tuple(np.percentile(want, [2.5, 97.5])))


def test_compare_two_musdb_results_resamples_tracks(tmp_path):
    """Two MUSDB results are compared track by track: on each resample of the tracks every source's SDR is the mean
    over the drawn tracks and the score the mean of the four (a plain numpy reference); a margin of 0.4 dB on every
    track, within a spread of several dB shared by both models, is clear only because the bootstrap is paired."""
    rng = np.random.default_rng(5)
    hard = rng.normal(5.0, 3.0, size=(50, 4))  # how hard each track and source is, for both models
    a, b = hard + rng.normal(0, 0.3, hard.shape), hard + 0.4 + rng.normal(0, 0.3, hard.shape)
    for model, sdr in (("lab/a", a), ("lab/b", b)):
        write_with_outputs(tmp_path, model, "musdb", musdb_outputs(sdr))
    out = _compare_json(tmp_path, "lab/a", "lab/b", extra=["--resamples", "300", "--seed", "9"])
    t = out["tasks"][0]
    assert (t["task"], t["unit"], t["n"]) == ("musdb", "track", 50)
    score = lambda x: float(np.mean(x.mean(axis=0)))  # noqa: E731
    assert t["scores"]["lab/a"] == pytest.approx(score(a), abs=1e-12)
    assert t["scores"]["lab/a"] == pytest.approx(read_result(tmp_path / "lab__a" / "musdb" / "constrained.json")
                                                 ["test"]["sdr_mean"], abs=1e-12)
    idx = np.concatenate(list(indices(50, 300, 9)))  # the keys sort in track order here
    d = np.array([score(b[row]) - score(a[row]) for row in idx])
    i = t["vs_first"]["lab/b"]
    assert i["diff"] == pytest.approx(score(b) - score(a), abs=1e-12)
    assert (i["lo"], i["hi"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])), abs=1e-12)
    assert 0 < i["lo"] < 0.4 < i["hi"] and i["p"] < 0.01
    unpaired = np.array([score(b[r2]) - score(a[r1]) for r1, r2 in zip(idx[::2], idx[1::2])])
    assert np.percentile(unpaired, 2.5) < 0  # drawn independently, the tracks' spread hides the margin


def test_compare_refuses_what_cannot_be_paired(three, tmp_path):
    write_with_outputs(tmp_path, "lab/short", "gtzan", multiclass_outputs("gtzan", A[:199]))  # beside lab/a
    res = runner.invoke(app, ["compare", "lab/a", "lab/short", "--results-dir", str(tmp_path)])
    assert res.exit_code != 0
    assert "scored on different files (200 vs 199: 1 only in lab/a (e.g. gtzan/item0199))" in str(res.exception)
    write_with_outputs(tmp_path, "lab/other", "gtzan", multiclass_outputs("gtzan", A, seed=1))  # other labels
    with pytest.raises(CompareError, match="the reference of file .* differs"):
        res = {m: {"gtzan": (p := tmp_path / m.replace("/", "__") / "gtzan" / "constrained.json", read_result(p))}
               for m in ("lab/a", "lab/other")}
        compare(res, all_cards())
    from tests.leaderboard_fixtures import write_model

    write_model(tmp_path, "lab/plain", ["gtzan"])  # a result without per-item outputs
    res = runner.invoke(app, ["compare", "lab/a", "lab/plain", "--results-dir", str(tmp_path)])
    assert res.exit_code != 0 and "carries no per-item test outputs" in str(res.exception)


# ---------------------------------------------------------------- tie groups in the leaderboard

def _ties(lb):
    return {r.model: r.cells["gtzan"].tie for r in lb.rows if "gtzan" in r.cells}


def test_tie_groups_keep_the_noise_together_and_separate_a_clear_margin(three):
    lb = build(three, reported=True)
    ties = _ties(lb)
    assert ties["lab/a"].group is True and ties["lab/a"].vs_best is None  # the best
    b, c = ties["lab/b"], ties["lab/c"]
    assert b.group is True and b.best == "lab/a" and b.vs_best.lo < 0 < b.vs_best.hi
    assert c.group is False and c.vs_best.lo > 0 and c.vs_best.p_holm < 0.05
    assert b.vs_best.p_holm >= b.vs_best.p  # Holm over the two comparisons with the best
    assert ties["MERT-v1-95M"].group is None and "published numbers" in ties["MERT-v1-95M"].why
    assert lb.ties and "Holm" in lb.ties
    # at least 40 resamples per comparison with the best, so the smallest p-value can pass Holm's first threshold
    few = _ties(build(three, reported=False, resamples=10))
    assert few["lab/b"].vs_best.resamples == few["lab/c"].vs_best.resamples == 80


def test_tie_groups_in_every_format(three):
    from marble.leaderboard.render import TOP, render

    lb = build(three)
    md = render(lb, "markdown")
    rows = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| lab/")}
    assert f"75.00{TOP}" in rows["lab/a"] and f"73.50{TOP}" in rows["lab/b"]
    assert "50.00" in rows["lab/c"] and TOP not in rows["lab/c"]
    assert "no tie group (reported rows): published numbers carry no per-item test outputs" in md
    table = render(lb, "table")
    assert f"75.0{TOP}" in table and f"73.5{TOP}" in table and f"50.0{TOP}" not in table

    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(render(lb, "csv")))}
    assert [rows[m]["gtzan.top_group"] for m in ("lab/a", "lab/b", "lab/c", "MERT-v1-95M")] == ["true", "true", "false", ""]
    assert "separated from the best (lab/a)" in rows["lab/c"]["gtzan.tie"] and "95% CI" in rows["lab/c"]["gtzan.tie"]
    assert rows["MERT-v1-95M"]["gtzan.tie"] == "no tie group: published numbers carry no per-item test outputs"

    data = json.loads(render(lb, "json"))
    got = {r["model"]: r["tasks"]["gtzan"]["tie"] for r in data["rows"] if "gtzan" in r["tasks"]}
    assert got["lab/b"]["group"] is True and got["lab/b"]["vs_best"]["lo"] < 0 < got["lab/b"]["vs_best"]["hi"]
    assert got["lab/c"]["group"] is False and got["MERT-v1-95M"]["why"].startswith("published numbers")
    assert data["tie_groups"] == lb.ties


def test_marble_score_tie_group(tmp_path):
    """The MARBLE-score group: the mean task-score difference over the benchmark tasks, resampled per task."""
    from marble.leaderboard.significance import assign_ties

    noise = np.random.default_rng(4).normal(size=(80, 2))
    for model, c, scale in (("lab/a", A, 0.5), ("lab/b", B, 0.52), ("lab/c", C, 1.5)):
        write_with_outputs(tmp_path, model, "gtzan", multiclass_outputs("gtzan", c))
        write_with_outputs(tmp_path, model, "emo", regression_outputs("emo", noise * scale))
    lb = build(tmp_path, reported=False, ties=False)
    bench = ["emo", "gtzan"]
    for row in lb.rows:
        row.marble_score = np.mean([row.cells[t].score for t in bench])
    assign_ties(lb.rows, all_cards(), bench, resamples=500)
    t = {r.model: r.marble_tie for r in lb.rows}
    assert t["lab/a"].group is True and t["lab/b"].group is True and t["lab/b"].vs_best.lo < 0 < t["lab/b"].vs_best.hi
    assert t["lab/c"].group is False and t["lab/c"].vs_best.lo > 0


def test_tampered_outputs_fail_the_leaderboard(three):
    p = three / "lab__b" / "gtzan" / "constrained.test-outputs.safetensors"
    p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8)
    res = runner.invoke(app, ["leaderboard", "--results-dir", str(three)])
    assert res.exit_code == 2 and "artifacts.test_outputs.sha256" in res.stderr
    res = runner.invoke(app, ["leaderboard", "--results-dir", str(three), "--skip-invalid", "--format", "csv"])
    assert res.exit_code == 0 and "left out of the tie groups" in res.stderr
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(res.stdout))}
    assert rows["lab/b"]["gtzan.top_group"] == "" and "fail their check" in rows["lab/b"]["gtzan.tie"]


def test_a_lone_ranked_result_has_no_group(tmp_path):
    """One model with outputs (as after `marble run`): nothing to be tied with, so no marker anywhere."""
    from marble.leaderboard.render import TOP, render

    write_with_outputs(tmp_path, "lab/a", "gtzan", multiclass_outputs("gtzan", A))
    lb = build(tmp_path)
    tie = _ties(lb)["lab/a"]
    assert tie.group is None and "nothing to be tied with" in tie.why and tie.score == 75.0
    assert TOP not in render(lb, "markdown").split("_")[0]  # the table (the notes name the marker)
