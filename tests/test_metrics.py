"""Clip, key and beat metrics against independent references (sklearn, mir_eval, float64 numpy)."""

from __future__ import annotations

import inspect

import mir_eval
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, r2_score, roc_auc_score

from marble.metrics import (
    METRICS,
    SCALE,
    accuracy,
    ap_macro,
    beat_f_measure,
    beat_f_measure_pooled,
    key_weighted_score,
    r2_arousal,
    r2_mean,
    r2_valence,
    roc_auc_macro,
)
from marble.metrics.regression import r2_per_dimension

GS_KEYS = [f"{k} {m}" for m in ("major", "minor") for k in "C Db D Eb E F Gb G Ab A Bb B".split()]


def test_registry_loads_all_cards_and_metric_contract():
    from marble.registry import all_cards

    cards = all_cards()
    assert len(cards) == 14
    for card in cards.values():
        for m in card.metrics.names:
            assert m in METRICS
    for name, fn in METRICS.items():
        sig = inspect.signature(fn)
        assert list(sig.parameters)[:2] == ["reference", "estimate"], name
        assert sig.parameters["labels"].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert SCALE[name] == (1.0 if "sdr" in name else 100.0)
    assert cards["gs"].vocabulary() == GS_KEYS


# ---------------------------------------------------------------------------------------------
# classification


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, c = rng.integers(5, 200), rng.integers(2, 30)
    ref = rng.integers(0, c, n)
    scores = rng.standard_normal((n, c))
    scores[: n // 3, :] += 3 * np.eye(c)[ref[: n // 3]]  # some right answers
    want = accuracy_score(ref, scores.argmax(1))
    assert accuracy(ref, scores) == pytest.approx(want, abs=1e-12)
    assert accuracy(ref, scores.argmax(1)) == pytest.approx(want, abs=1e-12)
    assert accuracy(ref.astype(float), scores.astype(np.float32)) == pytest.approx(want, abs=1e-12)


def test_accuracy_edge_cases():
    assert accuracy([2, 0], [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]) == 1.0  # tie -> lowest index
    assert accuracy([1], [[0.5, 0.4]]) == 0.0
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 1]) == 0.5


@pytest.mark.parametrize(
    "ref, est, match",
    [
        ([0, 1], [[0.1, 0.2]], "2 items but estimate has 1"),
        ([0, 3], [[0.1, 0.2], [0.3, 0.4]], "outside 0..1"),
        ([0.5, 1], [[0.1, 0.2], [0.3, 0.4]], "integer class indices"),
        ([[0, 1]], [[0.1, 0.2]], "1-D class indices"),
        ([0, 1], [[0.1, np.nan], [0.3, 0.4]], "NaN"),
        ([], np.zeros((0, 3)), "empty"),
        ([0], np.zeros((1, 2, 2)), "shape"),
        ([-1, 0], [0, 0], "negative"),
    ],
)
def test_accuracy_validation(ref, est, match):
    with pytest.raises(ValueError, match=match):
        accuracy(ref, est)


def _multilabel(seed, n=60, c=8, tie=False):
    rng = np.random.default_rng(seed)
    ref = (rng.random((n, c)) < rng.uniform(0.1, 0.6, c)).astype(int)
    ref[0] = 1 - ref[1]  # every label gets both classes...
    ref[1] = 1 - ref[0]
    est = rng.standard_normal((n, c)) + 0.8 * ref
    if tie:
        est = np.round(est, 0)  # many tied scores
    return ref, est


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tie", [False, True])
def test_roc_auc_and_ap_match_sklearn(seed, tie):
    ref, est = _multilabel(seed, tie=tie)
    assert roc_auc_macro(ref, est) == pytest.approx(roc_auc_score(ref, est, average="macro"), abs=1e-12)
    assert ap_macro(ref, est) == pytest.approx(average_precision_score(ref, est, average="macro"), abs=1e-12)
    # bool reference, float32 scores, sigmoid of the scores (ranking-only metrics)
    prob = 1 / (1 + np.exp(-est))
    assert roc_auc_macro(ref.astype(bool), prob.astype(np.float32)) == pytest.approx(
        roc_auc_score(ref, prob.astype(np.float32), average="macro"), abs=1e-12
    )


