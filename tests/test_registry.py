"""Task cards: the 14 built-ins validate and say what PROTOCOL.md says; malformed cards name file + key."""

from __future__ import annotations

import re
import textwrap

import pytest

from marble.registry import CardError, UnknownTaskError, all_cards, builtin_cards_dir, get_card, load_card

PROTOCOL_CAPS = {  # PROTOCOL §3: scheduler patience / early-stop patience / max epochs
    "mtt": (3, 10, 100), "gs": (5, 20, 100), "gtzan": (6, 20, 100), "gtzan-beat": (6, 20, 100),
    "emo": (5, 20, 100), "nsynth-instrument": (3, 10, 50), "nsynth-pitch": (3, 10, 50),
    "vocalset-technique": (5, 10, 100), "vocalset-singer": (5, 20, 100), "mtg-instrument": (3, 10, 100),
    "mtg-moodtheme": (3, 10, 100), "mtg-genre": (3, 10, 100), "mtg-top50": (3, 10, 100), "musdb": (2, 5, 50),
}
PROTOCOL_CLASSES = {  # PROTOCOL §4
    "mtt": 50, "gs": 24, "gtzan": 10, "gtzan-beat": 1, "emo": 2, "nsynth-instrument": 11, "nsynth-pitch": 128,
    "vocalset-technique": 10, "vocalset-singer": 20, "mtg-instrument": 40, "mtg-moodtheme": 56, "mtg-genre": 87,
    "mtg-top50": 50, "musdb": 4,
}

MINIMAL = """
id = "{id}"
version = 1
protocol = "user-test"
name = "A user task"
dataset = "folder"
prediction = "multiclass"
[source]
subdir = "mine"
metadata = "labels.csv"
[labels]
values = ["a", "b"]
[splits]
source = "labels.csv"
[metrics]
main = "accuracy"
names = ["accuracy"]
"""


def test_fourteen_builtin_cards_match_protocol():
    cards = all_cards()
    assert set(cards) == set(PROTOCOL_CLASSES)
    for tid, card in cards.items():
        assert card.protocol == "marble-v1"
        assert card.path.parent.resolve() == builtin_cards_dir().resolve()
        assert card.num_outputs == PROTOCOL_CLASSES[tid], tid
        assert card.training.learning_rates == [5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]
        assert card.head.hidden == 512
        t = card.training
        assert (t.scheduler_patience, t.early_stop_patience, t.max_epochs) == PROTOCOL_CAPS[tid], tid
        if tid != "musdb":
            assert card.head.kind == "mlp" and card.head.layers == 1 and card.head.dropout == 0.2
            assert card.training.batch_size == 64
        assert card.decisions, f"{tid}: paper-vs-code decisions must be recorded"
    musdb = cards["musdb"]
    assert (musdb.head.kind, musdb.head.layers, musdb.head.bidirectional, musdb.head.dropout) == ("openunmix", 3, False, 0.4)
    assert (musdb.training.batch_size, musdb.training.accumulate, musdb.training.monitor) == (32, 8, "main")
    assert (musdb.audio.piece_seconds, musdb.audio.tail_samples) == (90.0, 320)
    assert {s: names[0] for s, names in musdb.metrics.per_source.items()} == {s: f"sdr_{s}" for s in musdb.vocabulary()}
    beat = cards["gtzan-beat"]
    assert beat.metrics.main == "beat_f_measure_pooled" and beat.audio.train_chunk_seconds == 10
    assert cards["emo"].audio.crop_seconds == 30 and cards["emo"].audio.window_seconds == 5
    assert cards["gs"].metrics.group_rules == ["vote", "max-logit", "mean-logit", "mean-prob"]
    assert cards["nsynth-pitch"].vocabulary()[60] == "60"


