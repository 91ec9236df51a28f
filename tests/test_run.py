"""`marble run`: two fixture tasks end to end with one encoder load, then again (nothing recomputed), a task
without data reported (or fatal with --strict), a lost result re-probed from the cache without the encoder."""

from __future__ import annotations

import re
import subprocess
import sys

from typer.testing import CliRunner

from marble.cli import app
from marble.encoders.identity import model_cache_dir
from marble.results import read_result
from marble.testing.fixtures import write_gs, write_gtzan

QUICK = ["--max-epochs", "2", "--lrs", "1e-3", "--num-workers", "0", "-q"]


def _ok(res):
    assert res.exit_code == 0, f"exit {res.exit_code}\n{res.output}\n{res.exception!r}"
    return res


def _snapshot(root):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def test_run_two_tasks_then_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_gtzan(tmp_path / "data", per_split=2, seconds=1.5)
    write_gs(tmp_path / "data", per_split=2)
    runner = CliRunner()
    args = ["run", "--model", "handcrafted", "--tasks", "gtzan,gs,mtt", "--allow-partial", *QUICK]
    first = _ok(runner.invoke(app, args))
    assert "2 computed, 0 probed from cache, 0 kept, 1 skipped (data missing); encoder loaded 1 time(s)" in first.output
    assert "data missing, skipped (reasons above): mtt;" in first.output
    assert first.output.count("split 'train': data incomplete under") == 1  # each missing task's reason once
    assert "expected layout" not in first.output  # one line per missing task; the layout: `marble data check TASK`
    for task in ("gtzan", "gs"):
        r = read_result(tmp_path / "results" / "handcrafted" / task / "constrained.json")
        assert r["model"] == "handcrafted" and {row["lr"] for row in r["sweep"]} == {1e-3}
        assert (model_cache_dir("cache", "handcrafted", task) / "manifest.json").is_file()
    # the leaderboard rows close the output: one row, both tasks
    rows = [line for line in first.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Model") and "| gs |" in rows[0] and "| gtzan |" in rows[0]
    assert len(rows) == 3 and rows[-1].startswith("| handcrafted")
    # one decimal, as the terminal table and the MARBLE tables (issue 23 item 12: it was 2 here, 1 there)
    cells = [c.strip() for c in rows[-1].strip("|").split("|")][2:]
    assert all(re.fullmatch(r"-|\d+\.\d[*†]*", c) for c in cells), rows[-1]

    before = _snapshot(tmp_path / "results") | _snapshot(tmp_path / "cache")
    again = _ok(runner.invoke(app, args))
    assert "0 computed, 0 probed from cache, 2 kept, 1 skipped (data missing); encoder loaded 0 time(s)" in again.output
    assert _snapshot(tmp_path / "results") | _snapshot(tmp_path / "cache") == before  # not one file rewritten

    (tmp_path / "results" / "handcrafted" / "gs" / "constrained.json").unlink()
    third = _ok(runner.invoke(app, args))
    assert "0 computed, 1 probed from cache, 1 kept" in third.output and "encoder loaded 0 time(s)" in third.output
    assert read_result(tmp_path / "results" / "handcrafted" / "gs" / "constrained.json")["task"] == "gs"

    # other sweep settings: the kept result is not what is asked for, so it is recomputed (from the cache)
    other = [a if a != "1e-3" else "5e-3" for a in args]
    fourth = _ok(runner.invoke(app, other[:4] + ["gtzan"] + other[5:]))
    assert "0 computed, 1 probed from cache, 0 kept" in fourth.output and "encoder loaded 0 time(s)" in fourth.output
    r = read_result(tmp_path / "results" / "handcrafted" / "gtzan" / "constrained.json")
    assert {row["lr"] for row in r["sweep"]} == {5e-3}

    # another seed: recomputed, and the result records the seed the run used (training.seed was the card's
    # 1234 whatever --seed said, so a seed-7 result was later kept for a default-seed request)
    seeded = other[:4] + ["gtzan"] + other[5:] + ["--seed", "7"]
    fifth = _ok(runner.invoke(app, seeded))
    assert "0 computed, 1 probed from cache, 0 kept" in fifth.output
    r = read_result(tmp_path / "results" / "handcrafted" / "gtzan" / "constrained.json")
    assert r["training"]["seed"] == r["manifest"]["seed"] == 7
    assert "0 computed, 0 probed from cache, 1 kept" in _ok(runner.invoke(app, seeded)).output
    sixth = _ok(runner.invoke(app, other[:4] + ["gtzan"] + other[5:]))  # back to the default seed: recomputed
    assert "0 computed, 1 probed from cache, 0 kept" in sixth.output
    assert read_result(tmp_path / "results" / "handcrafted" / "gtzan" / "constrained.json")["training"]["seed"] == 1234


def test_run_strict_and_no_data_are_errors(tmp_path):
    write_gtzan(tmp_path / "data", per_split=2, seconds=1.5)
    base = [sys.executable, "-m", "marble", "run", "--model", "handcrafted", "--data-dir", str(tmp_path / "data"),
            "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--allow-partial"]
    r = subprocess.run(base + ["--tasks", "gtzan,mtt", "--strict"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "error: data missing for mtt:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "c").exists()  # nothing was started
    r = subprocess.run(base + ["--tasks", "mtt"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "error: no task has its data: mtt:" in r.stderr, r.stderr


def test_run_help_has_examples():
    out = CliRunner().invoke(app, ["run", "--help"]).output
    assert "Examples" in out and "--strict" in out and "MARBLE_CACHE_DIR" in out


def test_run_frame_task_uses_the_one_encoder(tmp_path, monkeypatch):
    """gtzan-beat (a frame task: its probe runs the loaded encoder) beside a clip task: still one load."""
    from marble.testing.fixtures import write_gtzan_beat

    monkeypatch.chdir(tmp_path)
    write_gtzan_beat(tmp_path / "data", per_split=2)
    args = ["run", "--model", "handcrafted", "--tasks", "gtzan-beat,gtzan", "--allow-partial", "--layers", "0,weighted",
            *QUICK]
    first = _ok(CliRunner().invoke(app, args))
    assert "2 computed, 0 probed from cache, 0 kept, 0 skipped (data missing); encoder loaded 1 time(s)" in first.output
    r = read_result(tmp_path / "results" / "handcrafted" / "gtzan-beat" / "constrained.json")
    assert {row["layer"] for row in r["sweep"]} == {0, "weighted"}
    again = _ok(CliRunner().invoke(app, args))
    assert "2 kept" in again.output and "encoder loaded 0 time(s)" in again.output


def test_run_semi_constrained_treats_a_frame_task_like_a_clip_task(tmp_path, monkeypatch):
    """`marble run --track semi-constrained --config` probes gtzan-beat and musdb with the config's head and grid,
    as it does gtzan (both were refused for frame tasks; musdb's head is its LSTM, one hidden size a layer)."""
    from marble.testing.fixtures import write_gtzan_beat, write_musdb

    monkeypatch.chdir(tmp_path)
    write_gtzan_beat(tmp_path / "data", per_split=2)
    write_musdb(tmp_path / "data", per_split=1, seconds=2.0)
    cfg = tmp_path / "head.toml"
    cfg.write_text("[head]\nhidden = [16]\n\n[training]\nlearning_rates = [3e-3]\nmax_epochs = 1\nlayers = [0]\n")
    args = ["run", "--model", "handcrafted", "--tasks", "gtzan-beat,gtzan,musdb", "--allow-partial", "--track",
            "semi-constrained", "--config", str(cfg), "--num-workers", "0", "-q"]
    _ok(CliRunner().invoke(app, args))
    for task in ("gtzan-beat", "gtzan", "musdb"):
        r = read_result(tmp_path / "results" / "handcrafted" / task / "semi-constrained.json")
        assert r["head"]["hidden"] == ([16] if task != "musdb" else 16), task
        assert r["training"]["learning_rates"] == [3e-3], task
        assert [(row["layer"], row["lr"]) for row in r["sweep"]] == [(0, 3e-3)], task
    assert r["head"]["kind"] == "openunmix" and r["head"]["layers"] == 1


def test_run_seeds_for_frame_and_clip_tasks_alike(tmp_path, monkeypatch):
    """`marble run --seeds 2` repeats the selected configuration of gtzan-beat as of gtzan (mean, std, CI in each
    result; `marble run` had no --seeds); a rerun keeps both, a rerun asking for another seed count recomputes them;
    the beat sweep shows its ETA and the line of its final scoring (musdb's seeds: tests/test_musdb_sweep.py)."""
    from marble.testing.fixtures import write_gtzan_beat

    monkeypatch.chdir(tmp_path)
    write_gtzan_beat(tmp_path / "data", per_split=2, seconds=4.0)
    args = ["run", "--model", "handcrafted", "--tasks", "gtzan-beat,gtzan", "--allow-partial", "--layers", "0",
            "--max-epochs", "2", "--lrs", "1e-3", "--num-workers", "0", "--seeds", "2"]
    first = _ok(CliRunner().invoke(app, args))
    assert "2 computed" in first.output
    assert "gtzan-beat sweep: 2 epochs (at most; " in first.output and "ETA <=" in first.output
    assert "gtzan-beat: every probe's best checkpoint on valid and test: 2/2 splits in " in first.output
    for task in ("gtzan-beat", "gtzan"):
        r = read_result(tmp_path / "results" / "handcrafted" / task / "constrained.json")
        assert r["seeds"]["n"] == 2 and r["seeds"]["seeds"] == [1234, 1235], task
        assert r["training"]["seed_repeat"] == "selected" and r["seeds"]["values"][0] == r["test"][r["main_metric"]]
    again = _ok(CliRunner().invoke(app, [*args, "-q"]))
    assert "0 computed, 0 probed from cache, 2 kept" in again.output
    fewer = _ok(CliRunner().invoke(app, [*args[:-2], "-q"]))  # one seed asked: not what the kept results hold
    assert "0 kept" in fewer.output
    assert read_result(tmp_path / "results" / "handcrafted" / "gtzan-beat" / "constrained.json").get("seeds") is None
