"""The frame tasks through the real CLI with a tiny random MERT checkpoint (the handcrafted encoder
runs the same path in test_all_tasks): `marble extract` caches the whole valid/test tracks (and says
the training split is encoded on the fly), `marble probe` reads that cache, `marble leaderboard`
shows the result."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from marble.cli import app
from marble.demo import tiny_mert
from marble.results import read_result
from marble.testing import fixtures
from tests.test_pipeline import _ok


@pytest.mark.slow
@pytest.mark.parametrize("task", ["gtzan-beat", "musdb"])
def test_extract_then_probe_with_tiny_mert(tmp_path, task):
    data, cache, results = tmp_path / "data", tmp_path / "cache", tmp_path / "results"
    if task == "gtzan-beat":
        fixtures.write_gtzan_beat(data, per_split=2)
    else:
        fixtures.write_musdb(data, per_split=1, seconds=2.0)
    model = str(tiny_mert(tmp_path / "tiny-mert"))
    runner = CliRunner()
    out = _ok(runner.invoke(app, ["extract", "--model", model, "--task", task, "--data-dir", str(data),
                                  "--cache-dir", str(cache), "--allow-partial", "--num-workers", "0", "-q"]))
    folder = [p for p in cache.glob(f"*/{task}")]
    assert len(folder) == 1, list(cache.rglob("*"))
    manifest = json.loads((folder[0] / "manifest.json").read_text())
    assert manifest["states"] == "all" and sorted(manifest["splits"]) == ["test", "valid"]
    assert "encodes random" in out.output  # the train split is not cached, and the user is told why
    _ok(runner.invoke(app, ["probe", "--model", model, "--name", "tiny-mert", "--task", task, "--data-dir", str(data),
                            "--cache-dir", str(cache), "--results-dir", str(results), "--max-epochs", "1",
                            "--layers", "2", "--lrs", "1e-3", *(["--chunks-per-epoch", "4"] if task == "musdb" else [])]))
    r = read_result(results / "tiny-mert" / task / "constrained.json")
    assert r["training"]["eval_features"] == "frame cache"
    if task == "musdb":
        assert r["training"]["chunks_per_epoch"] == 4
    assert r["manifest"]["cache_manifest_sha256"] is not None
    lb = _ok(runner.invoke(app, ["leaderboard", "--results-dir", str(results), "--format", "csv", "--no-reported"]))
    assert "tiny-mert" in lb.output and task in lb.output
