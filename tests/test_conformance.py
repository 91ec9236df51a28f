"""Protocol conformance: a reduced sweep is valid but marked, and a submission check rejects it."""

from __future__ import annotations

import copy
import csv
import io
import json

import pytest
from typer.testing import CliRunner

from marble.cli import app
from marble.leaderboard import build, render
from marble.registry import get_card
from marble.results import result_path, write_result
from marble.results.conformance import protocol_deviations
from tests.test_results import make_result

runner = CliRunner()
GRID = [5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]


def complete_result(model="full/enc", num_states=4) -> dict:
    """A gtzan result with the whole constrained sweep: states 0..3 + weighted x the 6 card LRs,
    the card's epoch cap, batch size and head; the best valid row is (2, 1e-3)."""
    card = get_card("gtzan")
    r = make_result(model=model)
    layers = list(range(num_states)) + ["weighted"]
    sweep = []
    for i, layer in enumerate(layers):
        for j, lr in enumerate(card.training.learning_rates):
            v = 0.9 if (layer, lr) == (2, 1e-3) else round(0.5 + 0.01 * i + 0.001 * j, 4)
            sweep.append({"layer": layer, "lr": lr, "valid": {"accuracy": v}, "test": {"accuracy": round(v - 0.05, 4)},
                          "best_epoch": 4, "epochs": 14, "stopped": "early"})
    best = next(row for row in sweep if (row["layer"], row["lr"]) == (2, 1e-3))
    r.update(sweep=sweep, valid=dict(best["valid"]), test=dict(best["test"]),
             selected={"layer": 2, "lr": 1e-3, "valid_score": 0.9, "best_epoch": 4, "epochs": 14, "group_rule": None},
             weighted_sum={"lr": 1e-3, "weights": [1 / (num_states - 1)] * (num_states - 1)})
    r["training"] = {"batch_size": card.training.batch_size, "learning_rates": list(card.training.learning_rates),
                     "max_epochs": card.training.max_epochs}
    r["manifest"]["encoder"]["num_states"] = num_states
    return r


def test_card_grid_is_the_protocol_grid():
    assert get_card("gtzan").training.learning_rates == GRID


def test_complete_sweep_has_no_deviation():
    assert protocol_deviations(complete_result(), get_card("gtzan")) == []


@pytest.mark.parametrize("change, expected", [
    (lambda r: r["training"].update(max_epochs=3), "max epochs 3 (card: 100)"),
    (lambda r: r["training"].update(batch_size=32), "batch size 32 (card: 64)"),
    (lambda r: r["head"].update(hidden=256), "head hidden=256 (card: 512)"),
    (lambda r: r.update(sweep=[s for s in r["sweep"] if s["lr"] != 5e-5]), "learning rates {0.0001, 0.0005, 0.001, 0.005, 0.01}"),
    (lambda r: r.update(sweep=[s for s in r["sweep"] if s["layer"] not in (0, 3)]), "layers: 2 of 5 layer options not probed (0, 3)"),
    (lambda r: r.update(sweep=[s for s in r["sweep"] if s["layer"] != "weighted"]), "layers: 1 of 5 layer options not probed (weighted)"),
])
def test_each_reduction_is_named(change, expected):
    r = complete_result()
    change(r)
    dev = protocol_deviations(r, get_card("gtzan"))
    assert len(dev) == 1 and dev[0].startswith(expected), dev


def test_states_from_weighted_sum_when_manifest_has_no_encoder():
    r = complete_result(num_states=4)
    del r["manifest"]["encoder"]
    assert protocol_deviations(r, get_card("gtzan")) == []
    r["weighted_sum"]["weights"] = [0.25] * 4  # says 5 states, but state 4 was never probed
    assert "1 of 6 layer options" in protocol_deviations(r, get_card("gtzan"))[0]


def test_other_tracks_and_reported_rows_are_not_checked():
    r = make_result()
    assert protocol_deviations(r, get_card("gtzan"))  # the helper's sweep is reduced
    assert protocol_deviations(dict(r, track="semi-constrained"), get_card("gtzan")) == []
    assert protocol_deviations(dict(r, source="reported"), get_card("gtzan")) == []


def _write(root, r):
    p = result_path(root, r["model"], r["task"], r["track"])
    write_result(p, r)
    return p


def test_leaderboard_marks_reduced_cells_and_rows(tmp_path):
    _write(tmp_path, complete_result("full/enc"))
    _write(tmp_path, make_result("quick/enc"))
    lb = build(tmp_path, reported=False)
    rows = {r.model: r for r in lb.rows}
    assert rows["full/enc"].complete and not rows["quick/enc"].complete
    md = render(lb, "markdown")
    line = {l.split("|")[1].strip(): l for l in md.splitlines() if l.startswith("| ") and "enc" in l}
    assert "85.00 |" in line["full/enc"] and "*" not in line["full/enc"]
    assert "76.00* |" in line["quick/enc"]
    assert "reduced protocol" in md
    data = {r["model"]: r for r in csv.DictReader(io.StringIO(render(lb, "csv")))}
    assert data["full/enc"]["protocol_complete"] == "true" and data["quick/enc"]["protocol_complete"] == "false"
    js = {r["model"]: r for r in json.loads(render(lb, "json"))["rows"]}
    assert js["quick/enc"]["tasks"]["gtzan"]["deviations"] and js["full/enc"]["tasks"]["gtzan"]["deviations"] == []


def test_check_submission_rejects_reduced_runs(tmp_path):
    full = _write(tmp_path, complete_result("full/enc"))
    quick = _write(tmp_path, make_result("quick/enc"))
    res = runner.invoke(app, ["leaderboard", "check", str(full), str(quick)])
    assert res.exit_code == 0, res.output
    assert "reduced protocol" in res.output and "learning rates" in res.output
    res = runner.invoke(app, ["leaderboard", "check", "--submission", str(full), str(quick)])
    assert res.exit_code == 2
    assert f"{full}: OK" in res.output
    assert f"{quick}: not a complete constrained-track run" in res.output and "1 of 2 file(s) rejected" in res.output
    assert runner.invoke(app, ["leaderboard", "check", "--submission", str(full)]).exit_code == 0


def test_reduction_survives_a_round_trip(tmp_path):
    r = complete_result()
    r2 = copy.deepcopy(r)
    r2["training"]["max_epochs"] = 7
    p = _write(tmp_path, r2)
    from marble.results import read_result

    assert protocol_deviations(read_result(p), get_card("gtzan")) == ["max epochs 7 (card: 100)"]
