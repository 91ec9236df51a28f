"""``marble submit`` against a real git repository (a bare upstream and a clone): a clean submission
lands as one commit on a new branch; each kind of bad submission is refused with the file and the
reason, and leaves the repository exactly as it was."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from marble.errors import MarbleError
from marble.leaderboard.repo import load_repo
from marble.leaderboard.submit import SubmissionRefused, submit
from marble.metrics import SCALE
from marble.metrics.aggregate import default_task_ids
from marble.registry import all_cards
from marble.results import result_path, write_result
from tests.leaderboard_fixtures import (GIT_ENV, complete_result, git, make_leaderboard, model_info, multiclass_outputs,
                                        musdb_outputs, snapshot, write_model)

MODEL = "lab/enc"
ALL = default_task_ids()


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch, tmp_path):
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HOME", str(tmp_path))


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "marble", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_clean_submission_lands_on_a_branch(tmp_path):
    clone, upstream = make_leaderboard(tmp_path)
    files = write_model(tmp_path / "res", MODEL, ALL, seeds=True)
    before = snapshot(clone)
    res = _cli("submit", "--results-dir", tmp_path / "res", "--model", MODEL, "--to", clone, "--push")
    assert res.returncode == 0, res.stderr
    branch = "submit/lab__enc@v1"
    assert f"branch {branch}" in res.stdout and "open a pull request" in res.stdout
    # one commit on top of main, holding exactly the model folder; the working tree and main untouched
    assert git(clone, "rev-list", "--count", f"main..{branch}") == "1"
    changed = git(clone, "diff", "--name-only", f"main...{branch}").splitlines()
    want = sorted([f"models/lab__enc@v1/{t}/constrained.json" for t in ALL] + ["models/lab__enc@v1/model.json"])
    assert sorted(changed) == want
    assert snapshot(clone)[2] == before[2] and git(clone, "rev-parse", "HEAD") == before[1]
    for t, f in files.items():  # byte-identical copies
        assert git(clone, "show", f"{branch}:models/lab__enc@v1/{t}/constrained.json") == f.read_text().strip()
    assert json.loads(git(clone, "show", f"{branch}:models/lab__enc@v1/model.json")) == model_info(MODEL)
    # pushed to the upstream: a maintainer merging it gives a repository that reads back valid
    assert git(upstream, "rev-parse", branch) == git(clone, "rev-parse", branch)
    expected = sum(sum(complete_result(t, MODEL)["test"][a] * SCALE[a] for a in all_cards()[t].metrics.aggregate)
                   / len(all_cards()[t].metrics.aggregate) for t in ALL) / len(ALL)
    assert f"MARBLE score {expected:.1f}" in res.stdout
    git(clone, "merge", "-q", "--ff-only", branch)
    _, entries = load_repo(clone)
    mine = [e for e in entries if e.id == "lab__enc@v1"]
    assert len(mine) == 1 and len(mine[0].results) == 14 and len(entries) == 11


def test_fewer_than_14_tasks_are_accepted_without_a_marble_score(tmp_path):
    clone, _ = make_leaderboard(tmp_path)
    write_model(tmp_path / "res", MODEL, ["gtzan", "emo"])
    sub = submit(tmp_path / "res", MODEL, clone)
    assert sub.marble_score is None and sub.tasks == ["emo", "gtzan"] and len(sub.missing_tasks) == 12
    assert "2 of 14 tasks, no MARBLE score" in sub.hint()
    assert "no MARBLE score" in git(clone, "log", "-1", "--format=%B", sub.branch)


def test_submission_carries_each_results_sidecars(tmp_path):
    """The files a result records travel with it, byte for byte: the test outputs and the shipped probe of a clip
    task, and of MUSDB (its per-track SDRs and its four source models in one probe file)."""
    from marble.results import read_result

    clone, _ = make_leaderboard(tmp_path)
    sdr = [[5.0 + i, 6.0 - i, 4.5, 3.0 + 0.5 * i] for i in range(4)]
    files = write_model(tmp_path / "res", MODEL, ["gtzan", "musdb"],
                        outputs={"gtzan": multiclass_outputs("gtzan", [True, False] * 5), "musdb": musdb_outputs(sdr)})
    sub = submit(tmp_path / "res", MODEL, clone)
    changed = git(clone, "diff", "--name-only", f"main...{sub.branch}").splitlines()
    folder = "models/lab__enc@v1"
    for task in ("gtzan", "musdb"):
        recs = read_result(files[task])["artifacts"]
        assert sorted(recs) == ["probe", "test_outputs"]
        for rec in recs.values():
            assert f"{folder}/{task}/{rec['file']}" in changed
            blob = subprocess.run(["git", "-C", str(clone), "show", f"{sub.branch}:{folder}/{task}/{rec['file']}"],
                                  capture_output=True, check=True).stdout
            assert blob == (files[task].parent / rec["file"]).read_bytes()


def _rewrite(path, change, *, seal=True):
    """Edit a result file: through the writer (re-sealed, as a determined forger would) or by hand."""
    r = json.loads(path.read_text())
    change(r)
    if seal:
        write_result(path, r, check=False)
    else:
        path.write_text(json.dumps(r))


def _set_test(r, name, value, row=True):
    r["test"][name] = value
    if row:
        next(s for s in r["sweep"] if (s["layer"], s["lr"]) == (2, 1e-3))["test"][name] = value


def _tamper_both_by_hand(p):
    _rewrite(p, lambda r: _set_test(r, "accuracy", 0.99), seal=False)


def _reduced(p):
    _rewrite(p, lambda r: (r["training"].update(max_epochs=3)))


def _schema(p):
    _rewrite(p, lambda r: r["selected"].update(layer="last"), seal=False)  # the writer refuses to write it


def _missing_manifest_field(p):
    _rewrite(p, lambda r: r["manifest"].pop("device"), seal=False)


def _unsealed(p):
    _rewrite(p, lambda r: r["manifest"].pop("content_sha256"), seal=False)


def _nan(p):
    _rewrite(p, lambda r: _set_test(r, "accuracy", math.nan))


def _out_of_range(p):
    _rewrite(p, lambda r: _set_test(r, "accuracy", 1.7))


def _partial_data(p):
    _rewrite(p, lambda r: r["data"]["splits"]["test"].update(
        scored=8, skipped=[{"file": "blues/blues.00001.wav", "reason": "unreadable"}] * 2))


# (what is wrong, how to make it, what the refusal must say: a fragment after the file name)
BAD_FILES = [
    ("tampered score, sweep row left", lambda p: _rewrite(p, lambda r: _set_test(r, "accuracy", 0.99, row=False)),
     "field 'test.accuracy': 0.99 differs from the selected sweep row"),
    ("tampered score with its sweep row, by hand", _tamper_both_by_hand,
     "field 'manifest.content_sha256': the file was edited after marble wrote it"),
    ("reduced protocol", _reduced, "not a complete constrained-track run"),
    ("unknown card version", lambda p: _rewrite(p, lambda r: r.update(task_version=7)),
     "field 'task_version': 7 but the task card"),
    ("schema violation", _schema, "field 'selected.layer'"),
    ("missing manifest field", _missing_manifest_field, "field 'manifest.device': missing required field"),
    ("unsealed (hand-made) file", _unsealed, "field 'manifest.content_sha256': missing"),
    ("NaN score", _nan, "nan is outside the range of accuracy"),
    ("out-of-range score", _out_of_range, "1.7 is outside the range of accuracy"),
    ("partial data", _partial_data, "not every file of the task was scored"),
]


def _refused(tmp_path, *fragments, model=MODEL, **kw) -> str:
    clone = tmp_path / "clone"
    before = snapshot(clone)
    with pytest.raises(SubmissionRefused) as ei:
        submit(tmp_path / "res", model, clone, **kw)
    msg = str(ei.value)
    for f in fragments:
        assert f in msg, msg
    assert "the leaderboard repository was not changed" in msg
    assert snapshot(clone) == before  # no branch, no commit, no object, no file
    return msg


@pytest.mark.parametrize("what, make, expected", BAD_FILES,
                         ids=[b[0] for b in BAD_FILES])
def test_bad_result_file_is_refused(tmp_path, what, make, expected):
    make_leaderboard(tmp_path)
    files = write_model(tmp_path / "res", MODEL, ["gtzan", "emo"])
    make(files["gtzan"])
    msg = _refused(tmp_path, f"{files['gtzan']}: ", expected)
    assert str(files["emo"]) not in msg  # the good file is not blamed


def test_two_encoders_under_one_name(tmp_path):
    make_leaderboard(tmp_path)
    write_model(tmp_path / "res", MODEL, ["gtzan", "emo"])
    write_result(result_path(tmp_path / "res", MODEL, "mtt", "constrained"),
                 complete_result("mtt", MODEL, weights_sha256="cd" * 32))
    _refused(tmp_path, "results of 2 different encoders under the one name 'lab/enc'",
             "emo, gtzan: encoder weights sha256 abab", "mtt: encoder weights sha256 cdcd")


def test_duplicate_model_revision(tmp_path):
    clone, _ = make_leaderboard(tmp_path)
    write_model(tmp_path / "res", MODEL, ["gtzan"])
    sub = submit(tmp_path / "res", MODEL, clone)
    _refused(tmp_path, f"branch {sub.branch} already exists")
    git(clone, "merge", "-q", "--ff-only", sub.branch)  # the maintainers merged it
    git(clone, "branch", "-q", "-D", sub.branch)
    _refused(tmp_path, "models/lab__enc@v1: this model revision is already on the leaderboard")


def test_card_version_unknown_to_the_leaderboard(tmp_path):
    clone, _ = make_leaderboard(tmp_path)
    cfg = json.loads((clone / "leaderboard.json").read_text())
    cfg["tasks"]["gtzan"]["versions"] = [3]  # the leaderboard moved on to a newer card
    (clone / "leaderboard.json").write_text(json.dumps(cfg))
    git(clone, "commit", "-qam", "gtzan card v3")
    files = write_model(tmp_path / "res", MODEL, ["gtzan"])
    _refused(tmp_path, f"{files['gtzan']}: task card gtzan version 2 is not known to this leaderboard "
                       "(it accepts version(s) 3)")


@pytest.mark.parametrize("change, expected", [
    (lambda i: i.pop("license"), "field 'license': missing"),
    (lambda i: i.update(parameters="95M"), "field 'parameters': '95M' is not of type int"),
    (lambda i: i.update(track="open"), "field 'track': 'open' is not one of"),
    (lambda i: i.update(name="other/enc"), "field 'name': 'other/enc' but the submitted model is 'lab/enc'"),
])
def test_bad_model_json(tmp_path, change, expected):
    make_leaderboard(tmp_path)
    info = model_info(MODEL)
    change(info)
    write_model(tmp_path / "res", MODEL, ["gtzan"], info=info)
    _refused(tmp_path, f"{tmp_path / 'res' / 'lab__enc' / 'model.json'}: {expected}")


def test_cli_refusal_is_an_error_line_and_exit_2(tmp_path):
    clone, _ = make_leaderboard(tmp_path)
    files = write_model(tmp_path / "res", MODEL, ["gtzan"])
    _reduced(files["gtzan"])
    before = snapshot(clone)
    res = _cli("submit", "--results-dir", tmp_path / "res", "-m", MODEL, "--to", clone)
    assert res.returncode == 2 and res.stderr.startswith("error: submission refused (1 problem(s))"), res.stderr
    assert f"{files['gtzan']}: not a complete constrained-track run" in res.stderr and "Traceback" not in res.stderr
    assert snapshot(clone) == before
    res = _cli("submit", "--results-dir", tmp_path / "res", "-m", "nobody/here", "--to", clone)
    assert res.returncode == 2 and "no results of model 'nobody/here'" in res.stderr
    with pytest.raises(MarbleError, match="not a git repository|rev-parse"):
        submit(tmp_path / "res", MODEL, tmp_path / "res")
