"""The leaderboard: published averages reproduced, our results aggregated, invalid files rejected by
the CLI with exit code 2, and every output format parsing back to the same numbers."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from marble.cli import app
from marble.leaderboard import build, reference_csv_path, reported_results
from marble.registry import all_cards
from marble.results import result_path, schema_errors, write_result
from tests.test_results import make_result

runner = CliRunner()


def _published() -> list[dict]:
    with reference_csv_path().open(newline="") as f:
        return list(csv.DictReader(f))


def test_shipped_reference_csv_holds_the_published_numbers():
    """The published-numbers file the package ships (no absolute path of one machine): it is found,
    names every model of PROTOCOL §6 once, has a column for every card's reference metric, and holds
    the values printed in the MARBLE paper (Table 4) for spot checks."""
    from pathlib import Path

    import marble

    path = reference_csv_path()
    assert path.is_file() and path.name == "reference_results.csv"
    assert Path(marble.__file__).resolve().parent.parent in path.resolve().parents  # shipped with the package
    rows = _published()
    models = [r["model"] for r in rows]
    assert models == ["MusiCNN", "CLMR", "Jukebox-5B", "MULE", "Music2Vec", "MERT-v0-95M", "MERT-v0-95M-public",
                      "MERT-v1-95M", "MERT-v1-330M", "Previous SOTA"]
    columns = {c for card in all_cards().values() for c in card.metrics.reference_columns.values()}
    assert columns <= set(rows[0]), sorted(columns - set(rows[0]))
    by_model = {r["model"]: r for r in rows}
    assert float(by_model["MERT-v1-95M"]["gtzan_acc"]) == 74.8
    assert float(by_model["MERT-v1-330M"]["mtt_roc"]) == 91.1 and float(by_model["MERT-v1-330M"]["gtzan_acc"]) == 77.6
    assert float(by_model["MusiCNN"]["gtzan_acc"]) == 73.5
    for r in rows:  # every value a number on the paper's scale (x100 ratios, dB for SDR) or empty
        for col in columns:
            assert r[col] == "" or -50.0 < float(r[col]) <= 100.0, (r["model"], col, r[col])


def test_reported_rows_are_schema_valid():
    rows = reported_results(all_cards())
    assert len(rows) > 100
    for r in rows:
        assert schema_errors(r) == [], r
    mert = [r for r in rows if r["model"] == "MERT-v1-95M" and r["task"] == "gtzan"]
    assert mert[0]["test"] == {"accuracy": pytest.approx(0.748)}


def test_reported_aggregate_reproduces_published_averages():
    lb = build(None, reported=True)
    by_model = {r.model: r for r in lb.rows if r.source == "reported"}
    checked = 0
    for row in _published():
        ours = by_model[row["model"]]
        if row["avg"]:
            assert ours.marble_score == pytest.approx(float(row["avg"]), abs=0.06), row["model"]
            checked += 1
        else:  # no published average <=> some task missing (MusiCNN, CLMR, Jukebox, MULE: no beat/MUSDB)
            assert ours.marble_score is None
            assert len(ours.cells) < 14
    assert checked == 6
    # an independent recomputation of one task score: MTT = mean(ROC-AUC, AP) on the x100 scale
    mert = by_model["MERT-v1-95M"]
    assert mert.cells["mtt"].score == pytest.approx((91.0 + 39.3) / 2)
    assert mert.cells["musdb"].score == pytest.approx((5.5 + 5.5 + 3.8 + 3.1) / 4)
    assert mert.cells["gtzan-beat"].score == pytest.approx(88.3)
    assert lb.tasks[:3] == ["mtt", "gs", "gtzan"] and len(lb.tasks) == 14


def _write_ours(results_dir, model="test/enc", seeds=False, task="gtzan"):
    r = make_result(model=model, seeds=seeds, task=task)
    p = result_path(results_dir, model, task, "constrained")
    write_result(p, r)
    return p, r


def test_ours_beside_reported(tmp_path):
    _write_ours(tmp_path, "a/one")
    _write_ours(tmp_path, "b/two", seeds=True)
    lb = build(tmp_path)
    ours = {r.model: r for r in lb.rows if r.source == "ours"}
    assert set(ours) == {"a/one", "b/two"}
    assert ours["a/one"].cells["gtzan"].score == pytest.approx(76.0)  # test accuracy of the selected row x100
    assert ours["a/one"].marble_score is None  # one task of 14
    seeded = ours["b/two"].cells["gtzan"]
    assert seeded.score == pytest.approx(100 * (0.76 + 0.74 + 0.78) / 3)
    assert seeded.score_std == pytest.approx(2.0) and seeded.n_seeds == 3
    assert any(r.source == "reported" for r in lb.rows)
    assert not any(r.source == "reported" for r in build(tmp_path, reported=False).rows)
    assert build(tmp_path, track="semi-constrained").rows == []


def _cli(*args):
    return runner.invoke(app, ["leaderboard", *args])


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json", "table"])
def test_outputs_parse_back(tmp_path, fmt):
    _write_ours(tmp_path / "res", "a/one", seeds=True)
    out = tmp_path / f"lb.{fmt}"
    res = _cli("--results-dir", str(tmp_path / "res"), "--format", fmt, "--output", str(out))
    assert res.exit_code == 0, res.output
    text = out.read_text()
    lb = build(tmp_path / "res")
    expected = {(r.model, r.source): r for r in lb.rows}
    if fmt == "json":
        data = json.loads(text)
        assert len(data["rows"]) == len(expected)
        for row in data["rows"]:
            e = expected[(row["model"], row["source"])]
            assert row["marble_score"] == e.marble_score
            for t, c in row["tasks"].items():
                assert c["score"] == e.cells[t].score and c["metrics"] == e.cells[t].metrics
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == len(expected)
        for row in rows:
            e = expected[(row["model"], row["source"])]
            for t in lb.tasks:
                want = e.cells[t].score if t in e.cells else None
                got = float(row[f"{t}.score"]) if row[f"{t}.score"] else None
                assert got == pytest.approx(want, abs=1e-9) if want is not None else got is None
            if e.marble_score is not None:
                assert float(row["marble_score"]) == pytest.approx(e.marble_score, abs=1e-9)
        seeded = next(r for r in rows if r["model"] == "a/one")
        assert float(seeded["gtzan.score_std"]) == pytest.approx(2.0)
    elif fmt == "markdown":
        lines = [l for l in text.splitlines() if l.startswith("| ")]
        header = [h.strip() for h in lines[0].strip("|").split("|")]
        assert header[:2] == ["Model", "Source"] and header[-1] == "MARBLE"
        for l in lines[2:]:
            cells = [c.strip() for c in l.strip("|").split("|")]
            e = expected[(cells[0], cells[1])]
            for h, c in zip(header[2:-1], cells[2:-1]):
                if c == "-":
                    assert h not in e.cells
                else:
                    # make_result is a reduced sweep (3 of 4 layers, 2 LRs): its cells carry the marker
                    assert c.endswith("*") == bool(e.cells[h].deviations), (h, c)
                    c = c.rstrip("*")
                    value = float(c.split("±")[0])
                    assert value == pytest.approx(e.cells[h].score, abs=0.005)
                    if e.cells[h].score_std is not None:
                        assert float(c.split("±")[1]) == pytest.approx(e.cells[h].score_std, abs=0.005)
            if e.marble_score is not None:
                assert float(cells[-1].rstrip("*")) == pytest.approx(e.marble_score, abs=0.005)
    else:
        assert "a/one" in text and "MERT-v1-95M" in text and "76.0 ± 2.0" in text


def test_full_markdown_has_every_metric(tmp_path):
    res = _cli("--results-dir", str(tmp_path), "--format", "markdown", "--full", "--tasks", "emo,musdb")
    assert res.exit_code == 0, res.output
    header = res.stdout.splitlines()[2]
    for col in ("emo: r2_valence", "emo: r2_arousal", "emo: score", "musdb: sdr_vocals", "musdb: score"):
        assert col in header
    assert "gtzan" not in header
    assert "| 55.50 | 76.30 | 65.90 |" in res.stdout  # MERT-v1-95M EMO valence/arousal/score


def test_cli_rejects_tampered_file(tmp_path):
    p, r = _write_ours(tmp_path, "a/one")
    r["test"]["accuracy"] = 0.99
    p.write_text(json.dumps(r))
    _write_ours(tmp_path, "b/two")
    res = _cli("--results-dir", str(tmp_path))
    assert res.exit_code == 2
    assert str(p) in res.stderr and "field 'test.accuracy'" in res.stderr and "--skip-invalid" in res.stderr
    res = _cli("--results-dir", str(tmp_path), "--skip-invalid", "--format", "csv", "--no-reported")
    assert res.exit_code == 0
    assert "warning: skipped invalid result" in res.stderr and str(p) in res.stderr
    models = [row["model"] for row in csv.DictReader(io.StringIO(res.stdout))]
    assert models == ["b/two"]


def test_cli_rejects_malformed_and_misplaced(tmp_path):
    p, r = _write_ours(tmp_path, "a/one")
    p.write_text(p.read_text()[:-10])
    res = _cli("--results-dir", str(tmp_path))
    assert res.exit_code == 2 and f"{p}: line" in res.stderr and "not valid JSON" in res.stderr
    p.unlink()
    q = tmp_path / "a__one" / "mtt" / "constrained.json"
    q.parent.mkdir(parents=True)
    q.write_text(json.dumps(r))
    res = _cli("--results-dir", str(tmp_path))
    assert res.exit_code == 2 and "folder of task 'mtt'" in res.stderr


def test_check_command(tmp_path):
    good, r = _write_ours(tmp_path, "a/one")
    bad = tmp_path / "bad.json"
    r["sweep"][0]["valid"]["accuracy"] = 0.95
    bad.write_text(json.dumps(r))
    res = runner.invoke(app, ["leaderboard", "check", str(good)])
    assert res.exit_code == 0 and f"{good}: OK" in res.stdout
    res = runner.invoke(app, ["leaderboard", "check", str(good), str(bad)])
    assert res.exit_code == 2
    assert f"{bad}: field 'selected'" in res.stderr and "1 of 2 file(s) invalid" in res.stderr


def test_cli_bad_options(tmp_path):
    assert _cli("--format", "html").exit_code == 2
    assert _cli("--track", "open").exit_code == 2
    res = _cli("--results-dir", str(tmp_path), "--no-reported")
    assert res.exit_code == 1 and "no results" in res.stderr


@pytest.mark.parametrize("width", [80, 100, 400])
def test_terminal_table_wraps_columns_and_never_cuts_a_value(width):
    """All 14 tasks of the published rows: narrow terminals get several tables of task columns, each
    line fits, and every task score and MARBLE score appears in full."""
    from marble.leaderboard.render import render as render_lb

    lb = build(None)
    text = render_lb(lb, "table", width=width)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    assert ("(1/" in text) == (width < 200)
    for row in lb.rows:
        lines = [l for l in text.splitlines() if l.startswith(f" {row.model} ") or l.startswith(f"{row.model} ")]
        cells = " ".join(lines).split()
        assert "reported" in cells
        for t, c in row.cells.items():
            assert f"{c.score:.1f}" in cells, (row.model, t)
        if row.marble_score is not None:
            assert f"{row.marble_score:.1f}" in cells