def test_get_card_unknown_task_suggests():
    with pytest.raises(UnknownTaskError, match=r"unknown task 'gtzn'.*Did you mean 'gtzan'"):
        get_card("gtzn")


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda s: s + 'colour = "red"\n', "metrics.colour"),  # appended after [metrics]
        (lambda s: 'colour = "red"\n' + s, "colour"),
        (lambda s: s.replace("version = 1", 'version = "one"'), "version"),
        (lambda s: s.replace('name = "A user task"\n', ""), "name"),
        (lambda s: s + "[training]\nmax_epochs = 1.5\n", "training.max_epochs"),
        (lambda s: s + "[training]\nlearning_rate = [0.1]\n", "training.learning_rate"),
        (lambda s: s.replace('main = "accuracy"', 'main = "f1"'), "metrics.main"),
        (lambda s: s.replace('names = ["accuracy"]', 'names = ["accuracy", "bleu"]'), "metrics.names"),
        (lambda s: s.replace('prediction = "multiclass"', 'prediction = "ranking"'), "prediction"),
        (lambda s: s.replace('values = ["a", "b"]', 'values = ["a", 2]'), "labels.values[1]"),
    ],
)
def test_malformed_card_names_file_and_key(tmp_path, mutate, key):
    path = tmp_path / "bad.toml"
    path.write_text(mutate(MINIMAL.format(id="mine")))
    with pytest.raises(CardError) as err:
        load_card(path)
    msg = str(err.value)
    assert str(path) in msg
    assert re.search(rf"'{re.escape(key)}'", msg), msg


def test_invalid_toml_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('id = "x"\nversion = \n')
    with pytest.raises(CardError, match=re.escape(str(path)) + ".*not valid TOML"):
        load_card(path)


def test_user_cards_from_tasks_dir_and_env(tmp_path, monkeypatch):
    d = tmp_path / "cards"
    d.mkdir()
    (d / "mine.toml").write_text(MINIMAL.format(id="mine"))
    card = get_card("mine", tasks_dir=d)
    assert card.origin.startswith("dir:") and card.vocabulary() == ["a", "b"]
    assert card.training.max_epochs == 100  # defaults are the constrained protocol's
    monkeypatch.setenv("MARBLE_TASKS_DIR", str(d))
    assert "mine" in all_cards()


def test_one_card_folder_named_twice_is_one_card(tmp_path, monkeypatch):
    """Issue 23 item 17: $MARBLE_TASKS_DIR and --tasks-dir naming the same folder (one relative, one absolute, or
    through a link) find the same file twice: that is one card, not "already defined by" itself, through the CLI
    as through the API. Two different files with one id still clash."""
    from typer.testing import CliRunner

    from marble.cli import app

    d = tmp_path / "cards"
    d.mkdir()
    (d / "mine.toml").write_text(MINIMAL.format(id="mine"))
    (tmp_path / "link").symlink_to(d)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MARBLE_TASKS_DIR", str(d.resolve()))
    for rel in ("cards", "./cards/", "link"):
        assert all_cards(tasks_dir=rel)["mine"].origin.startswith("dir:")
    res = CliRunner().invoke(app, ["tasks", "--tasks-dir", "cards"])
    assert res.exit_code == 0, res.output
    assert "mine" in res.output and "already defined" not in res.output
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.toml").write_text(MINIMAL.format(id="mine"))
    with pytest.raises(CardError, match="cards/mine.toml: task id 'mine' is already defined by .*other/mine.toml"):
        all_cards(tasks_dir=other)


def test_user_card_may_not_shadow_builtin(tmp_path):
    d = tmp_path / "cards"
    d.mkdir()
    (d / "gtzan.toml").write_text(MINIMAL.format(id="gtzan"))
    with pytest.raises(CardError, match="'gtzan' is already defined by .*gtzan.toml"):
        all_cards(tasks_dir=d)


def test_card_from_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(textwrap.dedent(MINIMAL.format(id="mine")))
    assert get_card(str(path)).id == "mine"
