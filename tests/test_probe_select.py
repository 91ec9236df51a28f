"""Window -> file averaging, GS song rules and the validation choice."""

from __future__ import annotations

import numpy as np
import scipy.stats
import pytest
import torch

from marble.probe.clip import evaluate_outputs
from marble.probe.select import FileIndex, Scorer, group_scores, pick_best

from probe_helpers import make_card, metrics_for

torch.set_num_threads(1)


def test_window_logit_average_per_file_equals_float64():
    rng = np.random.default_rng(0)
    uids = np.array(["b", "b", "a", "c", "a", "a", "b", "d"])
    labels = np.array([1, 1, 0, 2, 0, 0, 1, 2])
    logits = rng.normal(size=(2, len(uids), 3)).astype(np.float32) * 5
    sc = Scorer("multiclass", uids, uids, labels, metrics_for(["accuracy"]), ["x", "y", "z"])
    est = sc.estimates(torch.as_tensor(logits))
    order = ["b", "a", "c", "d"]  # first appearance
    assert list(sc.files.keys) == order
    np.testing.assert_array_equal(sc.ref_file, [1, 0, 2, 2])
    for p in range(2):
        for f, u in enumerate(order):
            m = logits[p, uids == u].astype(np.float64).mean(0)
            e = np.exp(m - m.max())
            np.testing.assert_allclose(est[p, f], e / e.sum(), rtol=1e-6, atol=1e-7)
    # multilabel: sigmoid of the mean logit; regression: the mean itself
    ml = Scorer("multilabel", uids, uids, np.eye(3, dtype=np.uint8)[labels], metrics_for(["roc_auc_macro"]), list("xyz"))
    np.testing.assert_allclose(ml.estimates(torch.as_tensor(logits))[0, 1],
                               1 / (1 + np.exp(-logits[0, uids == "a"].astype(np.float64).mean(0))), rtol=1e-6)
    rg = Scorer("regression", uids, uids, np.zeros((8, 3), np.float32), metrics_for(["r2_mean"]), list("xyz"))
    np.testing.assert_allclose(rg.estimates(torch.as_tensor(logits))[1, 3], logits[1, uids == "d"].mean(0), rtol=1e-6)


def test_windows_of_a_file_must_share_a_label():
    with pytest.raises(ValueError, match="different labels"):
        Scorer("multiclass", np.array(["a", "a"]), np.array(["a", "a"]), np.array([0, 1]), {}, ["x", "y"], "valid")


def test_group_rules_match_their_definitions():
    rng = np.random.default_rng(1)
    groups = np.array(["s1", "s1", "s1", "s2", "s2"])
    logits = rng.normal(size=(1, 5, 4)) * 3
    idx = FileIndex.build(groups)
    t = torch.as_tensor(logits, dtype=torch.float64)
    for rule in ("vote", "max-logit", "mean-logit", "mean-prob"):
        got = group_scores(t, idx, rule)[0].numpy()
        for g, name in enumerate(["s1", "s2"]):
            w = logits[0, groups == name]
            p = np.exp(w) / np.exp(w).sum(-1, keepdims=True)
            if rule == "vote":
                expect = scipy.stats.mode(w.argmax(-1)).mode  # the reference's vote: ties to the lowest index
                assert got[g].argmax() == expect
            elif rule == "max-logit":
                np.testing.assert_allclose(got[g], w.max(0))
            elif rule == "mean-logit":
                m = w.mean(0)
                np.testing.assert_allclose(got[g], np.exp(m) / np.exp(m).sum())
            else:
                np.testing.assert_allclose(got[g], p.mean(0))


def test_vote_ties_go_to_the_lowest_class_index():
    """Two clips vote 3, two vote 1: the song is class 1 (scipy.stats.mode), even though class 3's clips are
    far more confident (a tie-break by probability would say 3)."""
    logits = torch.tensor([[[0, 0, 0, 9.0], [0, 0, 0, 9.0], [0, 1.0, 0, 0.9], [0, 1.0, 0, 0.9]]])
    idx = FileIndex.build(np.array(["s"] * 4))
    assert scipy.stats.mode(logits[0].argmax(-1).numpy()).mode == 1
    assert group_scores(logits, idx, "vote")[0, 0].argmax().item() == 1
    assert group_scores(logits.flip(-1), idx, "vote")[0, 0].argmax().item() == 0  # classes 0 and 2 tie: 0
    # a song with more votes for a higher class still goes to it
    assert group_scores(logits[:, :3], FileIndex.build(np.array(["s"] * 3)), "vote")[0, 0].argmax().item() == 3