def test_roc_auc_ap_hand_computed():
    ref = np.array([[1], [0], [1], [0]])
    est = np.array([[0.9], [0.8], [0.3], [0.1]])
    # positive/negative pairs: (0.9>0.8, 0.9>0.1, 0.3<0.8, 0.3>0.1) -> 3/4
    assert roc_auc_macro(ref, est) == pytest.approx(0.75)
    # ranks: P@1 = 1 (R .5), P@3 = 2/3 (R 1) -> AP = .5*1 + .5*2/3
    assert ap_macro(ref, est) == pytest.approx(0.5 + 1 / 3)
    assert roc_auc_macro(ref, -est) == pytest.approx(0.25)
    assert roc_auc_macro(ref, np.zeros((4, 1))) == pytest.approx(0.5)  # all tied
    assert ap_macro(ref, np.zeros((4, 1))) == pytest.approx(0.5)  # one threshold: precision 2/4


def test_labels_without_positive_or_negative_are_excluded_with_warning():
    ref, est = _multilabel(7, c=6)
    bad = ref.copy()
    bad[:, 2] = 0  # no positive
    bad[:, 4] = 1  # no negative
    keep = [0, 1, 3, 5]
    names = ["a", "b", "c", "d", "e", "f"]
    with pytest.warns(UserWarning, match=r"2 of 6 labels .*excluded.*\(c, e\)"):
        got = roc_auc_macro(bad, est, labels=names)
    assert got == pytest.approx(roc_auc_score(bad[:, keep], est[:, keep], average="macro"), abs=1e-12)
    with pytest.warns(UserWarning, match="2 of 6 labels"):
        got = ap_macro(bad, est)
    assert got == pytest.approx(average_precision_score(bad[:, keep], est[:, keep], average="macro"), abs=1e-12)
    with pytest.raises(ValueError, match="none of the 2 labels"):
        roc_auc_macro(np.array([[1, 0], [1, 0]]), np.zeros((2, 2)))


@pytest.mark.parametrize(
    "ref, est, match",
    [
        ([[0, 1], [1, 0]], [[0.1, 0.2]], "differ"),
        ([[0, 2], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], "binary"),
        ([0, 1], [0.1, 0.2], "binary \\[N, C\\]"),
        ([[0, 1], [1, 0]], [[0.1, np.inf], [0.3, 0.4]], "infinite"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "empty"),
    ],
)
def test_multilabel_validation(ref, est, match):
    with pytest.raises(ValueError, match=match):
        roc_auc_macro(ref, est)
    with pytest.raises(ValueError, match=match):
        ap_macro(ref, est)


# ---------------------------------------------------------------------------------------------
# regression


@pytest.mark.parametrize("seed", range(4))
def test_r2_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = rng.integers(3, 100)
    ref = rng.standard_normal((n, 2))
    est = ref * rng.uniform(0, 1.2) + rng.standard_normal((n, 2)) * rng.uniform(0.1, 2)
    labels = ["arousal", "valence"]
    per = r2_score(ref, est, multioutput="raw_values")
    np.testing.assert_allclose(r2_per_dimension(ref, est, labels=labels), per, rtol=0, atol=1e-12)
    assert r2_mean(ref, est, labels=labels) == pytest.approx(r2_score(ref, est), abs=1e-12)
    assert r2_mean(ref, est) == pytest.approx(r2_score(ref, est), abs=1e-12)
    assert r2_arousal(ref, est, labels=labels) == pytest.approx(per[0], abs=1e-12)
    assert r2_valence(ref, est, labels=labels) == pytest.approx(per[1], abs=1e-12)
    # the column is found by name, not by position
    assert r2_valence(ref[:, ::-1], est[:, ::-1], labels=labels[::-1]) == pytest.approx(per[1], abs=1e-12)
    assert r2_mean(ref[:, 0], est[:, 0]) == pytest.approx(per[0], abs=1e-12)


def test_r2_edge_cases():
    ref = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    with pytest.warns(UserWarning, match="constant"):
        got = r2_per_dimension(ref, ref + [[0.5, 0.0]] * 3)
    np.testing.assert_allclose(got, r2_score(ref, ref + [[0.5, 0.0]] * 3, multioutput="raw_values"))
    with pytest.warns(UserWarning, match="constant"):
        assert r2_mean(ref, ref) == 1.0
    # predicting the mean gives 0, a perfect fit 1, worse than the mean is negative
    y = np.array([[1.0], [2.0], [3.0]])
    assert r2_mean(y, np.full_like(y, 2.0)) == pytest.approx(0.0)
    assert r2_mean(y, y) == 1.0
    assert r2_mean(y, -y) == pytest.approx(1 - 56 / 2)


