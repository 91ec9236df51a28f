"""End to end through the real CLI: official-format fixture data -> `marble extract` -> `marble probe`
-> `marble leaderboard`, for the clip tasks gtzan, emo, mtt and gs and the frame task gtzan-beat."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from marble.cache.store import cache_dir, read_clip_split, read_manifest
from marble.cli import app
from marble.registry import get_card
from marble.results import read_result
from marble.testing import fixtures

WRITERS = {"gtzan": fixtures.write_gtzan, "emo": fixtures.write_emo, "mtt": fixtures.write_mtt, "gs": fixtures.write_gs}
MODEL = "handcrafted"


def _ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data, cache, results = root / "data", root / "cache", root / "results"
    runner = CliRunner()
    for task, write in WRITERS.items():
        write(data, per_split=3)
        _ok(runner.invoke(app, ["extract", "--model", MODEL, "--task", task, "--data-dir", str(data),
                                "--cache-dir", str(cache), "--allow-partial", "--num-workers", "0", "-q"]))
        _ok(runner.invoke(app, ["probe", "--model", MODEL, "--task", task, "--track", "constrained",
                                "--cache-dir", str(cache), "--results-dir", str(results), "--max-epochs", "3"]))
    return {"data": data, "cache": cache, "results": results, "runner": runner}


@pytest.mark.parametrize("task", sorted(WRITERS))
def test_extract_probe_writes_valid_result(workspace, task):
    card = get_card(task)
    cdir = cache_dir(workspace["cache"], MODEL, task)
    manifest = read_manifest(cdir)
    assert manifest["task"]["id"] == task if isinstance(manifest.get("task"), dict) else task in json.dumps(manifest)
    train = read_clip_split(cdir / "train")
    assert train.features.dtype == np.float16 and train.features.shape[1] == 4  # handcrafted: 4 states
    if task == "emo":  # first 30 s in 5 s windows; the 2 s fixture clips give one window each
        assert card.audio.window_seconds == 5.0 and (train.windows == 0).all()
    if task == "gs":  # 30 s clips of songs: group = song
        assert (train.groups != train.uids).any()
    path = workspace["results"] / MODEL / task / "constrained.json"
    result = read_result(path)  # schema + consistency (selected = best valid row of the sweep)
    assert result["task"] == task and result["track"] == "constrained"
    assert set(result["test"]) == set(card.metrics.names)
    layers = {row["layer"] for row in result["sweep"]}
    assert layers == {0, 1, 2, 3, "weighted"}
    assert {row["lr"] for row in result["sweep"]} == set(card.training.learning_rates)
    assert len(result["weighted_sum"]["weights"]) == 3
    assert result["training"]["max_epochs"] == 3  # the override is recorded


def test_leaderboard_shows_our_rows_beside_reported(workspace):
    out = _ok(workspace["runner"].invoke(app, ["leaderboard", "--results-dir", str(workspace["results"]),
                                               "--format", "json"])).output
    rows = json.loads(out)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    ours = [r for r in rows if r.get("source") == "ours"]
    assert len(ours) == 1 and ours[0]["model"] == MODEL
    text = json.dumps(ours[0])
    for task in WRITERS:
        assert task in text
    assert any(r.get("source") == "reported" and r["model"] == "MERT-v1-95M" for r in rows)
    md = _ok(workspace["runner"].invoke(app, ["leaderboard", "--results-dir", str(workspace["results"]),
                                              "--format", "markdown", "--no-reported"])).output
    assert MODEL in md and "MERT-v1-95M" not in md


def test_frame_task_gtzan_beat_through_cli(workspace, tmp_path):
    data = tmp_path / "data"
    fixtures.write_gtzan_beat(data, per_split=2)
    runner, results = workspace["runner"], workspace["results"]
    _ok(runner.invoke(app, ["extract", "--model", MODEL, "--task", "gtzan-beat", "--data-dir", str(data),
                            "--cache-dir", str(tmp_path / "cache"), "--allow-partial", "--num-workers", "0", "-q"]))
    _ok(runner.invoke(app, ["probe", "--model", MODEL, "--task", "gtzan-beat", "--track", "constrained",
                            "--data-dir", str(data), "--cache-dir", str(tmp_path / "cache"),
                            "--results-dir", str(results), "--max-epochs", "2", "--layers", "0,3"]))
    result = read_result(results / MODEL / "gtzan-beat" / "constrained.json")
    assert set(result["test"]) == {"beat_f_measure", "beat_f_measure_pooled"}
    assert result["training"]["eval_features"] == "frame cache"  # extract's manifest (states "all") is read
    out = _ok(runner.invoke(app, ["leaderboard", "--results-dir", str(results), "--format", "csv",
                                  "--no-reported"])).output
    assert "gtzan-beat" in out or "beat_f_measure" in out


@pytest.mark.parametrize("prediction", ["multiclass", "multilabel", "regression"])
def test_user_folder_task_works_with_every_command(tmp_path, prediction):
    """A user dataset (audio + metadata.csv) and its card in --tasks-dir run through data check, extract,
    probe and leaderboard exactly like a built-in task."""
    data, cache, results = tmp_path / "data", tmp_path / "cache", tmp_path / "results"
    card_path = fixtures.write_folder_dataset(data, prediction=prediction, per_split=6)
    tasks = str(card_path.parent)
    task = card_path.stem
    runner = CliRunner()
    assert task in _ok(runner.invoke(app, ["tasks", "--tasks-dir", tasks])).output
    _ok(runner.invoke(app, ["data", "check", task, "--tasks-dir", tasks, "--data-dir", str(data)]))
    _ok(runner.invoke(app, ["extract", "--model", MODEL, "--task", task, "--tasks-dir", tasks, "--data-dir", str(data),
                            "--cache-dir", str(cache), "--num-workers", "0", "-q"]))
    _ok(runner.invoke(app, ["probe", "--model", MODEL, "--task", task, "--tasks-dir", tasks, "--track", "constrained",
                            "--cache-dir", str(cache), "--results-dir", str(results), "--max-epochs", "2"]))
    result = read_result(results / MODEL / task / "constrained.json", tasks_dir=tasks)
    card = get_card(task, tasks_dir=tasks)
    assert set(result["test"]) == set(card.metrics.names)
    labels = read_clip_split(cache_dir(cache, MODEL, task) / "train").labels
    assert labels.shape == {"multiclass": (6,), "multilabel": (6, 4), "regression": (6, 2)}[prediction]
    out = _ok(runner.invoke(app, ["leaderboard", "--results-dir", str(results), "--tasks-dir", tasks,
                                  "--format", "csv", "--no-reported"])).output
    assert task in out or card.metrics.main in out


def test_user_task_from_entry_point(tmp_path, monkeypatch):
    """Cards shipped by an installed package through the `marble.tasks` entry point group."""
    data = tmp_path / "data"
    card_path = fixtures.write_folder_dataset(data, prediction="multiclass", per_split=3, task_id="ep-task")
    site = tmp_path / "site"
    (site / "my_marble_tasks").mkdir(parents=True)
    (site / "my_marble_tasks" / "__init__.py").write_text(f"CARDS = {str(card_path.parent)!r}\n")
    dist = site / "my_marble_tasks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-marble-tasks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[marble.tasks]\nmine = my_marble_tasks:CARDS\n")
    monkeypatch.syspath_prepend(str(site))
    card = get_card("ep-task")
    assert card.origin == "entry-point:mine" and card.dataset == "folder"
    out = _ok(CliRunner().invoke(app, ["data", "check", "ep-task", "--data-dir", str(data)])).output
    assert "ep-task" in out


def test_probe_name_sets_the_model_name_of_the_result(workspace, tmp_path):
    """--name: the cache is found by --model, the result and the leaderboard row carry the name."""
    runner = workspace["runner"]
    _ok(runner.invoke(app, ["probe", "--model", MODEL, "--name", "my-run-3", "--task", "gtzan",
                            "--cache-dir", str(workspace["cache"]), "--results-dir", str(tmp_path),
                            "--max-epochs", "1", "--layers", "0", "--lrs", "1e-3"]))
    result = read_result(tmp_path / "my-run-3" / "gtzan" / "constrained.json")
    assert result["model"] == "my-run-3" and result["manifest"]["encoder"]["name"] == MODEL
    out = _ok(runner.invoke(app, ["leaderboard", "--results-dir", str(tmp_path), "--format", "csv",
                                  "--no-reported"])).output
    assert out.splitlines()[1].startswith("my-run-3,ours,")
