"""`marble probe`/`run`/`extract` check what they can before any work (issue 23, items 3, 15, 18): every task's
cache, the model's spelling (with "did you mean"), the optional packages a task needs; and `marble probe` never
replaces an equal or complete result without saying so, and prints where each result went."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from marble.cli import app
from marble.registry import get_card

from probe_helpers import synth_split, write_cache

MODEL = "toy/enc-v1"


def _gtzan_cache(tmp_path, S=4, n=(60, 30, 30)):
    rng = np.random.default_rng(0)
    splits = {s: synth_split(k, 10, S, 16, rng, prefix=s[0], signal_state=S - 1) for s, k in zip(("train", "valid", "test"), n)}
    write_cache(tmp_path / "cache", MODEL, get_card("gtzan"), splits)


def _probe(tmp_path, *args):
    return CliRunner().invoke(app, ["probe", "--model", MODEL, "--cache-dir", str(tmp_path / "cache"),
                                    "--results-dir", str(tmp_path / "res"), *args])


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_probe_checks_every_task_before_any_work(tmp_path):
    """gtzan has a cache, emo none: nothing runs (no sweep, no result for gtzan), one error names emo."""
    _gtzan_cache(tmp_path)
    r = _probe(tmp_path, "--tasks", "gtzan,emo", "--max-epochs", "2", "--layers", "3")
    assert r.exit_code != 0
    assert "no feature cache for model 'toy/enc-v1' and task 'emo'" in _one_line(str(r.exception) + r.output)
    assert "sweep" not in r.output
    assert not (tmp_path / "res").exists()


def test_probe_keeps_an_equal_result_says_when_it_replaces_and_prints_paths(tmp_path):
    _gtzan_cache(tmp_path)
    out = tmp_path / "res" / "toy__enc-v1" / "gtzan" / "constrained.json"
    r = _probe(tmp_path, "--task", "gtzan", "--max-epochs", "2", "--layers", "3")
    assert r.exit_code == 0, r.output
    assert f"gtzan: result written to {out}" in _one_line(r.output)
    before = out.read_bytes()
    r = _probe(tmp_path, "--task", "gtzan", "--max-epochs", "2", "--layers", "3")  # the same request: kept
    assert r.exit_code == 0, r.output
    assert f"gtzan: result kept, {out} (same settings and cache" in _one_line(r.output)
    assert "sweep" not in r.output and out.read_bytes() == before
    r = _probe(tmp_path, "--task", "gtzan", "--max-epochs", "3", "--layers", "3")  # another reduced run: said
    assert r.exit_code == 0, r.output
    assert f"gtzan: replacing {out} (its run was reduced: max epochs 2 (card: 100))" in _one_line(r.output)
    assert json.loads(out.read_text())["training"]["max_epochs"] == 3


TINY_CARD = """id = "tiny"
version = 1
protocol = "user-test"
name = "A task whose full protocol takes a second"
dataset = "folder"
prediction = "multiclass"

[source]
subdir = "tiny"
metadata = "metadata.csv"

[labels]
values = ["a", "b", "c", "d"]

[splits]
source = "metadata.csv"

[training]
loss = "cross-entropy"
learning_rates = [1e-3]
max_epochs = 3

