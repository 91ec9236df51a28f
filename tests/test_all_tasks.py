"""All 14 MARBLE tasks through the real CLI on official-format fixtures: `marble extract` (clip
tasks) -> `marble probe` (quick, reduced sweeps) -> `marble leaderboard`, whose MARBLE score is
checked against a re-computation of PROTOCOL §5 written out here from the result files."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from marble.metrics.aggregate import default_task_ids
from marble.registry import get_card
from marble.results import read_result
from marble.testing import fixtures
from tests.test_pipeline import _ok

MODEL = "handcrafted"
FRAME_TASKS = {"gtzan-beat", "musdb"}

# PROTOCOL §5, written out independently of the cards: the metrics averaged into each task score
# (ratios x100, SDR in dB)
TAGGING = ("roc_auc_macro", "ap_macro")
SCORE_METRICS = {
    "mtt": TAGGING, "mtg-genre": TAGGING, "mtg-instrument": TAGGING, "mtg-moodtheme": TAGGING, "mtg-top50": TAGGING,
    "gs": ("key_weighted_score",), "gtzan": ("accuracy",), "gtzan-beat": ("beat_f_measure_pooled",),
    "emo": ("r2_valence", "r2_arousal"), "nsynth-instrument": ("accuracy",), "nsynth-pitch": ("accuracy",),
    "vocalset-technique": ("accuracy",), "vocalset-singer": ("accuracy",),
    "musdb": ("sdr_vocals", "sdr_drums", "sdr_bass", "sdr_other"),
}


@pytest.fixture(scope="module")
def run_all(tmp_path_factory):
    from marble.cli import app

    root = tmp_path_factory.mktemp("all14")
    data, cache, results = root / "data", root / "cache", root / "results"
    fixtures.write_gtzan(data, per_split=3)
    fixtures.write_gtzan_beat(data, per_split=2)
    fixtures.write_mtt(data, per_split=3)
    fixtures.write_gs(data, per_split=3)
    fixtures.write_emo(data, per_split=3)
    fixtures.write_nsynth(data, per_split=4)
    fixtures.write_vocalset(data, techniques=("belt", "vibrato", "fast_forte"), seconds=3.5, silence=0.2)
    for t in ("genre", "instrument", "moodtheme", "top50tags"):
        fixtures.write_mtg(data, task=t, per_split=3)
    fixtures.write_musdb(data, per_split=1, seconds=2.0)
    runner = CliRunner()
    for task in sorted(set(SCORE_METRICS) - FRAME_TASKS):
        _ok(runner.invoke(app, ["extract", "--model", MODEL, "--task", task, "--data-dir", str(data),
                                "--cache-dir", str(cache), "--allow-partial", "--num-workers", "0", "-q"]))
        _ok(runner.invoke(app, ["probe", "--model", MODEL, "--task", task, "--cache-dir", str(cache),
                                "--results-dir", str(results), "--max-epochs", "3", "--lrs", "1e-3,1e-2"]))
    for task in sorted(FRAME_TASKS):  # extract caches the whole valid/test tracks the probe reads
        _ok(runner.invoke(app, ["extract", "--model", MODEL, "--task", task, "--data-dir", str(data),
                                "--cache-dir", str(cache), "--allow-partial", "--num-workers", "0", "-q"]))
        _ok(runner.invoke(app, ["probe", "--model", MODEL, "--task", task, "--data-dir", str(data),
                                "--cache-dir", str(cache), "--results-dir", str(results), "--max-epochs", "1",
                                "--layers", "3", "--lrs", "1e-3", *(["--chunks-per-epoch", "4"] if task == "musdb" else [])]))
    lb = _ok(runner.invoke(app, ["leaderboard", "--results-dir", str(results), "--format", "csv", "--no-reported"]))
    return {"results": results, "csv": lb.output, "runner": runner, "app": app}


def test_the_registry_has_the_14_tasks():
    assert sorted(SCORE_METRICS) == default_task_ids()


@pytest.mark.slow
def test_every_task_writes_a_valid_result(run_all):
    for task in SCORE_METRICS:
        r = read_result(run_all["results"] / MODEL / task / "constrained.json")  # schema + consistency
        card = get_card(task)
        assert r["task"] == task and set(r["test"]) == set(card.metrics.names)
        assert {row["lr"] for row in r["sweep"]} == ({1e-3} if task in FRAME_TASKS else {1e-3, 1e-2})
        assert r["training"]["learning_rates"] == ([1e-3] if task in FRAME_TASKS else [1e-3, 1e-2])


@pytest.mark.slow
def test_marble_score_over_all_14_tasks(run_all):
    task_scores = {}
    for task, names in SCORE_METRICS.items():
        test = read_result(run_all["results"] / MODEL / task / "constrained.json")["test"]
        scale = 1.0 if task == "musdb" else 100.0
        task_scores[task] = sum(float(test[m]) * scale for m in names) / len(names)
    expected = sum(task_scores.values()) / 14
    (row,) = list(csv.DictReader(io.StringIO(run_all["csv"])))
    assert row["model"] == MODEL and float(row["marble_score"]) == pytest.approx(expected, abs=1e-6)
    for task, s in task_scores.items():
        assert float(row[f"{task}.score"]) == pytest.approx(s, abs=1e-6), task
    # quick runs (--max-epochs/--layers/--lrs) are valid but not comparable with published numbers
    assert row["protocol_complete"] == "false"
    files = [str(run_all["results"] / MODEL / t / "constrained.json") for t in SCORE_METRICS]
    res = run_all["runner"].invoke(run_all["app"], ["leaderboard", "check", "--submission", *files])
    assert res.exit_code == 2 and "14 of 14 file(s) rejected" in res.output


@pytest.mark.slow
def test_leaderboard_json_lists_every_task(run_all):
    res = _ok(run_all["runner"].invoke(run_all["app"], ["leaderboard", "--results-dir", str(run_all["results"]),
                                                        "--format", "json", "--no-reported"]))
    data = json.loads(res.output)
    assert sorted(data["tasks"]) == sorted(SCORE_METRICS) and data["rows"][0]["marble_score"] is not None


def test_lrs_outside_the_grid_is_refused(tmp_path):
    from marble.cli import app

    res = CliRunner().invoke(app, ["probe", "--model", MODEL, "--task", "gtzan", "--cache-dir", str(tmp_path),
                                   "--lrs", "3e-3"])
    assert res.exit_code == 2 and "not in the task's grid" in res.output
    res = CliRunner().invoke(app, ["probe", "--model", MODEL, "--task", "gtzan", "--cache-dir", str(tmp_path),
                                   "--lrs", "fast"])
    assert res.exit_code == 2 and "is not a number" in res.output