@pytest.mark.parametrize(
    "fn, ref, est, labels, match",
    [
        (r2_valence, np.zeros((3, 2)), np.zeros((3, 2)), None, "needs labels"),
        (r2_valence, np.ones((3, 2)), np.ones((3, 2)), ["arousal", "mood"], "exactly one column 'valence'"),
        (r2_arousal, np.ones((3, 2)), np.ones((3, 2)), ["arousal"], "names 1 dimensions"),
        (r2_mean, np.ones((3, 2)), np.ones((3, 3)), None, "differ"),
        (r2_mean, np.ones((1, 2)), np.ones((1, 2)), None, "at least 2 items"),
        (r2_mean, np.ones((3, 2)), np.full((3, 2), np.nan), None, "NaN"),
    ],
)
def test_r2_validation(fn, ref, est, labels, match):
    with pytest.raises(ValueError, match=match):
        fn(ref, est, labels=labels)


# ---------------------------------------------------------------------------------------------
# key


@pytest.mark.parametrize(
    "ref, est, want",
    [
        ("C major", "C major", 1.0),
        ("C major", "G major", 0.5),  # fifth above
        ("C major", "F major", 0.0),  # fifth below: not credited by mir_eval
        ("C major", "A minor", 0.3),  # relative minor
        ("A minor", "C major", 0.3),  # relative major
        ("C major", "C minor", 0.2),  # parallel
        ("A minor", "E minor", 0.5),
        ("Db minor", "Ab minor", 0.5),
        ("Eb major", "C minor", 0.3),
        ("B major", "D major", 0.0),
    ],
)
def test_key_hand_computed(ref, est, want):
    r, e = GS_KEYS.index(ref), GS_KEYS.index(est)
    assert key_weighted_score([r], [e], labels=GS_KEYS) == pytest.approx(want)
    scores = np.zeros((1, 24))
    scores[0, e] = 1.0
    assert key_weighted_score([r], scores, labels=GS_KEYS) == pytest.approx(want)


def test_key_mean_over_items_matches_mir_eval():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 24, 300)
    scores = rng.standard_normal((300, 24))
    want = np.mean([mir_eval.key.weighted_score(GS_KEYS[r], GS_KEYS[p]) for r, p in zip(ref, scores.argmax(1))])
    assert key_weighted_score(ref, scores, labels=GS_KEYS) == pytest.approx(want, abs=1e-12)
    # mean of the hand cases: (1 + .5 + .3 + .2 + 0) / 5
    idx = GS_KEYS.index
    ref = [idx("C major")] * 5
    est = [idx(k) for k in ("C major", "G major", "A minor", "C minor", "D major")]
    assert key_weighted_score(ref, est, labels=GS_KEYS) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "ref, est, labels, match",
    [
        ([0], [0], None, "needs labels"),
        ([0], [0], ["C major", "H major"], "'H major' is not a mir_eval key"),
        ([0], [0], ["C dorian"], "not a mir_eval key"),
        ([0], np.zeros((1, 3)), ["C major", "D major"], "3 class scores but labels lists 2"),
        ([5], [0], ["C major", "D major"], "outside the 2-key vocabulary"),
    ],
)
def test_key_validation(ref, est, labels, match):
    with pytest.raises(ValueError, match=match):
        key_weighted_score(ref, est, labels=labels)


# ---------------------------------------------------------------------------------------------
# beat


def _beats(rng, n_tracks=6):
    ref, est = [], []
    for _ in range(n_tracks):
        period = rng.uniform(0.3, 0.8)
        r = np.arange(rng.uniform(0, 1), 30, period)
        e = r + rng.normal(0, 0.05, r.size)  # some inside 70 ms, some outside
        e = np.sort(e[rng.random(e.size) < 0.85])  # missed beats
        extra = rng.uniform(0, 30, rng.integers(0, 10))  # false alarms
        ref.append(r)
        est.append(np.sort(np.r_[e, extra]).clip(0))
    return ref, est


