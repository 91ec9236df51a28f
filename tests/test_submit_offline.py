"""Issue 23 item 5: the submit -> site flow tried offline with one's own row. ``marble submit --init-info`` writes a
model.json template filled from the results (a weight-free encoder gets ``parameters: 0``, which the leaderboard
accepts), and ``marble leaderboard build --results`` shows a results folder's models beside the leaderboard, marked
unofficial and left out of the tie groups."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import marble
from marble.cli import app
from marble.leaderboard.repo import model_json_errors
from marble.testing.fixtures import write_gtzan
from tests.leaderboard_fixtures import GIT_ENV, make_leaderboard, model_info


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch, tmp_path):
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture(scope="module")
def local_results(tmp_path_factory):
    """A real (reduced, partial) handcrafted result of gtzan, as a new user's first run leaves it."""
    root = tmp_path_factory.mktemp("offline")
    write_gtzan(root / "data", per_split=2, seconds=1.5)
    marble.evaluate("handcrafted", tasks="gtzan", data_dir=root / "data", cache_dir=root / "cache",
                    results_dir=root / "results", allow_partial=True, device="cpu", max_epochs=2, lrs="1e-3",
                    num_workers=0)
    return root / "results"


def test_zero_parameters_are_accepted_for_a_weight_free_encoder():
    assert model_json_errors(model_info("handcrafted", parameters=0)) == []
    assert model_json_errors(model_info("x", parameters=-1)) == [
        "field 'parameters': -1 must be 0 or more (number of encoder parameters; 0 for a weight-free encoder such "
        "as handcrafted)"]
    assert model_json_errors(model_info("x", sample_rate=0))[0].startswith("field 'sample_rate': 0 must be positive")


def test_init_info_writes_a_template_from_the_results(local_results, tmp_path):
    res = CliRunner().invoke(app, ["submit", "--results-dir", str(local_results), "--model", "handcrafted",
                                   "--init-info"])
    assert res.exit_code == 0, res.output
    path = local_results / "handcrafted" / "model.json"
    assert f"wrote {path}; fill in link, license (null now), then submit" in res.output
    info = json.loads(path.read_text())
    result = json.loads((local_results / "handcrafted" / "gtzan" / "constrained.json").read_text())
    assert info["name"] == result["model"] == "handcrafted" and info["track"] == "constrained"
    assert info["parameters"] == 0 and info["weights_public"] is True and info["source"] == "ours"
    assert info["sample_rate"] == result["manifest"]["encoder"]["sample_rate"] == 24000
    assert info["link"] is None and info["license"] is None
    # once the two facts are filled in, it is a valid model.json
    assert model_json_errors({**info, "link": "https://example.org", "license": "MIT"}) == []
    # an existing model.json is never overwritten
    again = CliRunner().invoke(app, ["submit", "--results-dir", str(local_results), "--model", "handcrafted",
                                     "--init-info"])
    assert again.exit_code != 0 and "already exists" in str(again.exception)
    path.unlink()
    # no --to and no --init-info: one clear error
    res = CliRunner().invoke(app, ["submit", "--results-dir", str(local_results), "--model", "handcrafted"])
    assert res.exit_code != 0 and "--to: missing" in str(res.exception)


def test_leaderboard_build_shows_local_results_marked_unofficial(local_results, tmp_path):
    clone, _ = make_leaderboard(tmp_path)
    res = CliRunner().invoke(app, ["leaderboard", "build", str(clone), "--out", str(tmp_path / "site"),
                                   "--results", str(local_results)])
    assert res.exit_code == 0, res.output
    assert "local rows from" in res.output
    index = (tmp_path / "site" / "index.html").read_text()
    rows = re.findall(r'<tr class="([a-z]+)"[^>]*data-entry="([^"]+)">(.*?)</tr>', index)
    local = [r for r in rows if r[0] == "local"]
    assert len(local) == 1 and local[0][1] == "local--handcrafted"
    assert ">local (unofficial)<" in local[0][2] and "unofficial</span>" in local[0][2]
    result = json.loads((local_results / "handcrafted" / "gtzan" / "constrained.json").read_text())
    gtzan = re.search(r'data-task="gtzan" data-value="([^"]*)"[^>]*>([^<]*)(.*?)</td>', local[0][2])
    assert float(gtzan.group(1)) == pytest.approx(result["test"]["accuracy"] * 100)
    assert '<span title="reduced protocol">*</span>' in gtzan.group(3)  # a reduced, partial run is marked
    assert 'id="local-note"' in index and str(local_results) in index
    assert len([r for r in rows if r[0] == "reported"]) == 10  # the leaderboard's own rows are all there
    page = (tmp_path / "site" / "models" / "local--handcrafted.html").read_text()
    assert "Unofficial" in page and "not on the leaderboard" in page
    # without --results the site is the leaderboard alone
    res = CliRunner().invoke(app, ["leaderboard", "build", str(clone), "--out", str(tmp_path / "site2")])
    assert res.exit_code == 0 and 'class="local"' not in (tmp_path / "site2" / "index.html").read_text()
