"""Task scores and the MARBLE score (PROTOCOL §5), checked against the published averages."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from marble.metrics.aggregate import (
    aggregate_metrics,
    marble_score,
    reported_averages,
    reported_rows,
    reported_task_scores,
    task_score,
)
from marble.registry import all_cards

REPO = Path(__file__).resolve().parents[1]
# the shared spec sits beside the main checkout (../shared) or beside the worktrees' folder (../../shared)
SPEC_CSVS = [d / "shared" / "spec" / "reference_results.csv" for d in (REPO.parent, REPO.parent.parent)]


def _csv_path() -> Path:
    for p in [REPO / "leaderboard" / "reference_results.csv", *SPEC_CSVS]:
        if p.exists():
            return p
    pytest.fail("reference_results.csv not found in leaderboard/ nor in ../shared/spec/")


@pytest.fixture(scope="module")
def cards():
    return all_cards()


def test_fourteen_tasks_with_aggregates(cards):
    assert len(cards) == 14
    for card in cards.values():
        assert aggregate_metrics(card)
        assert set(aggregate_metrics(card, reported=True)) <= set(card.metrics.names)


def test_task_score_scales(cards):
    # tagging: mean(ROC, AP) x100
    assert task_score(cards["mtt"], {"roc_auc_macro": 0.9, "ap_macro": 0.4, "extra": 3.0}) == pytest.approx(65.0)
    # EMO: mean(R2 valence, R2 arousal) x100, r2_mean is not part of it
    assert task_score(cards["emo"], {"r2_valence": 0.5, "r2_arousal": 0.7, "r2_mean": 0.0}) == pytest.approx(60.0)
    # MUSDB: mean of the four SDRs in dB (no x100); museval values are not part of it
    m = {"sdr_vocals": 5.0, "sdr_drums": 6.0, "sdr_bass": 4.0, "sdr_other": 3.0, "museval_sdr_vocals": 100.0}
    assert task_score(cards["musdb"], m) == pytest.approx(4.5)
    assert task_score(cards["gs"], {"key_weighted_score": 0.64, "accuracy": 0.1}) == pytest.approx(64.0)
    # beat: the pooled F (PROTOCOL §4, second edition) for ours and for a reported row alike
    beat = {"beat_f_measure": 0.8, "beat_f_measure_pooled": 0.9}
    assert task_score(cards["gtzan-beat"], beat) == pytest.approx(90.0)
    assert task_score(cards["gtzan-beat"], beat, reported=True) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="ap_macro"):
        task_score(cards["mtt"], {"roc_auc_macro": 0.9})


def test_marble_score_needs_all_tasks(cards):
    ids = sorted(cards)
    scores = {t: float(i) for i, t in enumerate(ids)}
    assert marble_score(scores, ids) == pytest.approx(sum(range(14)) / 14)
    assert marble_score(scores) == pytest.approx(sum(range(14)) / 14)  # default: the 14 built-in tasks
    assert marble_score({**scores, "my-task": 1000.0}, ids) == pytest.approx(sum(range(14)) / 14)
    partial = dict(scores)
    del partial["musdb"]
    assert marble_score(partial, ids) is None
    assert marble_score({**scores, "gs": None}, ids) is None
    assert marble_score({**scores, "gs": math.nan}, ids) is None
    assert marble_score({"a": 1.0, "b": 2.0}, ["a", "b"]) == 1.5


def test_reported_rows_map_columns_to_metric_names_and_scale(cards):
    path = _csv_path()
    rows = dict(reported_rows(path, cards))
    with path.open(newline="") as f:
        raw = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(raw)
    v1 = rows["MERT-v1-95M"]
    assert v1["mtt"] == pytest.approx({"roc_auc_macro": 0.910, "ap_macro": 0.393})
    assert v1["gtzan-beat"] == pytest.approx({"beat_f_measure_pooled": 0.883})
    assert v1["emo"] == pytest.approx({"r2_valence": 0.555, "r2_arousal": 0.763})
    assert v1["musdb"] == pytest.approx({"sdr_vocals": 5.5, "sdr_drums": 5.5, "sdr_bass": 3.8, "sdr_other": 3.1})
    assert v1["gs"] == pytest.approx({"key_weighted_score": 0.635})
    # every non-empty cell comes back, once, under some card's metric
    for model, tasks in rows.items():
        n_cells = sum(1 for k, v in raw[model].items() if k not in ("model", "avg") and v.strip())
        assert sum(len(m) for m in tasks.values()) == n_cells
    assert "musdb" not in rows["MusiCNN"] and "gtzan-beat" not in rows["MusiCNN"]


def test_aggregate_reproduces_every_published_average(cards):
    path = _csv_path()
    averages = reported_averages(path)
    checked = 0
    for model, task_scores in reported_task_scores(path, cards):
        ours = marble_score(task_scores, sorted(cards))
        if averages[model] is None:
            assert ours is None, model  # no published avg: some task is missing, so no MARBLE score
            continue
        assert ours is not None, model
        assert abs(ours - averages[model]) <= 0.06, (model, ours, averages[model])
        checked += 1
    assert checked == 6


def test_leaderboard_copy_matches_spec():
    spec = next((p for p in SPEC_CSVS if p.exists()), None)
    if spec is None:
        pytest.skip("no shared/spec beside the repo")
    assert (REPO / "leaderboard" / "reference_results.csv").read_bytes() == spec.read_bytes()


def test_reported_rows_errors(tmp_path, cards):
    bad = tmp_path / "r.csv"
    bad.write_text("model,mtt_roc\nX,90\n")
    with pytest.raises(ValueError, match="no column '"):
        reported_rows(bad, cards)
    with pytest.raises(FileNotFoundError, match="not found"):
        reported_rows(tmp_path / "missing.csv", cards)
    header = (_csv_path().read_text().splitlines()[0]).split(",")
    row = ["X"] + ["" for _ in header[1:]]
    row[header.index("gtzan_acc")] = "n/a"
    bad.write_text(",".join(header) + "\n" + ",".join(row) + "\n")
    with pytest.raises(ValueError, match="'gtzan_acc': 'n/a' is not a number"):
        reported_rows(bad, cards)
