"""`marble plot layers` / `marble plot compare` on real results of fixture tasks: PNG and SVG are written, and
the figures' data (axes, series, values) read back from the matplotlib objects equal the result files' numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import marble
from marble import plots
from marble.cli import app
from marble.registry import get_card
from marble.testing.fixtures import write_gs, write_gtzan

TOY = str(Path(__file__).parent / "extract_plugin.py") + ":ToyEncoder"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    write_gtzan(root / "data", per_split=2, seconds=1.5)
    write_gs(root / "data", per_split=2)
    for model in ("handcrafted", TOY):
        marble.evaluate(model, tasks="gtzan,gs", data_dir=root / "data", cache_dir=root / "cache",
                        results_dir=root / "results", allow_partial=True, device="cpu", max_epochs=3,
                        lrs="1e-3,1e-2", num_workers=0)
    return root / "results"


@pytest.fixture
def saved(monkeypatch):
    """The figures the CLI saves, with the paths written."""
    figs = []
    real = plots.save

    def spy(fig, stem, formats=plots.FORMATS):
        paths = real(fig, stem, formats)
        figs.append((fig, paths))
        return paths

    monkeypatch.setattr(plots, "save", spy)
    return figs


def _check_files(paths):
    by_ext = {p.suffix: p for p in paths}
    assert set(by_ext) == {".png", ".svg"}
    assert by_ext[".png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in by_ext[".svg"].read_bytes()[:2000]


def test_plot_layers_series_equal_the_sweep_table(results_dir, tmp_path, saved):
    path = results_dir / "handcrafted" / "gtzan" / "constrained.json"
    res = CliRunner().invoke(app, ["plot", "layers", str(path), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (fig, paths), = saved
    _check_files(paths)
    assert {p.name for p in paths} == {"handcrafted--gtzan--constrained.layers.png", "handcrafted--gtzan--constrained.layers.svg"}

    raw = json.loads(path.read_text())  # the file, read independently of marble
    table = {(row["layer"], row["lr"]): row["test"]["accuracy"] * 100 for row in raw["sweep"]}
    layers = sorted(k for k in {layer for layer, _ in table} if k != "weighted")
    ax, axs, axw = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines() + axs.get_lines()}
    for lr in (1e-3, 1e-2):
        ln = lines[f"lr {lr:g}"]
        assert list(ln.get_xdata()) == layers
        np.testing.assert_allclose(ln.get_ydata(), [table[(layer, lr)] for layer in layers])
    sel = raw["selected"]
    star = next(ln for label, ln in lines.items() if label.startswith("selected"))
    assert list(star.get_xdata()) == ([0] if sel["layer"] == "weighted" else [sel["layer"]])
    assert star.axes is (axs if sel["layer"] == "weighted" else ax)
    np.testing.assert_allclose(star.get_ydata(), [raw["test"]["accuracy"] * 100])
    ws = raw["weighted_sum"]
    wline = next(ln for label, ln in lines.items() if label.startswith("weighted sum"))
    np.testing.assert_allclose(wline.get_ydata(), [table[("weighted", ws["lr"])]] * 2)
    bars = axw.patches
    np.testing.assert_allclose([b.get_height() for b in bars], ws["weights"])
    assert [round(b.get_x() + b.get_width() / 2) for b in bars] == layers[1:]  # state 0 is not mixed
    assert ax.get_ylabel() == "test accuracy (x100)"


def _ticks(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


@pytest.mark.parametrize("pick", ["layer", "weighted"])
def test_plot_layers_keeps_layers_and_weighted_sum_apart(results_dir, pick):
    """Whichever probe was selected, the layer axis shows every layer 0..L and nothing else, the weighted sum has
    its own axis (one point per LR), and the star sits at the selected layer or on the weighted-sum axis (before
    the fix, a selected weighted sum turned the layer axis categorical: one 'weighted' tick at layer 0, star on it)."""
    raw = json.loads((results_dir / "handcrafted" / "gtzan" / "constrained.json").read_text())
    ws_rows = {row["lr"]: row["test"]["accuracy"] * 100 for row in raw["sweep"] if row["layer"] == "weighted"}
    layers = sorted({row["layer"] for row in raw["sweep"]} - {"weighted"})
    if pick == "weighted":
        raw["selected"] = {**raw["selected"], "layer": "weighted", "lr": raw["weighted_sum"]["lr"]}
    else:
        raw["selected"] = {**raw["selected"], "layer": layers[-1], "lr": 1e-2}
    fig = plots.plot_layers(raw)
    fig.canvas.draw()  # tick labels are final once drawn
    ax, axs, axw = fig.axes
    assert _ticks(ax) == [str(n) for n in layers] and list(ax.get_xticks()) == layers
    assert _ticks(axs) == ["weighted\nsum"]
    points = sorted((ln for ln in axs.get_lines() if ln.get_label().startswith("weighted sum, lr")),
                    key=lambda ln: float(ln.get_label().rsplit(" ", 1)[1]))
    assert [float(ln.get_label().rsplit(" ", 1)[1]) for ln in points] == sorted(ws_rows)
    np.testing.assert_allclose([ln.get_ydata()[0] for ln in points], [ws_rows[lr] for lr in sorted(ws_rows)])
    stars = [ln for a in (ax, axs) for ln in a.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 1
    (star,) = stars
    if pick == "weighted":
        assert star.axes is axs and list(star.get_xdata()) == [0]
        assert star.get_label() == f"selected: weighted sum, lr {raw['weighted_sum']['lr']:g}"
        np.testing.assert_allclose(star.get_ydata(), [ws_rows[raw["weighted_sum"]["lr"]]])
    else:
        assert star.axes is ax and list(star.get_xdata()) == [layers[-1]]
        want = next(r["test"]["accuracy"] for r in raw["sweep"] if r["layer"] == layers[-1] and r["lr"] == 1e-2)
        np.testing.assert_allclose(star.get_ydata(), [want * 100])
    assert "selected" in " ".join(t.get_text() for t in ax.get_legend().get_texts())  # the star is in the legend
    # the numbers beside the figure (the site's data-selected) name the weighted sum, not a layer
    assert plots.layer_data(raw)["selected"][0] == (raw["selected"]["layer"])


def test_plot_layers_valid_split_and_folder(results_dir, tmp_path, saved):
    res = CliRunner().invoke(app, ["plot", "layers", str(results_dir / "handcrafted"), "--split", "valid",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert len(saved) == 2  # gtzan and gs
    raw = json.loads((results_dir / "handcrafted" / "gs" / "constrained.json").read_text())
    fig = next(f for f, paths in saved if "--gs--" in paths[0].name)
    ln = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "lr 0.001")
    want = [row["valid"]["key_weighted_score"] * 100 for row in sorted(
        (r for r in raw["sweep"] if r["layer"] != "weighted" and r["lr"] == 1e-3), key=lambda r: r["layer"])]
    np.testing.assert_allclose(ln.get_ydata(), want)


def test_plot_compare_models_by_tasks(results_dir, tmp_path, saved):
    res = CliRunner().invoke(app, ["plot", "compare", str(results_dir), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (fig, paths), = saved
    _check_files(paths)
    ax = fig.axes[0]
    models = [t.get_text() for t in ax.get_yticklabels()]
    tasks = [t.get_text() for t in ax.get_xticklabels()]
    assert models == ["handcrafted", "plugins/toy-encoder"]
    assert set(tasks) == {"gtzan", "gs"}
    grid = np.ma.filled(ax.images[0].get_array(), np.nan)
    for i, model in enumerate(models):
        for j, task in enumerate(tasks):
            slug = "handcrafted" if model == "handcrafted" else "plugins__toy-encoder"
            raw = json.loads((results_dir / slug / task / "constrained.json").read_text())
            agg = get_card(task).metrics.aggregate
            want = sum(raw["test"][m] * 100 for m in agg) / len(agg)
            assert math.isclose(grid[i, j], want, rel_tol=1e-9), (model, task)


def test_plot_errors_are_error_lines(results_dir, tmp_path):
    import subprocess
    import sys

    path = results_dir / "handcrafted" / "gtzan" / "constrained.json"
    r = subprocess.run([sys.executable, "-m", "marble", "plot", "layers", str(path), "--metric", "nope",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "error: metric 'nope' is not in the sweep" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "marble", "plot", "compare", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no such result file or results folder" in r.stderr


def test_readme_shows_the_figures():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    for img in ("docs/img/plot-layers.png", "docs/img/plot-compare.png"):
        assert f"]({img})" in readme and (root / img).read_bytes()[:4] == b"\x89PNG"


def test_plot_compare_fixed_scales_reduced_marks_and_published_rows(results_dir, tmp_path, saved):
    """Issue 23 item 10: the colour scale is fixed per kind of score (x100 on 0..100 whatever the data, so 89.6
    never looks like 0), a dB task (MUSDB SDR) gets its own image and colour bar, reduced results are marked '*',
    and --published adds the published rows with the published task scores."""
    import csv

    from marble.results.schema import REFERENCE_CSV, data_dir

    res = CliRunner().invoke(app, ["plot", "compare", str(results_dir), "--published", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (fig, _), = saved
    ax = fig.axes[0]
    (im,) = ax.images  # gtzan and gs: one kind
    assert im.get_clim() == (0.0, 100.0)
    models = [t.get_text() for t in ax.get_yticklabels()]
    tasks = [t.get_text() for t in ax.get_xticklabels()]
    assert models[:2] == ["handcrafted", "plugins/toy-encoder"] and "MERT-v1-95M (published)" in models
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    # the fixture runs are reduced (3 epochs, 2 learning rates): every cell of ours is marked
    assert all(texts[(i, j)].endswith("*") for i in range(2) for j in range(len(tasks)))
    with (data_dir() / REFERENCE_CSV).open(newline="") as f:
        mert = next(r for r in csv.DictReader(f) if r["model"] == "MERT-v1-95M")
    i = models.index("MERT-v1-95M (published)")
    want = {"gtzan": float(mert["gtzan_acc"]), "gs": float(mert["gs_acc_refined"])}
    for j, task in enumerate(tasks):
        assert texts[(i, j)] == f"{want[task]:.1f}"  # published numbers: no mark
    assert "* reduced protocol" in ax.get_title()
    assert [c.ax.get_ylabel() for c in [im.colorbar]] == ["score (x100)"]


def test_plot_compare_db_tasks_have_their_own_scale():
    from tests.leaderboard_fixtures import complete_result

    rs = [complete_result("gtzan", "lab/enc"), complete_result("musdb", "lab/enc")]
    d = plots.compare_data(rs)
    assert d["tasks"] == ["gtzan", "musdb"] and d["kinds"] == ["x100", "dB"] and d["reduced"] == [[False, False]]
    fig = plots.plot_compare(rs)
    ax = fig.axes[0]
    x100, db = ax.images
    assert x100.get_clim() == (0.0, 100.0) and db.get_clim() == plots.KIND_RANGES["dB"]
    assert x100.colorbar.ax.get_ylabel() == "score (x100)" and db.colorbar.ax.get_ylabel() == "SDR (dB)"
    assert np.ma.getmaskarray(x100.get_array()).tolist() == [[False, True]]
    assert np.ma.getmaskarray(db.get_array()).tolist() == [[True, False]]