def _greedy_matches(ref, est, window):
    """Maximum matching of two sorted 1-D event lists under |r - e| <= window (two pointers;
    optimal for intervals on a line)."""
    i = j = m = 0
    while i < len(ref) and j < len(est):
        if abs(ref[i] - est[j]) <= window:
            m, i, j = m + 1, i + 1, j + 1
        elif est[j] < ref[i]:
            j += 1
        else:
            i += 1
    return m


@pytest.mark.parametrize("seed", range(3))
def test_beat_f_measure_matches_mir_eval(seed):
    ref, est = _beats(np.random.default_rng(seed))
    want = np.mean(
        [
            mir_eval.beat.f_measure(mir_eval.beat.trim_beats(r), mir_eval.beat.trim_beats(e), f_measure_threshold=0.07)
            for r, e in zip(ref, est)
        ]
    )
    assert beat_f_measure(ref, est) == pytest.approx(want, abs=1e-12)
    # and against a float64 re-computation of the same definition
    own = []
    for r, e in zip(ref, est):
        r, e = r[r >= 5.0], e[e >= 5.0]
        m = _greedy_matches(r, e, 0.07)
        p, q = m / len(e), m / len(r)
        own.append(0.0 if m == 0 else 2 * p * q / (p + q))
    assert beat_f_measure(ref, est) == pytest.approx(np.mean(own), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_beat_f_measure_pooled_float64(seed):
    ref, est = _beats(np.random.default_rng(seed))
    m = sum(_greedy_matches(r, e, 0.07) for r, e in zip(ref, est))
    p = m / sum(len(e) for e in est)
    q = m / sum(len(r) for r in ref)
    assert beat_f_measure_pooled(ref, est) == pytest.approx(2 * p * q / (p + q), abs=1e-12)


def test_beat_hand_computed_and_empty_tracks():
    ref = [np.array([1.0, 2.0, 3.0])]
    est = [np.array([1.05, 2.1, 3.0, 4.0])]  # 2 matches (70 ms); 2.1 is 100 ms off
    p, r = 2 / 4, 2 / 3
    assert beat_f_measure_pooled(ref, est) == pytest.approx(2 * p * r / (p + r))
    # nothing after 5 s: mir_eval scores the track 0 (with our one warning)
    with pytest.warns(UserWarning, match="1 of 1 tracks"):
        assert beat_f_measure(ref, est) == 0.0
    # a track with no estimate: 0 for the per-track mean; pooled only adds its references
    ref2 = [np.arange(5, 10, 0.5), np.arange(5, 10, 0.5)]
    est2 = [np.arange(5, 10, 0.5) + 0.01, np.array([])]
    with pytest.warns(UserWarning, match="1 of 2 tracks"):
        assert beat_f_measure(ref2, est2) == pytest.approx(0.5)
    p, r = 10 / 10, 10 / 20
    assert beat_f_measure_pooled(ref2, est2) == pytest.approx(2 * p * r / (p + r))
    assert beat_f_measure_pooled([np.array([])], [np.array([])]) == 0.0
    assert beat_f_measure_pooled([[1.0, 2.0]], [[5.0]]) == 0.0
    # window edge: 69 ms matches, 71 ms does not
    assert beat_f_measure_pooled([[1.0]], [[1.069]]) == 1.0
    assert beat_f_measure_pooled([[1.0]], [[1.071]]) == 0.0
    # duplicate times are allowed (as mir_eval); each beat matches once
    assert beat_f_measure_pooled([[1.0]], [[1.0, 1.0]]) == pytest.approx(2 * 0.5 * 1 / 1.5)


@pytest.mark.parametrize(
    "ref, est, match",
    [
        ([[1.0, 2.0]], [[2.0, 1.0]], r"estimate\[0\]: beat times must be in increasing order"),
        ([[1.0, 2.0]], [[[1.0, 2.0]]], r"estimate\[0\] must be a 1-D"),
        ([[1.0]], [[1.0], [2.0]], "1 tracks but estimate has 2"),
        (np.array([1.0, 2.0]), [[1.0]], "list with one 1-D array"),
        ([[-1.0]], [[1.0]], "negative"),
        ([[1.0, np.nan]], [[1.0]], "NaN"),
        ([], [], "empty"),
    ],
)
def test_beat_validation(ref, est, match):
    for fn in (beat_f_measure, beat_f_measure_pooled):
        with pytest.raises(ValueError, match=match):
            fn(ref, est)
