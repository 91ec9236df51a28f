"""Trust, round 3 (issue 22), submissions and results: a leaderboard entry never makes a command import code it
brings, model names and revisions are labels (never paths or plug-in specs), result files are bounded and
committed as canonical JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from marble.results import write_result
from tests.leaderboard_fixtures import complete_result, git, make_leaderboard, model_info, snapshot, write_model
from tests.test_submit import _git_identity  # noqa: F401  (autouse: a git identity and HOME per test)
from tests.test_trust import _one_error_line

HERE = Path(__file__).parent
EVIL = "models/evil@v1/payload.py:Evil"
PAYLOAD = '''
import pathlib
pathlib.Path({marker!r}).write_text("the submission's code ran")

from marble.encoders.handcrafted import HandcraftedEncoder as Evil
'''


def _cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "marble", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def _pull_request(tmp_path, upstream, *, name: str, marker: Path) -> None:
    """A contributor's branch ``pr`` on the upstream: an entry for a frame task (whose probe builds its
    encoder) plus a Python file the entry names as its model."""
    work = tmp_path / "contributor"
    git(tmp_path, "clone", "-q", str(upstream), str(work))
    entry = work / "models" / "evil@v1"
    (entry / "gtzan-beat").mkdir(parents=True)
    (entry / "payload.py").write_text(PAYLOAD.format(marker=str(marker)))
    (entry / "model.json").write_text(json.dumps(model_info(name)))
    write_result(entry / "gtzan-beat" / "constrained.json", complete_result("gtzan-beat", name))
    git(work, "checkout", "-q", "-b", "pr")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "Add evil@v1")
    git(work, "push", "-q", "origin", "pr")


def test_reproduce_never_loads_a_model_the_entry_names(tmp_path):
    """Issue 22 item 1: a pull request whose model.json names ``models/evil@v1/payload.py:Evil``; the reviewer
    checks it out and runs ``marble reproduce`` in the clone. Before the fix the frame-task probe built the
    encoder from that name and imported the file (the marker appeared)."""
    clone, upstream = make_leaderboard(tmp_path)
    marker = tmp_path / "PWNED"
    _pull_request(tmp_path, upstream, name=EVIL, marker=marker)
    git(clone, "fetch", "-q", "origin", "pr")
    git(clone, "checkout", "-q", "-b", "review", "FETCH_HEAD")

    r = _cli("reproduce", "models/evil@v1", "--task", "gtzan-beat", "--device", "cpu", "--cache-dir",
             tmp_path / "cache", "--data-dir", tmp_path / "data", cwd=clone)
    assert not marker.exists(), "the submission's code ran"
    assert r.returncode == 2 and "--model" in r.stderr, r.stderr  # the reviewer names the model, always
    r = _cli("reproduce", "models/evil@v1", "--model", "handcrafted", "--task", "gtzan-beat", "--device", "cpu",
             "--cache-dir", tmp_path / "cache", "--data-dir", tmp_path / "data", cwd=clone)
    _one_error_line(r, "model.json: field 'name'", "is a plug-in spec (file.py:Class), not a model name")
    r = _cli("leaderboard", "build", clone, "--out", tmp_path / "site", cwd=clone)
    _one_error_line(r, "field 'name'", "is a plug-in spec")
    assert not marker.exists(), "the submission's code ran"


@pytest.mark.parametrize("name, what", [
    (EVIL, "a plug-in spec"), ("evil.py:Evil", "a plug-in spec"), ("../models/x", "a path"),
    ("/abs/checkpoint", "a path"), ("models/evil@v1/ckpt", "a path"), ("./ckpt", "a path"),
])
def test_submit_and_build_refuse_a_model_name_that_is_a_path_or_a_plugin_spec(tmp_path, name, what):
    from marble.leaderboard.repo import RepoError, load_repo
    from marble.leaderboard.submit import SubmissionRefused, submit

    clone, _ = make_leaderboard(tmp_path)
    write_model(tmp_path / "res", name, ["gtzan"])
    before = snapshot(clone)
    with pytest.raises(SubmissionRefused, match=f"field 'name': .* is {what}"):
        submit(tmp_path / "res", name, clone)
    assert snapshot(clone) == before
    entry = clone / "models" / "x@v1"
    (entry / "gtzan").mkdir(parents=True)
    write_result(entry / "gtzan" / "constrained.json", complete_result("gtzan", name))
    (entry / "model.json").write_text(json.dumps(model_info(name)))
    with pytest.raises(RepoError, match=f"field 'name': .* is {what}"):
        load_repo(clone)


def test_reproduce_checks_the_reviewers_model_against_the_submission(tmp_path):
    """The re-run must come from the submitted encoder: a cache of other weights under the reviewer's spec is
    an error row (exit 1), not a comparison."""
    sys.path.insert(0, str(HERE))
    from probe_helpers import synth_split, write_cache

    import numpy as np

    from marble.leaderboard.reproduce import encoder_mismatch
    from marble.registry import get_card

    rng = np.random.default_rng(0)
    card = get_card("gtzan")
    splits = {s: synth_split(n, 10, 4, 16, rng, prefix=s[0], strength=1.0) for s, n in
              (("train", 32), ("valid", 12), ("test", 12))}
    cache = write_cache(tmp_path / "cache", "lab/other", card, splits)
    m = json.loads((cache / "manifest.json").read_text())
    m["encoder"] = {"name": "lab/other", "weights_sha256": "cd" * 32, "num_states": 4, "dim": 16}
    (cache / "manifest.json").write_text(json.dumps(m))
    entry = tmp_path / "lb" / "models" / "lab__enc@v1"
    (entry / "gtzan").mkdir(parents=True)
    write_result(entry / "gtzan" / "constrained.json", complete_result("gtzan", "lab/enc", weights_sha256="ab" * 32))
    (entry / "model.json").write_text(json.dumps(model_info("lab/enc")))
    r = _cli("reproduce", entry, "--model", "lab/other", "--cache-dir", tmp_path / "cache", "--device", "cpu")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error: --model lab/other is not the submitted encoder (weights sha256 cdcdcdcdcdcd..., the submission " \
           "records abababababab...)" in r.stdout, r.stdout
    a = {"manifest": {"encoder": {"name": "x", "dim": 8}}}
    assert encoder_mismatch(a, {"manifest": {"encoder": {"name": "y", "dim": 8}}}) is None
    assert "dim" in encoder_mismatch(a, {"manifest": {"encoder": {"name": "x", "dim": 9}}})


@pytest.mark.parametrize("revision", ["../../x", "a..b", ".hidden", "v1/../x", "x.lock", "-v1"])
def test_a_revision_that_is_not_a_tag_is_refused_before_git(tmp_path, revision):
    """Issue 22 partial: a revision with '../' failed only at git's 'bad ref name' step."""
    from marble.leaderboard.submit import SubmissionRefused, submit

    clone, _ = make_leaderboard(tmp_path)
    write_model(tmp_path / "res", "lab/enc", ["gtzan"], info=model_info("lab/enc", revision=revision))
    before = snapshot(clone)
    with pytest.raises(SubmissionRefused, match=f"field 'revision': {revision!r} is not a revision tag"):
        submit(tmp_path / "res", "lab/enc", clone)
    assert snapshot(clone) == before
