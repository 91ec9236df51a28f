"""``marble run --plan`` (marble.plan): model shapes offline, FLOPs against torch's own counter, task loads that
match what extraction really reads, unit-cost sources, and a plan that does no work."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from marble.cli import app
from marble.plan import make_plan, render
from marble.plan.costs import BUILTIN_CPU, UnitCosts, load_costs
from marble.plan.shapes import model_shape, transformer_gflop, transformer_params
from marble.plan.workload import task_load
from marble.registry import get_card
from marble.testing import fixtures

ROOT = Path(__file__).resolve().parents[1]


def _hubert(preset: str):
    from transformers import HubertModel

    from marble.encoders.mert import hubert_config_from_mert
    from marble.pretrain.config import get_preset
    from marble.pretrain.export import mert_config_dict

    torch.manual_seed(0)
    return HubertModel(hubert_config_from_mert(mert_config_dict(get_preset(preset)))).eval()


@pytest.mark.parametrize("preset,seconds", [("tiny", 3.0), ("95m", 1.0)])
def test_flops_match_torchs_counter(preset, seconds):
    """torch's FlopCounterMode counts the convolutions and linear layers of a real forward pass; the attention
    products (sdpa) it does not count are added as 4 T^2 H per layer."""
    from torch.utils.flop_counter import FlopCounterMode

    from marble.encoders.hf import conv_num_frames, walk_hidden_states

    model = _hubert(preset)
    cfg = model.config.to_dict()
    n = int(seconds * 24000)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        walk_hidden_states(model, torch.zeros(1, n))
    t = conv_num_frames(n, cfg["conv_kernel"], cfg["conv_stride"])
    attention = 4.0 * cfg["num_hidden_layers"] * t * t * cfg["hidden_size"]
    assert transformer_gflop(cfg, n) == pytest.approx((counter.get_total_flops() + attention) / 1e9, rel=2e-3)
    weights = sum(p.numel() for p in model.parameters())
    assert transformer_params(cfg) == pytest.approx(weights, rel=0.05)  # biases, norms, mask embedding left out


def test_shapes_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to find, nothing fetched
    m95 = model_shape("m-a-p/MERT-v1-95M")
    assert (m95.kind, m95.num_states, m95.dim, m95.sample_rate, m95.frame_rate) == ("transformer", 13, 768, 24000, 75.0)
    assert "not downloaded" in m95.source
    m330 = model_shape("m-a-p/MERT-v1-330M")
    assert (m330.num_states, m330.dim) == (25, 1024) and m330.params > 3 * m95.params
    assert model_shape("someone/unknown-model").kind == "unknown"
    hc = model_shape("handcrafted")
    assert (hc.kind, hc.num_states, hc.dim) == ("handcrafted", 4, 96)

    from marble.demo import tiny_mert

    d = tiny_mert(tmp_path / "tiny")
    local = model_shape(str(d))
    assert (local.kind, local.num_states, local.dim) == ("transformer", 5, 64)
    assert local.source.endswith("config.json")
    plug = model_shape(f"{ROOT / 'tests' / 'extract_plugin.py'}:ToyEncoder")
    assert plug.kind == "dense" and plug.num_states == 4 and plug.params == 8 * 160 + 3 * (8 * 8 + 8) + 16


def test_official_counts_without_data(tmp_path):
    gtzan = task_load(get_card("gtzan"), tmp_path, 24000)
    tsv = pd.read_csv(ROOT / "marble" / "splits" / "data" / "gtzan.tsv", sep="\t")
    assert gtzan.source == "official list"
    assert {s: x.items for s, x in gtzan.splits.items()} == tsv["split"].value_counts().to_dict()
    assert gtzan.seconds == pytest.approx(929 * 30.0)
    musdb = task_load(get_card("musdb"), tmp_path, 24000)
    assert {s: x.items for s, x in musdb.splits.items()} == {"train": 86, "valid": 14, "test": 50}
    assert not musdb.splits["train"].cached and musdb.splits["valid"].cached  # training chunks: on the fly


def test_load_matches_what_extraction_reads(tmp_path):
    """Items and windows from file headers equal the rows the real extraction caches (EMO: 5 s windows of a 30 s
    crop; files of 12 s give 2 windows, the 2 s tail is dropped)."""
    from marble.cache.extract import extract
    from marble.datasets import get_dataset
    from marble.encoders import load_encoder
    from marble.encoders.identity import model_cache_dir

    fixtures.write_emo(tmp_path / "data", per_split=3, seconds=12.0)
    fixtures.write_gtzan(tmp_path / "data", per_split=2, seconds=3.0)
    enc = load_encoder("handcrafted")
    for task in ("emo", "gtzan"):
        card = get_card(task)
        load = task_load(card, tmp_path / "data", enc.sample_rate, allow_partial=True)
        assert load.source == "data"
        ds = get_dataset(card, tmp_path / "data", allow_partial=True)
        items = {s: ds.items(s) for s in card.splits.names}
        extract(card, enc, items, tmp_path / "cache", num_workers=0, progress=False)
        manifest = json.loads((model_cache_dir(tmp_path / "cache", enc, task) / "manifest.json").read_text())
        for s, x in load.splits.items():
            assert x.items == manifest["splits"][s]["n_items"]
            assert sum(x.windows.values()) == manifest["splits"][s]["n_rows"]
        per_file = 12.0 if task == "emo" else 3.0
        assert load.seconds == pytest.approx(per_file * load.items, rel=1e-3)
    assert sum(load.splits["train"].windows.values()) == 2  # gtzan: one window per file


def _costs(**over) -> UnitCosts:
    v = {"decode_s_per_audio_s": 0.001, "handcrafted_s_per_audio_s": 0.002, "transformer_s_per_gflop": 0.04,
         "s_per_window": 0.01, "startup_s": 5.0, "probe_fixed_s_per_task": 2.0, "probe_s_per_gflop": 0.1,
         "probe_s_per_probe_epoch": 0.001, "probe_s_per_probe_epoch_row": 1e-5, "probe_epochs_per_patience": 1.5}
    v.update(over)
    return UnitCosts(v, "test figures", "cpu")


def test_plan_arithmetic(tmp_path):
    """Extraction = windows x (GFLOPs x rate + per-window) + decoding; probing = fixed + FLOPs + bookkeeping over
    probes x typical epochs, bounded by patience + 1 and the cap."""
    fixtures.write_gtzan(tmp_path / "data", per_split=2, seconds=3.0)
    c = _costs()
    plan = make_plan("m-a-p/MERT-v1-95M", "gtzan", data_dir=tmp_path / "data", allow_partial=True, costs=c)
    tp = plan.tasks[0]
    n = 3 * 24000
    assert tp.extract_s == pytest.approx(6 * (0.04 * transformer_gflop(plan.shape.arch, n) + 0.01) + 0.001 * 18)
    hc = make_plan("handcrafted", "gtzan", data_dir=tmp_path / "data", allow_partial=True, costs=c).tasks[0]
    assert hc.extract_s == pytest.approx(0.002 * 18 + 0.01 * 6 + 0.001 * 18)  # per audio second + per window + decode
    assert tp.probes == 14 * 6 and tp.epochs == 30.0  # 1.5 x patience 20
    gflop = 84 * 30 * (3 * 2 + 2) * 2.0 * (768 * 512 + 512 * 10) / 1e9
    assert tp.probe_s == pytest.approx(2.0 + 0.1 * gflop + 0.001 * 84 * 30 + 1e-5 * 84 * 30 * 2)
    lo, hi = tp.probe_range
    assert lo < tp.probe_s < hi
    assert tp.cache_bytes == 6 * 13 * 768 * 2
    text = render(plan)
    assert "| gtzan | on disk | 2/2/2 |" in text and "test figures" in text
    reduced = make_plan("m-a-p/MERT-v1-95M", "gtzan", data_dir=tmp_path / "data", allow_partial=True, costs=c,
                        layers="0,weighted", lrs="1e-3", max_epochs=5)
    assert reduced.tasks[0].probes == 2 and reduced.tasks[0].epochs == 5.0


def test_frame_plan_arithmetic(tmp_path):
    """Frame tasks: the training crops are read and encoded on the fly (the encoder's computation, no extraction
    pipeline per window) once per epoch of the sweep (its longest probe: typical x sweep/mean, capped), the heads
    over the probes' typical epochs; MUSDB's STFT figure is per second of training chunk (its mixture and its four
    sources together), counted once."""
    musdb = {"musdb_train_s_per_model_frame": 1e-4, "musdb_valid_s_per_model_second": 0.05,
             "musdb_stft_s_per_audio_second": 0.02, "musdb_final_s_per_model_second": 0.07,
             "musdb_museval_s_per_source_second": 0.04}
    beat = {"beat_train_s_per_probe_frame": 2e-5, "beat_decode_s_per_probe_track_second": 5e-4,
            "beat_score_s_per_probe_track": 2e-4}
    c = _costs(probe_sweep_epochs_per_mean=2.0, **musdb, **beat)
    fixtures.write_musdb(tmp_path / "m", per_split=1, seconds=4.0)
    tp = make_plan("handcrafted", "musdb", data_dir=tmp_path / "m", allow_partial=True, costs=c, layers="3",
                   lrs="1e-3").tasks[0]
    assert tp.probes == 1 and tp.epochs == 7.5  # 1.5 x patience 5; the sweep: 15 epochs (cap 50)
    chunk_s = 64 * 6.0  # 64 chunks of 6 s per training track and epoch
    shared = 0.002 * chunk_s + 0.001 * chunk_s * 4 + 0.02 * chunk_s  # encoder, the 4 stems read, STFT
    models = 0.0001 * 4 * chunk_s * 75 + 0.05 * 4 * 4.0  # 4 LSTMs: training frames, validation reconstruction
    final = 0.07 * 4 * (4.0 + 4.0) + 0.04 * 4 * (4.0 + 4.0)  # the selected models on test and valid, museval
    assert tp.probe_s == pytest.approx(shared * 15 + models * 7.5 + final)
    fixtures.write_gtzan_beat(tmp_path / "b", per_split=2, seconds=5.0)
    tb = make_plan("handcrafted", "gtzan-beat", data_dir=tmp_path / "b", allow_partial=True, costs=c).tasks[0]
    assert tb.probes == 5 * 6 and tb.epochs == 30.0  # 1.5 x patience 20; the sweep: 60 epochs (cap 100)
    crops = 0.002 * 2 * 10.0 + 0.001 * 2 * 10.0  # a 10 s crop of each training track, encoded and read
    frames = 30 * 2 * 10.0 * 75
    heads = 0.1 * frames * 3 * 2.0 * (96 * 512 + 512) / 1e9
    epoch = heads + 2e-5 * frames + 5e-4 * 30 * 2 * 5.0 + 2e-4 * 30 * 2
    final = 5e-4 * 30 * 2 * 10.0 + 2e-4 * 30 * 4
    assert tb.probe_s == pytest.approx(crops * 60 + epoch * 30 + final)


def test_cost_sources(tmp_path):
    def write(name, **doc):
        base = {"schema": "marble-bench-suite/1", "smoke": False, "profile": "cpu", "date": "2026-12-01",
                "commit": "abc123", "time_kind": "cpu", "device": {"type": "cpu", "name": "Some CPU"},
                "unit_costs": {"transformer_s_per_gflop": 0.5, "time_kind": "cpu"}}
        base.update(doc)
        (tmp_path / name).write_text(json.dumps(base))

    assert load_costs("cuda", None, tmp_path) is None  # no GPU measurement: no time estimate, said so
    write("cpu-old.json", date="2026-11-01")
    write("cpu-new.json", unit_costs={"transformer_s_per_gflop": 0.25, "time_kind": "cpu"})
    write("cpu-smoke.json", smoke=True, date="2027-01-01")
    write("gpu.json", device={"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}, time_kind="wall",
          unit_costs={"transformer_s_per_gflop": 0.001, "time_kind": "wall"})
    c = load_costs("cpu", None, tmp_path)
    assert c.get("transformer_s_per_gflop") == 0.25 and "cpu-new.json" in c.source and "abc123" in c.source
    g = load_costs("cuda", "NVIDIA A100", tmp_path)
    assert g.time_kind == "wall" and "another GPU" in g.source


def test_builtin_cpu_figures_are_the_committed_measurement():
    files = sorted((ROOT / "bench" / "results").glob("cpu-*.json"))
    if not files:
        pytest.skip("no committed CPU measurement yet")
    doc = json.loads(files[-1].read_text())
    assert BUILTIN_CPU["unit_costs"] == doc["unit_costs"]
    assert BUILTIN_CPU["commit"] == doc["commit"] and BUILTIN_CPU["measured"] == doc["date"]


def test_cli_plan_does_no_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fixtures.write_gtzan(tmp_path / "data", per_split=2, seconds=2.0)
    res = CliRunner().invoke(app, ["run", "--model", "m-a-p/MERT-v1-95M", "--tasks", "gtzan,gtzan-beat",
                                   "--allow-partial", "--plan", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "| gtzan | on disk | 2/2/2 |" in res.output
    assert "| gtzan-beat | on disk | 0/0/0 |" not in res.output
    assert "published architecture of m-a-p/MERT-v1-95M" in res.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()
    gpu = CliRunner().invoke(app, ["run", "--model", "handcrafted", "--tasks", "gtzan", "--plan", "--device", "cuda"])
    assert gpu.exit_code == 0, gpu.output
    if not list((ROOT / "bench" / "results").glob("*.json")) or "cuda" not in "".join(
            p.read_text() for p in (ROOT / "bench" / "results").glob("*.json")):
        assert "not estimated" in gpu.output and "make bench-gpu" in gpu.output


def _run_counts(cache: Path, model: str, task: str) -> tuple[dict, dict]:
    """Files and cached rows per split, from the manifest the real run wrote."""
    from marble.encoders.identity import model_cache_dir

    m = json.loads((model_cache_dir(cache, model, task) / "manifest.json").read_text())
    return ({s: v["n_items"] for s, v in m["splits"].items()}, {s: v.get("n_rows") for s, v in m["splits"].items()})


def test_plan_counts_equal_the_real_runs(tmp_path, monkeypatch):
    """The files (and windows) ``--plan`` prints are the ones ``marble run`` then extracts: the demo task and
    fixtures of three tasks in their official layouts (EMO's 12 s files make several windows), compared with the
    cache manifests of a real run (a reduced sweep: the counts do not depend on it)."""
    from marble.demo import TASK_ID, synthesize

    monkeypatch.chdir(tmp_path)
    demo_data, demo_tasks = synthesize(tmp_path / "demo", clips_per_class=5, seconds=1.0)
    fixtures.write_gtzan(tmp_path / "data", per_split={"train": 3, "valid": 2, "test": 2}, seconds=3.0)
    fixtures.write_emo(tmp_path / "data", per_split=2, seconds=12.0)
    fixtures.write_mtt(tmp_path / "data", per_split=2, seconds=4.0)
    cases = [(TASK_ID, ["--data-dir", str(demo_data), "--tasks-dir", str(demo_tasks)]),
             ("gtzan,emo,mtt", ["--data-dir", str(tmp_path / "data"), "--allow-partial"])]
    reduced = ["--layers", "0", "--lrs", "1e-3", "--max-epochs", "1", "--device", "cpu", "--num-workers", "0", "-q"]
    runner = CliRunner()
    for tasks, opts in cases:
        common = ["--model", "handcrafted", "--tasks", tasks, "--cache-dir", str(tmp_path / "cache"),
                  "--results-dir", str(tmp_path / "results"), *opts, *reduced]
        planned = runner.invoke(app, ["run", *common, "--plan"])
        assert planned.exit_code == 0, planned.output
        assert not (tmp_path / "cache").exists() or tasks != TASK_ID  # --plan did no work
        tasks_dir = demo_tasks if tasks == TASK_ID else None
        plan = make_plan("handcrafted", tasks, data_dir=opts[1], tasks_dir=tasks_dir, device="cpu",
                         allow_partial=tasks != TASK_ID)
        ran = runner.invoke(app, ["run", *common])
        assert ran.exit_code == 0, ran.output
        for tp in plan.tasks:
            items, rows = _run_counts(tmp_path / "cache", "handcrafted", tp.load.task)
            assert {s: x.items for s, x in tp.load.splits.items()} == items, tp.load.task
            assert {s: sum(x.windows.values()) for s, x in tp.load.splits.items()} == rows, tp.load.task
            shown = "/".join(str(items[s]) for s in tp.load.splits)
            assert f"| {tp.load.task} | on disk | {shown} |" in planned.output
    emo_items, emo_rows = _run_counts(tmp_path / "cache", "handcrafted", "emo")
    assert emo_rows == {s: 3 * n for s, n in emo_items.items()}  # 12 s files: two 5 s windows and the 2 s tail
    assert _run_counts(tmp_path / "cache", "handcrafted", TASK_ID)[0] == {"train": 12, "valid": 4, "test": 4}
