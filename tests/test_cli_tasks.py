"""`marble tasks`, `marble tasks show`, `marble data check` through typer's CliRunner."""

import pytest
import typer
from typer.testing import CliRunner

from marble.cli import data as data_cli
from marble.cli import tasks as tasks_cli
from marble.testing import fixtures as F

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    a = typer.Typer()
    tasks_cli.register(a)
    data_cli.register(a)
    return a


IDS = ["emo", "gs", "gtzan", "gtzan-beat", "mtg-genre", "mtg-instrument", "mtg-moodtheme", "mtg-top50", "mtt",
       "musdb", "nsynth-instrument", "nsynth-pitch", "vocalset-singer", "vocalset-technique"]


def test_tasks_lists_the_14_tasks(app):
    r = runner.invoke(app, ["tasks"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "14 tasks" in r.output
    for tid in IDS:
        assert f" {tid} " in r.output
    assert "key_weighted_score" in r.output and "builtin" in r.output


def test_tasks_with_data_dir_reports_data(app, tmp_path):
    F.write_gtzan(tmp_path, per_split=1)
    r = runner.invoke(app, ["tasks", "--data-dir", str(tmp_path)], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if " gtzan " in ln)
    assert "partial" in line
    assert "absent" in next(ln for ln in r.output.splitlines() if " emo " in ln)


def test_tasks_looks_at_the_default_data_folder(app, tmp_path, monkeypatch):
    """Without --data-dir, `marble tasks` reports what ./data holds (the default every command reads), and says
    when there is no such folder."""
    monkeypatch.delenv("MARBLE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["tasks"], env={"COLUMNS": "250"})
    assert "no ./data folder: pass --data-dir" in " ".join(r.output.split())
    F.write_gtzan(tmp_path / "data", per_split=1)
    r = runner.invoke(app, ["tasks"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "(data: ./data)" in r.output
    assert "partial" in next(ln for ln in r.output.splitlines() if " gtzan " in ln)
    assert "absent" in next(ln for ln in r.output.splitlines() if " emo " in ln)


def test_tasks_show(app):
    r = runner.invoke(app, ["tasks", "show", "gtzan"])
    assert r.exit_code == 0, r.output
    assert "gtzan (v2, marble-v1): GTZAN genre classification" in r.output  # v2: the whole file (ffa2d14)
    assert "source = 'gtzan.tsv'" in r.output and "jazz.00054" in r.output and "vocabulary (10): blues" in r.output


def test_user_card_and_malformed_card(app, tmp_path):
    card = F.write_folder_dataset(tmp_path, "multiclass", per_split=2)
    r = runner.invoke(app, ["tasks", "--tasks-dir", str(card.parent)], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and "15 tasks" in r.output and "my-multiclass" in r.output
    bad = card.parent / "bad.toml"
    bad.write_text(card.read_text().replace('id = "my-multiclass"', 'id = "bad"').replace("[training]", "[training]\nepochs = 3"))
    r = runner.invoke(app, ["tasks", "--tasks-dir", str(card.parent)])
    assert r.exit_code != 0
    assert "bad.toml" in r.output and "training.epochs" in r.output
    r = runner.invoke(app, ["tasks", "show", "bad", "--tasks-dir", str(card.parent)])
    assert r.exit_code != 0 and "bad.toml" in r.output and "training.epochs" in r.output


def test_data_check_exit_codes(app, tmp_path):
    F.write_gtzan(tmp_path, per_split=1)
    r = runner.invoke(app, ["data", "check", "gtzan", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 1
    assert "442" in r.output and "partial" in r.output and "marsyas" in r.output and "genres_original" in r.output
    r = runner.invoke(app, ["data", "check", "gtzan", "--data-dir", str(tmp_path), "--allow-partial"])
    assert r.exit_code == 0
    card = F.write_folder_dataset(tmp_path, "multilabel", per_split=2)
    r = runner.invoke(app, ["data", "check", "my-multilabel", "--data-dir", str(tmp_path), "--tasks-dir", str(card.parent)])
    assert r.exit_code == 0 and "all splits complete" in r.output
    r = runner.invoke(app, ["data", "check", "gtzn"])
    assert r.exit_code == 2 and "Did you mean 'gtzan'" in r.output