[metrics]
main = "accuracy"
names = ["accuracy"]
"""


def test_probe_never_replaces_a_complete_result_silently(tmp_path):
    tasks = tmp_path / "cards"
    tasks.mkdir()
    (tasks / "tiny.toml").write_text(TINY_CARD)
    rng = np.random.default_rng(0)
    write_cache(tmp_path / "cache", MODEL, get_card("tiny", tasks), {
        s: synth_split(k, 4, 2, 8, rng, prefix=s[0], signal_state=1) for s, k in (("train", 24), ("valid", 12), ("test", 12))})
    out = tmp_path / "res" / "toy__enc-v1" / "tiny" / "constrained.json"
    r = _probe(tmp_path, "--task", "tiny", "--tasks-dir", str(tasks))  # the card's full protocol: a complete result
    assert r.exit_code == 0, r.output
    before = out.read_bytes()
    r = _probe(tmp_path, "--task", "tiny", "--tasks-dir", str(tasks), "--max-epochs", "2")
    assert r.exit_code != 0
    msg = _one_line(str(r.exception))
    assert f"{out}: holds a complete result of tiny" in msg and "--name NAME" in msg and "--fresh" in msg, msg
    assert out.read_bytes() == before and "sweep" not in r.output
    r = _probe(tmp_path, "--task", "tiny", "--tasks-dir", str(tasks), "--max-epochs", "2", "--name", "quick")
    assert r.exit_code == 0, r.output  # beside it
    assert (tmp_path / "res" / "quick" / "tiny" / "constrained.json").is_file() and out.read_bytes() == before
    r = _probe(tmp_path, "--task", "tiny", "--tasks-dir", str(tasks), "--max-epochs", "2", "--fresh")
    assert r.exit_code == 0, r.output  # asked for
    assert f"tiny: replacing {out} (--fresh)" in _one_line(r.output) and out.read_bytes() != before


@pytest.mark.parametrize("cmd, spelling, suggestion", [
    ("probe", "handcraftd", "Did you mean 'handcrafted'?"),
    ("probe", "MERT-v1-95m", "Did you mean 'm-a-p/MERT-v1-95M'?"),
    ("run", "m-a-p/MERT-v1-95m", "Did you mean 'm-a-p/MERT-v1-95M'?"),
    ("extract", "handcraftd", "Did you mean 'handcrafted'?"),
    ("probe", "toy/enc-V1", "Did you mean 'toy/enc-v1'?"),  # a case slip of a cached model
])
def test_model_typos_fail_first_with_did_you_mean(tmp_path, cmd, spelling, suggestion):
    """Before any progress bar or data check (the data folder does not even exist)."""
    _gtzan_cache(tmp_path)
    r = CliRunner().invoke(app, [cmd, "--model", spelling, "--task", "gtzan", "--cache-dir", str(tmp_path / "cache"),
                                 *(["--data-dir", str(tmp_path / "no-data")] if cmd != "probe" else [])])
    assert r.exit_code != 0
    msg = _one_line(str(r.exception))
    assert f"unknown model {spelling!r}" in msg and suggestion in msg, msg
    assert "sweep" not in r.output and "found 0" not in msg


def test_task_case_slip_gets_did_you_mean():
    r = CliRunner().invoke(app, ["probe", "--model", "handcrafted", "--task", "GTZAN"])
    assert "unknown task 'GTZAN'. Did you mean 'gtzan'?" in _one_line(str(r.exception) + r.output)


def test_a_task_missing_its_optional_package_fails_before_any_work(tmp_path, monkeypatch):
    """musdb scores with museval (the `separation` extra): without it, probe and run stop at once, naming the extra,
    instead of failing at scoring after training (a module set to None in sys.modules is how Python hides one)."""
    monkeypatch.setitem(sys.modules, "museval", None)
    for cmd in (["probe", "--model", MODEL, "--tasks", "gtzan,musdb", "--cache-dir", str(tmp_path / "cache")],
                ["run", "--model", "handcrafted", "--tasks", "musdb", "--data-dir", str(tmp_path / "no-data")]):
        r = CliRunner().invoke(app, cmd)
        msg = _one_line(str(r.exception))
        assert "task musdb needs museval (metric museval_sdr_vocals" in msg, msg
        assert "pip install 'marble-benchmark[separation]'" in msg


def test_tasks_table_names_the_extra_each_task_needs():
    r = CliRunner().invoke(app, ["tasks"])
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): line for line in r.output.splitlines() if line.count("│") > 3}
    assert "separation" in rows["musdb"] and "separation" not in rows["gtzan"]


def test_probe_on_a_cache_whose_files_were_all_skipped_is_one_error_line(tmp_path):
    """Before: `ValueError: torch.cat(): expected a non-empty list of Tensors` from deep inside the sweep."""
    import os
    from pathlib import Path

    from marble.testing.fixtures import write_folder_dataset

    cards = write_folder_dataset(tmp_path / "data", per_split=2, seconds=1.0, task_id="notes").parent
    for f in (tmp_path / "data" / "mydata" / "audio").iterdir():
        f.write_bytes(os.urandom(200))  # not audio: every file is skipped ("cannot decode")
    plugin = str(Path(__file__).parent / "extract_plugin.py") + ":ToyEncoder"
    common = ["--model", plugin, "--task", "notes", "--tasks-dir", str(cards), "--cache-dir", str(tmp_path / "cache")]
    r = CliRunner().invoke(app, ["extract", *common, "--data-dir", str(tmp_path / "data"), "--num-workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    for cmd in (["probe", *common], ["run", *common, "--data-dir", str(tmp_path / "data")]):
        r = CliRunner().invoke(app, [*cmd, "--results-dir", str(tmp_path / "res"), "--max-epochs", "2"])
        msg = _one_line(str(r.exception))
        assert "split 'train' holds no features: all 2 of its files were skipped at extraction" in msg, msg
        assert "--overwrite" in msg and not isinstance(r.exception, ValueError)


def test_extract_says_where_the_cache_goes_when_no_folder_was_named(tmp_path, monkeypatch):
    """Run from another folder: no ./cache, no --cache-dir, no $MARBLE_CACHE_DIR. Before: a new ./cache, silently.
    After: where the features go, and the cache of this model found in the folder above."""
    from marble.testing.fixtures import write_gtzan

    write_gtzan(tmp_path / "data", per_split=1, seconds=1.0)
    (tmp_path / "proj" / "cache" / "handcrafted" / "gtzan").mkdir(parents=True)
    (tmp_path / "proj" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "proj" / "sub")
    monkeypatch.delenv("MARBLE_CACHE_DIR", raising=False)
    args = ["extract", "--model", "handcrafted", "--task", "gtzan", "--data-dir", str(tmp_path / "data"),
            "--allow-partial", "--num-workers", "0", "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    out = _one_line(r.output)
    assert (f"no ./cache here and neither --cache-dir nor $MARBLE_CACHE_DIR is set: the features will be written to "
            f"{(tmp_path / 'proj' / 'sub' / 'cache').resolve()}") in out, out
    assert f"caches of this model already exist in {(tmp_path / 'proj' / 'cache' / 'handcrafted').resolve()}" in out
    r = CliRunner().invoke(app, args)  # ./cache exists now: nothing to say
    assert r.exit_code == 0 and "no ./cache here" not in r.output


def test_musdb_stems_without_ffmpeg_fail_before_any_work(tmp_path, monkeypatch):
    """The .stem.mp4 layout decodes through stempeg and the ffmpeg program: without ffmpeg on the PATH, probe and
    run say so before any work (the wav layout needs neither)."""
    from marble.datasets import get_dataset

    card = get_card("musdb")
    root = tmp_path / "data" / card.source.subdir
    valid = get_dataset(card, tmp_path / "data").validation_names()[0]
    for rel in ("train/Some Artist - Train Song.stem.mp4", f"train/{valid}.stem.mp4", "test/Other - Test Song.stem.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")  # listing only looks at the names
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for cmd in (["probe", "--model", "handcrafted", "--task", "musdb"],
                ["run", "--model", "handcrafted", "--tasks", "musdb", "--allow-partial"]):
        r = CliRunner().invoke(app, [*cmd, "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "c"),
                                     "--results-dir", str(tmp_path / "res")])
        msg = _one_line(str(r.exception))
        assert "task musdb needs ffmpeg (decoding .stem.mp4 files (through stempeg)): install the ffmpeg program" in msg, msg
        assert not (tmp_path / "res").exists()
