"""Consistent settings: MARBLE_DATA_DIR / MARBLE_CACHE_DIR / MARBLE_RESULTS_DIR honoured by every command and
shown in --help, `marble --version`, probe's device default, the tracks probe does not run as `error:` lines,
several tasks in one --tasks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from marble import __version__, settings
from marble.cli import app
from marble.encoders.identity import model_cache_dir
from marble.results import read_result
from marble.testing.fixtures import write_gtzan, write_gs


def _ok(res):
    assert res.exit_code == 0, f"exit {res.exit_code}\n{res.output}\n{res.exception!r}"
    return res


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "marble", *args], capture_output=True, text=True, timeout=300, **kw)


def test_settings_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(settings.CACHE_ENV, raising=False)
    assert settings.cache_dir() == settings.cache_dir(None) and str(settings.cache_dir()) == "cache"
    monkeypatch.setenv(settings.CACHE_ENV, str(tmp_path / "env"))
    assert settings.cache_dir() == tmp_path / "env"
    assert settings.cache_dir(tmp_path / "arg") == tmp_path / "arg"  # an explicit folder wins


def test_environment_alone_is_enough(tmp_path, monkeypatch):
    """extract, probe, leaderboard with no folder option: the three variables say where everything is."""
    monkeypatch.chdir(tmp_path)
    write_gtzan(tmp_path / "d", per_split=2, seconds=1.5)
    write_gs(tmp_path / "d", per_split=2)
    env = {settings.DATA_ENV: str(tmp_path / "d"), settings.CACHE_ENV: str(tmp_path / "c"),
           settings.RESULTS_ENV: str(tmp_path / "r")}
    runner = CliRunner(env=env)
    _ok(runner.invoke(app, ["extract", "--model", "handcrafted", "--tasks", "gtzan,gs", "--allow-partial",
                            "--num-workers", "0", "-q"]))
    for task in ("gtzan", "gs"):
        assert (model_cache_dir(tmp_path / "c", "handcrafted", task) / "manifest.json").is_file()
    _ok(runner.invoke(app, ["probe", "--model", "handcrafted", "--tasks", "gtzan,gs", "--max-epochs", "1",
                            "--layers", "0", "--lrs", "1e-3"]))
    for task in ("gtzan", "gs"):
        assert read_result(tmp_path / "r" / "handcrafted" / task / "constrained.json")["task"] == task
    out = _ok(runner.invoke(app, ["leaderboard", "--format", "csv", "--no-reported"])).output
    assert out.splitlines()[1].startswith("handcrafted,")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()


def test_marble_cache_dir_alone_is_enough_for_probe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in (settings.DATA_ENV, settings.RESULTS_ENV):
        monkeypatch.delenv(var, raising=False)
    write_gtzan(tmp_path / "data", per_split=2, seconds=1.5)  # ./data: the default data folder
    _ok(CliRunner().invoke(app, ["extract", "--model", "handcrafted", "--task", "gtzan", "--cache-dir",
                                 str(tmp_path / "elsewhere"), "--allow-partial", "--num-workers", "0", "-q"]))
    runner = CliRunner(env={settings.CACHE_ENV: str(tmp_path / "elsewhere")})
    _ok(runner.invoke(app, ["probe", "--model", "handcrafted", "--task", "gtzan", "--max-epochs", "1", "--layers", "0",
                            "--lrs", "1e-3"]))
    assert read_result(tmp_path / "results" / "handcrafted" / "gtzan" / "constrained.json")["model"] == "handcrafted"


@pytest.mark.parametrize("command, variables", [
    (["extract"], ["MARBLE_DATA_DIR", "MARBLE_CACHE_DIR"]),
    (["probe"], ["MARBLE_DATA_DIR", "MARBLE_CACHE_DIR", "MARBLE_RESULTS_DIR"]),
    (["leaderboard"], ["MARBLE_RESULTS_DIR"]),
    (["data", "check"], ["MARBLE_DATA_DIR"]),
    (["tasks"], ["MARBLE_DATA_DIR"]),
])
def test_help_names_the_environment_variables(command, variables):
    out = " ".join(CliRunner().invoke(app, [*command, "--help"], terminal_width=200).output.split())
    for v in variables:
        assert f"env var: {v}" in out, out


def test_root_help_and_version():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"marble {__version__}"
    out = " ".join(_cli("--help").stdout.split())
    assert "MARBLE_CACHE_DIR" in out and "Exit codes" in out


def test_probe_device_defaults_to_auto():
    out = " ".join(CliRunner().invoke(app, ["probe", "--help"], terminal_width=200).output.split())
    assert "--device <str> auto" in out and "[default: auto]" in out


@pytest.mark.parametrize("args, expected", [
    (["--track", "semi-constrained"], "--track semi-constrained needs --config head.toml"),
    (["--track", "unconstrained"], "--track unconstrained: fine-tuning reads audio, not the feature cache; run `marble finetune"),
    (["--track", "fancy"], "--track 'fancy': choose constrained or semi-constrained"),
])
def test_tracks_probe_does_not_run_are_error_lines(tmp_path, args, expected):
    r = _cli("probe", "--model", "handcrafted", "--task", "gtzan", "--cache-dir", str(tmp_path), *args)
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out
    assert f"error: {expected}" in " ".join(out.split())
