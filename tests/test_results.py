"""Result schema + consistency: a valid result passes; tampered or malformed ones are rejected with
the file and the field named."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from marble.registry import all_cards
from marble.results import ResultError, read_result, result_path, schema_errors, write_result


def make_result(model="test/enc", task="gtzan", seeds=False) -> dict:
    """A valid constrained gtzan result: 3 layers x 2 LRs + a weighted-sum row; the best valid
    row is layer 1, lr 1e-3."""
    card = all_cards()[task]
    sweep = []
    valid_acc = {(0, 1e-3): 0.60, (0, 1e-2): 0.55, (1, 1e-3): 0.81, (1, 1e-2): 0.70, (2, 1e-3): 0.75,
                 (2, 1e-2): 0.72, ("weighted", 1e-3): 0.79}
    for (layer, lr), v in valid_acc.items():
        sweep.append({"layer": layer, "lr": lr, "valid": {"accuracy": v}, "test": {"accuracy": round(v - 0.05, 4)},
                      "best_epoch": 4, "epochs": 14, "stopped": "early"})
    best = sweep[2]
    values = [0.76, 0.74, 0.78]
    return {
        "schema_version": 1, "source": "ours", "model": model, "task": task, "task_version": card.version,
        "protocol": card.protocol, "track": "constrained", "main_metric": "accuracy", "direction": "max",
        "selected": {"layer": 1, "lr": 1e-3, "valid_score": 0.81, "best_epoch": 4, "epochs": 14, "group_rule": None},
        "valid": dict(best["valid"]), "test": dict(best["test"]), "sweep": sweep,
        "weighted_sum": {"lr": 1e-3, "weights": [0.5, 0.3, 0.2]},
        "seeds": ({"n": 3, "seeds": [1234, 1, 2], "metric": "accuracy", "values": values,
                   "mean": sum(values) / 3, "std": 0.02, "ci95": [0.73, 0.79]} if seeds else None),
        "head": {"kind": "mlp", "hidden": 512, "layers": 1, "dropout": 0.2, "bidirectional": False},
        "training": {"batch_size": 64, "learning_rates": [1e-3, 1e-2], "max_epochs": 100},
        "manifest": {"toolkit_version": "0.1.0", "git_hash": None, "task_sha256": card.sha256,
                     "split_checksums": {"train": "ab", "valid": "cd", "test": "ef"},
                     "cache_manifest_sha256": None,
                     "encoder": {"name": model, "num_states": 4, "dim": 8}, "seed": 1234, "device": "cpu",
                     "wall_time_s": 1.5, "peak_memory_mb": 100.0, "created": "2026-11-23T12:00:00Z"},
        "data": {"splits": {s: {"listed": n, "cached": n, "skipped": [], "scored": n}
                            for s, n in (("train", 442), ("valid", 197), ("test", 290))},
                 "excluded": dict(card.splits.excluded)},
    }


def test_valid_result_roundtrips(tmp_path):
    r = make_result(seeds=True)
    p = result_path(tmp_path, r["model"], "gtzan", "constrained")
    assert p == tmp_path / "test__enc" / "gtzan" / "constrained.json"
    write_result(p, r)
    assert read_result(p) == r
    unsealed = copy.deepcopy(r)
    seal = unsealed["manifest"].pop("content_sha256")  # the writer sealed what it wrote (and said so in r)
    assert seal == hashlib.sha256(json.dumps(unsealed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert not list(p.parent.glob(".*tmp*"))  # atomic write left no temporary file


def test_sealed_result_edited_in_two_places_is_caught(tmp_path):
    """Changing the reported test score together with its sweep row keeps the file consistent; the seal
    still shows the edit."""
    r = make_result()
    p = write_result(tmp_path / "x" / "gtzan" / "constrained.json", r)
    obj = json.loads(p.read_text())
    obj["test"]["accuracy"] = obj["sweep"][2]["test"]["accuracy"] = 0.99
    p.write_text(json.dumps(obj))
    with pytest.raises(ResultError) as ei:
        read_result(p)
    assert ei.value.errors == [ei.value.errors[0]] and "field 'manifest.content_sha256': the file was edited" in str(ei.value)
    del obj["manifest"]["content_sha256"]  # an unsealed file reads (made by hand or an older writer)...
    p.write_text(json.dumps(obj))
    assert read_result(p)["test"]["accuracy"] == 0.99


def _rejects(tmp_path, r, *expected: str, on_write: bool = True) -> str:
    p = tmp_path / "x" / "gtzan" / "constrained.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(r))
    with pytest.raises(ResultError) as ei:
        read_result(p)
    msg = str(ei.value)
    assert str(p) in msg
    for e in expected:
        assert e in msg, msg
    # write_result refuses it too, and writes nothing
    q = tmp_path / "out.json"
    if on_write:
        with pytest.raises(ResultError):
            write_result(q, r)
        assert not q.exists()
    return msg


def test_wrong_type_names_field(tmp_path):
    r = make_result()
    r["test"]["accuracy"] = "abc"
    msg = _rejects(tmp_path, r, "field 'test.accuracy': 'abc' is not of type 'number'")
    assert msg.count("\n") == 0


def test_missing_field(tmp_path):
    r = make_result()
    del r["manifest"]
    _rejects(tmp_path, r, "field 'manifest': missing required field")
    r = make_result()
    del r["selected"]["lr"]
    _rejects(tmp_path, r, "field 'selected.lr': missing required field")


def test_unexpected_fields_and_enums(tmp_path):
    r = make_result()
    r["extra"] = 1
    _rejects(tmp_path, r, "field 'extra': unexpected field")
    r = make_result()
    r["manifest"]["gpu"] = "x"
    _rejects(tmp_path, r, "field 'manifest.gpu': unexpected field")
    r = make_result()
    r["track"] = "open"
    _rejects(tmp_path, r, "field 'track'")
    r = make_result()
    r["selected"]["layer"] = -1
    _rejects(tmp_path, r, "field 'selected.layer'")
    r = make_result()
    r["sweep"][3]["stopped"] = "crashed"
    _rejects(tmp_path, r, "field 'sweep[3].stopped'")


def test_tampered_test_number(tmp_path):
    r = make_result()
    r["test"]["accuracy"] = 0.99
    _rejects(tmp_path, r, "field 'test.accuracy': 0.99 differs from the selected sweep row")


def test_selected_not_best_on_valid(tmp_path):
    r = make_result()
    # pick the row with the best *test* score instead of the best valid one, copied consistently
    row = r["sweep"][4]
    r["selected"].update(layer=2, lr=1e-3, valid_score=row["valid"]["accuracy"])
    r["valid"], r["test"] = dict(row["valid"]), dict(row["test"])
    _rejects(tmp_path, r, "field 'selected': valid accuracy 0.75 is not the best of the sweep (0.81)")


def test_selected_not_in_sweep(tmp_path):
    r = make_result()
    r["selected"]["lr"] = 5e-3
    _rejects(tmp_path, r, "field 'selected': (layer 1, lr 0.005) is not a row of the sweep")


def test_sweep_valid_edited_is_caught(tmp_path):
    r = make_result()
    r["sweep"][0]["valid"]["accuracy"] = 0.9  # a better row now exists, selected is no longer the best
    _rejects(tmp_path, r, "is not the best of the sweep (0.9)")


def test_unknown_task_and_version(tmp_path):
    r = make_result()
    r["task"] = "gtzan-genre"
    # a task the registry cannot see at write time may be a user task: checked in full on read
    _rejects(tmp_path, r, "field 'task': unknown task 'gtzan-genre'", "gtzan", on_write=False)
    r = make_result()
    r["task_version"] = 7
    _rejects(tmp_path, r, "field 'task_version': 7 but the task card")


def test_metric_names_not_the_cards(tmp_path):
    r = make_result()
    for d in [r["valid"], r["test"]] + [x for row in r["sweep"] for x in (row["valid"], row["test"])]:
        d["acc"] = d.pop("accuracy")
    r["main_metric"] = "acc"
    msg = _rejects(tmp_path, r, "field 'main_metric': 'acc' but the card's main metric is 'accuracy'")
    assert "unknown acc" in msg and "missing accuracy" in msg


def test_weights_and_seeds_checked(tmp_path):
    r = make_result()
    r["weighted_sum"]["weights"] = [0.5, 0.5, 0.5]
    _rejects(tmp_path, r, "field 'weighted_sum.weights': softmax weights sum to 1.5")
    r = make_result(seeds=True)
    r["seeds"]["mean"] = 0.9
    _rejects(tmp_path, r, "field 'seeds.mean'")


def test_malformed_json_names_line_and_column(tmp_path):
    p = tmp_path / "bad.json"
    text = json.dumps(make_result(), indent=2).replace('"source": "ours",', '"source": "ours"', 1)
    p.write_text(text)
    with pytest.raises(ResultError) as ei:
        read_result(p)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if '"source"' in t) + 1
    assert f"{p}: line {line}, column" in str(ei.value)


def test_reported_rows_need_only_test_metrics():
    r = {"schema_version": 1, "source": "reported", "model": "X", "task": "musdb", "track": "constrained",
         "main_metric": "sdr_mean", "direction": "max", "test": {"sdr_vocals": 5.5}}
    assert schema_errors(r) == []
    ours = copy.deepcopy(r)
    ours["source"] = "ours"
    errs = schema_errors(ours)
    assert "field 'sweep': missing required field" in errs and "field 'manifest': missing required field" in errs


def test_schema_is_valid_draft_2020_12():
    from jsonschema import Draft202012Validator

    from marble.results import result_schema as schema

    Draft202012Validator.check_schema(schema())
    assert schema()["$schema"].endswith("2020-12/schema")


def test_null_means_not_computed_but_never_for_the_main_metric(tmp_path):
    """A metric that was not computed (e.g. museval for unselected separation heads) is null; the main
    metric, which selection and the leaderboard rely on, must always be a number."""
    r = make_result(task="gs")  # metrics: key_weighted_score (main), accuracy
    for d in [r["valid"], r["test"]] + [x for row in r["sweep"] for x in (row["valid"], row["test"])]:
        d["key_weighted_score"] = d.pop("accuracy")
        d["accuracy"] = None
    r["main_metric"] = "key_weighted_score"
    p = result_path(tmp_path, r["model"], "gs", "constrained")
    write_result(p, r)
    assert read_result(p)["test"]["accuracy"] is None
    r["test"]["key_weighted_score"] = None
    r["sweep"][2]["test"]["key_weighted_score"] = None
    _rejects(tmp_path, r, "field 'test.key_weighted_score': the main metric must be a number")
