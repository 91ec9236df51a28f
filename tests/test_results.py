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


def make_musdb_result(row_selection: bool = False) -> dict:
    """A valid constrained musdb result of the current card (one model per source, selected per source):
    rows layer 0 and layer 1 (lr 1e-3); vocals, bass and other are best on layer 1, drums on layer 0.
    ``row_selection``: the same sweep as an older card version (2) reported it, one row for all four."""
    card = all_cards()["musdb"]
    sources = card.vocabulary()
    valid = {0: {"vocals": 3.0, "drums": 4.0, "bass": 1.0, "other": 0.5},
             1: {"vocals": 5.0, "drums": 2.0, "bass": 2.0, "other": 1.5}}
    best = {s: max((0, 1), key=lambda i: valid[i][s]) for s in sources}
    sweep = []
    for i in (0, 1):
        v = {f"sdr_{s}": valid[i][s] for s in sources}
        v.update({f"museval_sdr_{s}": (valid[i][s] - 0.5 if best[s] == i else None) for s in sources})
        v["sdr_mean"] = sum(valid[i].values()) / 4
        t = {f"sdr_{s}": (valid[i][s] - 0.25 if best[s] == i else None) for s in sources}
        t.update({f"museval_sdr_{s}": (valid[i][s] - 0.75 if best[s] == i else None) for s in sources})
        t["sdr_mean"] = None
        sweep.append({"layer": i, "lr": 1e-3, "valid": v, "test": t, "best_epoch": 3, "epochs": 8, "stopped": "early"})
    r = make_result(task="musdb")
    r.update(sweep=sweep, weighted_sum=None, main_metric="sdr_mean",
             head={"kind": "openunmix", "hidden": 512, "layers": 3, "dropout": 0.4, "bidirectional": False},
             training={"batch_size": 32, "accumulate": 8, "learning_rates": [1e-3], "max_epochs": 50})
    r["manifest"]["encoder"]["num_states"] = 2
    r["data"] = None
    if row_selection:  # the second edition: one row (layer 1) for the four sources, test scored on it
        for s in sources:
            sweep[1]["test"][f"sdr_{s}"] = valid[1][s] - 0.25
            sweep[1]["test"][f"museval_sdr_{s}"] = valid[1][s] - 0.75
            sweep[0]["test"][f"sdr_{s}"] = sweep[0]["test"][f"museval_sdr_{s}"] = None
        sweep[1]["test"]["sdr_mean"] = sum(sweep[1]["test"][f"sdr_{s}"] for s in sources) / 4
        r.update(task_version=2, valid=dict(sweep[1]["valid"]), test=dict(sweep[1]["test"]),
                 selected={"layer": 1, "lr": 1e-3, "valid_score": sweep[1]["valid"]["sdr_mean"], "best_epoch": 3,
                           "epochs": 8, "group_rule": None})
        return r
    r["valid"] = {n: sweep[best[s]]["valid"][n] for s in sources for n in card.metrics.per_source[s]}
    r["test"] = {n: sweep[best[s]]["test"][n] for s in sources for n in card.metrics.per_source[s]}
    for split in ("valid", "test"):
        r[split]["sdr_mean"] = sum(r[split][f"sdr_{s}"] for s in sources) / 4
    r["selected"] = {"per_source": {s: {"layer": best[s], "lr": 1e-3, "valid_score": valid[best[s]][s], "best_epoch": 3,
                                        "epochs": 8, "metrics": card.metrics.per_source[s]} for s in sources},
                     "valid_score": r["valid"]["sdr_mean"], "group_rule": None}
    return r


def test_per_source_selection_roundtrips_and_is_checked(tmp_path):
    """musdb selects per source: each source's metrics come from its own best-on-validation row and the
    main metric is their mean; picking a source's row on test, editing a source's number or the mean, or
    reporting one row for all sources under the current card is refused."""
    from marble.results.selection import choice_for, describe

    r = make_musdb_result()
    p = write_result(tmp_path / "x" / "musdb" / "constrained.json", r)
    assert read_result(p) == r
    assert describe(r) == "vocals: layer 1, lr 0.001; drums: layer 0, lr 0.001; bass: layer 1, lr 0.001; other: layer 1, lr 0.001"
    assert choice_for(r, "museval_sdr_drums")["layer"] == 0 and choice_for(r, "sdr_mean") is None
    bad = make_musdb_result()  # drums moved to layer 1 (its test SDR is better there), copied consistently
    row = bad["sweep"][1]
    row["test"]["sdr_drums"], row["test"]["museval_sdr_drums"] = 3.0, 2.0
    bad["sweep"][0]["test"]["sdr_drums"] = bad["sweep"][0]["test"]["museval_sdr_drums"] = None
    bad["selected"]["per_source"]["drums"].update(layer=1, valid_score=row["valid"]["sdr_drums"])
    for split in ("valid", "test"):
        bad[split]["sdr_drums"], bad[split]["museval_sdr_drums"] = row[split]["sdr_drums"], row[split]["museval_sdr_drums"]
        bad[split]["sdr_mean"] = sum(bad[split][f"sdr_{s}"] for s in ("vocals", "drums", "bass", "other")) / 4
    bad["selected"]["valid_score"] = bad["valid"]["sdr_mean"]
    _rejects(tmp_path, bad, "field 'selected.per_source.drums': valid sdr_drums 2.0 is not the best of the sweep (4.0)")
    bad = make_musdb_result()
    bad["test"]["sdr_vocals"] += 1
    _rejects(tmp_path, bad, "field 'test.sdr_vocals': 5.75 differs from the row selected for vocals (sweep[1]",
             "field 'test.sdr_mean'")
    bad = make_musdb_result()
    bad["valid"]["sdr_mean"] = bad["selected"]["valid_score"] = 9.0
    _rejects(tmp_path, bad, "field 'valid.sdr_mean': 9.0 is not the mean of the selected sources' scores")
    bad = make_musdb_result(row_selection=True)
    bad["task_version"] = all_cards()["musdb"].version
    _rejects(tmp_path, bad, "field 'selected': task 'musdb' (card version 3) selects a (layer, LR) per source")


def test_result_of_an_older_card_version_reads_and_is_marked(tmp_path):
    """A musdb result of card version 2 (one row selected for the four sources) still reads back and is
    checked as that version reported it; the leaderboard marks it, and a submission refuses it. A version
    newer than the card is an error."""
    from marble.leaderboard.table import build
    from marble.results.conformance import protocol_deviations

    old = make_musdb_result(row_selection=True)
    p = write_result(tmp_path / "res" / "test__enc" / "musdb" / "constrained.json", old)
    assert read_result(p)["selected"]["layer"] == 1
    card = all_cards()["musdb"]
    assert any(d.startswith("task card version 2, the card is now version 3") for d in protocol_deviations(old, card))
    assert not any("task card version" in d for d in protocol_deviations(make_musdb_result(), card))
    cell = build(tmp_path / "res", reported=False).rows[0].cells["musdb"]
    assert cell.score == pytest.approx((4.75 + 1.75 + 1.75 + 1.25) / 4) and any("task card version 2" in d for d in cell.deviations)
    tampered = make_musdb_result(row_selection=True)
    tampered["test"]["sdr_vocals"] = 9.0  # the old layout is still checked: test copied from the selected row
    _rejects(tmp_path, tampered, "field 'test.sdr_vocals': 9.0 differs from the selected sweep row")
    newer = make_musdb_result()
    newer["task_version"] = card.version + 1
    _rejects(tmp_path, newer, f"field 'task_version': {card.version + 1} but the task card")
