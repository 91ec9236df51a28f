"""Reading results fast and bounded (issue 22 partials): the compiled schema validator agrees with ``jsonschema``
(the reference) on valid and broken results; a result file beyond the size bound is refused before it is read;
``marble submit`` commits the canonical JSON of what it checked, never the submitter's bytes; the seal does not
depend on the key order of the file."""

from __future__ import annotations

import copy
import json

import pytest
from jsonschema import Draft202012Validator

from marble.results import (MAX_RESULT_BYTES, ResultError, read_result, result_bytes, result_path, schema_errors,
                            write_result)
from marble.results.schema import compiled_valid, result_schema
from tests.leaderboard_fixtures import GIT_ENV, complete_result, git, make_leaderboard, model_info, write_model
from tests.test_results import make_result


def _set(path, value):
    def edit(r):
        *head, last = path
        for k in head:
            r = r[k]
        r[last] = value
    return edit


def _drop(path):
    def edit(r):
        *head, last = path
        for k in head:
            r = r[k]
        del r[last]
    return edit


BREAKS = [
    _set(["sweep", 2, "lr"], "1e-3"), _set(["sweep", 0, "layer"], -1), _set(["sweep", 0, "stopped"], "bored"),
    _set(["sweep", 1, "valid", "accuracy"], "high"), _set(["sweep", 1, "valid", "not a metric!"], 0.5),
    _set(["sweep", 3, "best_epoch"], 1.5), _set(["sweep", 3, "epochs"], True), _drop(["sweep", 0, "test"]),
    _set(["sweep"], []), _set(["manifest", "extra"], 1), _drop(["manifest", "seed"]),
    _set(["manifest", "created"], "yesterday"), _set(["manifest", "content_sha256"], "xyz"),
    _set(["manifest", "task_sha256"], "ABC"), _set(["manifest", "cache_verified"], "yes"),
    _set(["selected", "lr"], None), _set(["source"], "mine"), _set(["track"], "open"), _set(["schema_version"], "1"),
    _drop(["model"]), _set(["test"], {}), _set(["weighted_sum", "weights"], "all"), _set(["seeds"], {"n": 2}),
    _set(["extra_top_level"], 1), _drop(["manifest"]), _set(["data", "splits", "test", "listed"], -1),
    _set(["direction"], "up"), _set(["head"], []), _set(["valid"], None),
]


@pytest.mark.parametrize("k", range(len(BREAKS)))
def test_the_compiled_validator_agrees_with_jsonschema(k):
    """jsonschema (the reference; it writes the messages) and the compiled validator give the same verdict."""
    reference = Draft202012Validator(result_schema())
    for base in (make_result(seeds=True), json.loads(json.dumps(complete_result("mtg-genre", "lab/enc")))):
        assert compiled_valid(base) and reference.is_valid(base) and schema_errors(base) == []
        broken = copy.deepcopy(base)
        BREAKS[k](broken)
        assert compiled_valid(broken) == reference.is_valid(broken) == (schema_errors(broken) == []), broken


def test_a_rejection_by_the_compiled_validator_is_decided_by_jsonschema(monkeypatch):
    """The compiled validator is a fast path only: whenever it rejects, jsonschema's verdict (and messages) count."""
    from marble.results import schema

    monkeypatch.setattr(schema, "compiled_valid", lambda result: False)
    assert schema_errors(make_result()) == []
    broken = make_result()
    broken["sweep"][0]["lr"] = "x"
    assert schema_errors(broken) == ["field 'sweep[0].lr': 'x' is not of type 'number'"]


def test_a_result_file_beyond_the_size_bound_is_refused(tmp_path):
    """Issue 22 partial: a 100 MB result (whitespace-padded, seal valid) passed `leaderboard check --submission`."""
    p = result_path(tmp_path, "lab/enc", "gtzan", "constrained")
    write_result(p, make_result(model="lab/enc"))
    with p.open("a") as f:
        f.write(" " * (MAX_RESULT_BYTES + 1))  # still valid JSON, the seal still matches
    assert json.loads(p.read_text())
    with pytest.raises(ResultError, match="bytes, more than a result file holds"):
        read_result(p)


def test_submit_commits_canonical_json_not_the_submitters_bytes(tmp_path, monkeypatch):
    from marble.leaderboard.submit import submit

    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HOME", str(tmp_path))
    clone, _ = make_leaderboard(tmp_path)
    files = write_model(tmp_path / "res", "lab/enc", ["gtzan"], info=model_info("lab/enc"))
    r = json.loads(files["gtzan"].read_text())
    files["gtzan"].write_text(json.dumps(r, indent=7) + "\n" * 5000)  # padded, odd layout, same content
    sub = submit(tmp_path / "res", "lab/enc", clone)
    committed = git(clone, "show", f"{sub.branch}:{sub.folder}/gtzan/constrained.json") + "\n"
    assert committed.encode() == result_bytes(read_result(files["gtzan"]))


def test_the_seal_does_not_depend_on_key_order(tmp_path):
    """The file may list its keys in any order (a later layout puts the summary first): the seal hashes sorted-key
    JSON, so a reordered file still reads back sealed and valid."""
    p = result_path(tmp_path, "lab/enc", "gtzan", "constrained")
    write_result(p, make_result(model="lab/enc"))
    r = json.loads(p.read_text())
    reordered = {k: r[k] for k in reversed(list(r))}
    reordered["manifest"] = {k: r["manifest"][k] for k in reversed(list(r["manifest"]))}
    p.write_text(json.dumps(reordered, indent=1))
    assert read_result(p) == r


def test_a_result_file_reads_summary_first_and_file_lists_last(tmp_path):
    """Issue 23 item 9: a reader opening a result sees task, model, track, selected, test, valid first, the sweep
    after them and the per-file accounting (``data``, with a split's counts before its skipped-file list) last;
    before, keys were alphabetical and ``selected`` sat behind thousands of lines of skipped files."""
    p = result_path(tmp_path, "lab/enc", "gtzan", "constrained")
    r = make_result(model="lab/enc")
    r["data"]["splits"]["test"]["skipped"] = [{"file": f"blues/{i}.wav", "reason": "not on disk"} for i in range(30)]
    write_result(p, r)
    text = p.read_text()
    keys = list(json.loads(text))
    assert keys[:6] == ["task", "model", "track", "selected", "test", "valid"]
    assert keys.index("sweep") < keys.index("manifest") < keys.index("data") == len(keys) - 1
    assert text.index('"selected"') < 500  # within the first lines, not at line 3,699
    test_split = list(json.loads(text)["data"]["splits"]["test"])
    assert test_split[-1] == "skipped" and "scored" in test_split
    row = list(json.loads(text)["sweep"][0])
    assert row.index("layer") < row.index("test") and row.index("lr") < row.index("valid")
    assert read_result(p) == json.loads(text)  # the seal holds whatever the order
    assert result_bytes(json.loads(text)) == text.encode()  # the file is in its canonical form
