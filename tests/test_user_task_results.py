"""Issue 23 item 16: a user task's result reads without its card folder (the result records the card's hash):
``marble.load_results``, ``marble plot`` and ``marble leaderboard`` read it, check what the result can show by
itself (schema, seal, selection on validation, ranges) and say that the checks needing the card were skipped; the
commands that must judge a result against its card (``leaderboard check``, ``submit``) still refuse it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import marble
from marble.cli import app
from marble.demo import TASK_ID, run_demo
from marble.results import ResultError, read_result


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A real result of the demo's user task (its card lives in the demo's tasks/ folder, not in marble)."""
    run = run_demo(tmp_path_factory.mktemp("user-task"), clips_per_class=5, max_epochs=2, quiet=True)
    return run.results_dir, run.tasks_dir, run.results_dir / "handcrafted" / TASK_ID / "constrained.json"


def test_load_results_reads_a_user_task_without_its_card(demo, monkeypatch):
    results_dir, tasks_dir, path = demo
    monkeypatch.delenv("MARBLE_TASKS_DIR", raising=False)
    res = marble.load_results(results_dir)
    raw = json.loads(path.read_text())
    assert len(res) == 1 and res[0]["task"] == TASK_ID and res[0]["test"] == raw["test"]
    (note,) = res.notes
    assert note.startswith(f"{path}: task '{TASK_ID}' is a user task whose card is not loaded")
    assert "checks against the card (card version, metric names, protocol, data completeness) skipped" in note
    assert marble.load_results(results_dir, tasks_dir=tasks_dir).notes == []  # with the card: fully checked
    # what the result shows by itself is still checked: a number edited after writing is caught without the card
    edited = json.loads(path.read_text())
    edited["test"][edited["main_metric"]] = 0.123
    bad = path.parent.parent.parent.parent / "edited" / "handcrafted" / TASK_ID / "constrained.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps(edited))
    with pytest.raises(ResultError, match="differs from the selected sweep row"):
        marble.load_results(bad)


def test_plot_and_leaderboard_read_it_and_say_what_was_skipped(demo, tmp_path, monkeypatch):
    results_dir, _, path = demo
    monkeypatch.delenv("MARBLE_TASKS_DIR", raising=False)
    res = CliRunner().invoke(app, ["plot", "layers", str(path), "--out", str(tmp_path), "--format", "png"])
    assert res.exit_code == 0, res.output
    assert f"note: {path}: task '{TASK_ID}' is a user task" in res.output
    assert (tmp_path / f"handcrafted--{TASK_ID}--constrained.layers.png").is_file()
    res = CliRunner().invoke(app, ["plot", "compare", str(results_dir), "--out", str(tmp_path), "--format", "png"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(results_dir), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert f"warning: {path}: task '{TASK_ID}' is a user task" in res.output
    body = json.loads(res.output[res.output.index("{"):])
    raw = json.loads(path.read_text())
    (row,) = body["rows"]
    assert row["model"] == "handcrafted"
    cell = row["tasks"][TASK_ID]
    assert cell["score"] == pytest.approx(raw["test"][raw["main_metric"]] * 100)
    assert cell["deviations"][0].startswith("task card not loaded: checks against the card skipped")


def test_judging_against_the_card_still_needs_it(demo, monkeypatch):
    _, tasks_dir, path = demo
    monkeypatch.delenv("MARBLE_TASKS_DIR", raising=False)
    with pytest.raises(ResultError, match=f"unknown task '{TASK_ID}'.*user tasks need --tasks-dir"):
        read_result(path)
    res = CliRunner().invoke(app, ["leaderboard", "check", str(path)])
    assert res.exit_code == 2 and "user tasks need --tasks-dir" in res.output
    assert read_result(path, tasks_dir=tasks_dir)["task"] == TASK_ID