def test_group_rules_see_clip_logits():
    """A song's rules aggregate its clips, each clip's logits being the mean of its windows (the reference
    averages a clip's windows first): two windows of clip a, one of clip b."""
    uids, songs = np.array(["a", "a", "b"]), np.array(["s", "s", "s"])
    sc = Scorer("multiclass", uids, songs, np.zeros(3, int), metrics_for(["accuracy"]), ["x", "y"])
    out = torch.tensor([[[4.0, 0.0], [0.0, 2.0], [0.0, 3.0]]])  # clip a mean: [2, 1] -> votes x; clip b votes y
    np.testing.assert_allclose(sc.estimates(out, "max-logit")[0, 0], [2.0, 3.0])
    np.testing.assert_allclose(sc.estimates(out, "mean-logit")[0, 0], torch.softmax(torch.tensor([1.0, 2.0]), 0))
    assert sc.estimates(out, "vote")[0, 0].argmax() == 0  # one clip each: tie, lowest index


def test_group_rules_share_one_per_file_mean(monkeypatch):
    """The GS monitor and the final scoring average the windows per file once for all four rules (not once per
    rule), and score exactly as each rule scored alone."""
    import marble.probe.select as select

    rng = np.random.default_rng(3)
    songs = np.repeat(np.array(["s1", "s2", "s3"]), 4)
    uids = np.repeat(np.array([f"c{i}" for i in range(6)]), 2)
    labels = np.repeat(np.array([0, 2, 1]), 4)
    rules = ["vote", "max-logit", "mean-logit", "mean-prob"]
    out = torch.as_tensor(rng.normal(size=(3, len(uids), 3)).astype(np.float32) * 3)
    sc = Scorer("multiclass", uids, songs, labels, metrics_for(["accuracy"]), ["x", "y", "z"])
    alone = {r: sc(out, ["accuracy"], r) for r in rules}
    calls = []
    real = select.mean_per_file
    monkeypatch.setattr(select, "mean_per_file", lambda o, idx: calls.append(idx) or real(o, idx))
    assert sc.by_rule(out, ["accuracy"], rules) == alone
    assert sum(idx is sc.files for idx in calls) == 1  # windows -> files once, for all the rules
    calls.clear()
    got = sc.monitor("accuracy", rules, "max")(out)
    assert sum(idx is sc.files for idx in calls) == 1
    want = [max(alone[r][p]["accuracy"] for r in rules) for p in range(3)]
    np.testing.assert_array_equal(got, want)


def test_group_rule_is_chosen_on_valid_not_test():
    """Valid: 'vote' wins; test: 'max-logit' would win. The reported rule and test score use 'vote'."""
    card = make_card(n_out=2, group_rules=["vote", "max-logit"])
    metrics = metrics_for(["accuracy"])
    # one song of 3 clips, label 0: two clips mildly vote 0, one clip very confident in 1
    songs = np.array(["s"] * 3)
    uids = np.array(["c1", "c2", "c3"])
    va = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 9.0]]])  # vote -> 0 (right), max-logit -> 1 (wrong)
    te = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [9.0, 0.0]]])  # vote -> 1 (wrong), max-logit -> 0 (right)
    sv = Scorer("multiclass", uids, songs, np.zeros(3, int), metrics, ["a", "b"])
    st = Scorer("multiclass", uids, songs, np.zeros(3, int), metrics, ["a", "b"])
    ev = evaluate_outputs(va, te, sv, st, card)
    assert ev.rule == ["vote"]
    assert ev.valid[0]["accuracy"] == 1.0 and ev.test[0]["accuracy"] == 0.0
    assert st(te, ["accuracy"], "max-logit")[0]["accuracy"] == 1.0  # the rule we must not pick


def test_pick_best_direction_ties_and_nan():
    assert pick_best([0.5, 0.7, 0.7, 0.1], "max") == 1
    assert pick_best([0.5, 0.7, 0.2, 0.2], "min") == 2
    assert pick_best([float("nan"), 0.3, 0.4], "max") == 2
