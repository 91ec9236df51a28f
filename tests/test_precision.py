"""Extraction precision (PROTOCOL §2): fp32 compute is the protocol and the default on every device; bf16/fp16
autocast stays available as a speed option, recorded in the cache manifest, carried into the result and listed as a
deviation by `marble leaderboard check --submission`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from extract_plugin import ToyEncoder  # noqa: E402

from marble.cache import store  # noqa: E402
from marble.cache.extract import extract, resolve_dtype  # noqa: E402
from marble.cli import app  # noqa: E402
from marble.datasets import get_dataset  # noqa: E402
from marble.probe.clip import run_clip  # noqa: E402
from marble.registry import get_card  # noqa: E402
from marble.results import write_result  # noqa: E402
from marble.results.conformance import protocol_deviations  # noqa: E402
from marble.testing.fixtures import write_gtzan  # noqa: E402
from tests.test_conformance import complete_result  # noqa: E402

PLUGIN = str(Path(__file__).parent / "extract_plugin.py") + ":ToyEncoder"
runner = CliRunner()


def test_default_is_fp32_on_every_device():
    for dev in ("cpu", "cuda"):  # resolving needs no GPU
        assert resolve_dtype("auto", torch.device(dev)) == ("fp32", None)
        assert resolve_dtype("fp32", torch.device(dev)) == ("fp32", None)
    assert resolve_dtype("bf16", torch.device("cpu")) == ("bf16", torch.bfloat16)


def test_cli_extract_defaults_to_fp32_and_a_bf16_cache_is_flagged(tmp_path):
    write_gtzan(tmp_path / "data", per_split=2, seconds=1.5)
    base = ["extract", "--model", PLUGIN, "--task", "gtzan", "--data-dir", str(tmp_path / "data"), "--device", "cpu",
            "--num-workers", "0", "-q", "--allow-partial"]
    res = runner.invoke(app, base + ["--cache-dir", str(tmp_path / "fp32")])
    assert res.exit_code == 0, res.output
    m = store.read_manifest(Path(res.stdout.strip().splitlines()[-1]))
    assert m["compute_dtype"] == "fp32" and m["dtype"] == "float16" and "tf32_matmul" not in m  # CPU: plain fp32
    res = runner.invoke(app, base + ["--cache-dir", str(tmp_path / "bf16"), "--dtype", "bf16"])
    assert res.exit_code == 0, res.output
    bf16_dir = Path(res.stdout.strip().splitlines()[-1])
    assert store.read_manifest(bf16_dir)["compute_dtype"] == "bf16"
    a = store.read_clip_split(Path(str(bf16_dir).replace("bf16", "fp32", 1)) / "train").features
    b = store.read_clip_split(bf16_dir / "train").features
    assert not np.array_equal(a, b)  # autocast really ran in bf16

    # the probe carries the cache's precision into the result; the submission check names it
    card = get_card("gtzan")
    r = run_clip(card, PLUGIN, cache_root=tmp_path / "bf16", results_dir=tmp_path / "res", name="toy",
                 layers=(1,), lrs=(1e-3,), max_epochs=2)
    assert r["manifest"]["compute_dtype"] == "bf16"
    assert any("bf16 autocast" in d for d in protocol_deviations(r, card))


def test_submission_check_lists_bf16_as_a_deviation(tmp_path):
    ok = complete_result("fp32/enc")
    ok["manifest"]["compute_dtype"] = "fp32"
    low = complete_result("bf16/enc")
    low["manifest"]["compute_dtype"] = "bf16"
    assert protocol_deviations(ok, get_card("gtzan")) == []
    assert protocol_deviations(low, get_card("gtzan")) == [
        "features extracted with bf16 autocast (protocol: fp32; re-extract with --dtype fp32)"]
    paths = []
    for r in (ok, low):
        p = tmp_path / r["model"].replace("/", "_") / "constrained.json"
        write_result(p, r)
        paths.append(str(p))
    res = runner.invoke(app, ["leaderboard", "check", "--submission", *paths])
    assert res.exit_code == 2
    assert f"{paths[0]}: OK" in res.output
    assert f"{paths[1]}: not a complete constrained-track run" in res.output and "bf16 autocast" in res.output
    res = runner.invoke(app, ["leaderboard", "check", paths[1]])  # without --submission: valid, marked reduced
    assert res.exit_code == 0 and "reduced protocol" in res.output and "bf16" in res.output


class _PrecisionSpy(ToyEncoder):
    """Records the fp32 matmul settings in force while it encodes."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def hidden_states(self, wav, upto=None):
        # torch's new precision API (reading the legacy allow_tf32 flag after a new-API change raises)
        self.seen.add((torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision))
        return super().hidden_states(wav, upto)


def test_extraction_matmuls_in_full_fp32_unless_tf32_is_asked(tmp_path):
    """PROTOCOL §2 (third edition): extraction computes matmuls in full fp32 (TF32 off) whatever the caller had
    set, and restores the caller's setting; --tf32 allows TF32 and is recorded in the cache manifest."""
    card = get_card("gtzan")
    ds = get_dataset(card, _gtzan(tmp_path), allow_partial=True)
    items = {s: ds.items(s) for s in ("train", "valid", "test")}
    m = torch.backends.cuda.matmul
    before = m.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision
    try:
        m.fp32_precision = "tf32"  # a caller that allowed TF32 (e.g. torch.set_float32_matmul_precision("high"))
        spy = _PrecisionSpy()
        d = extract(card, spy, items, tmp_path / "full", device="cpu", progress=False)
        assert spy.seen == {("ieee", "ieee")}
        assert m.fp32_precision == "tf32"  # the caller's setting is back
        assert store.read_manifest(d).get("tf32_matmul") is None and store.read_manifest(d)["compute_dtype"] == "fp32"
        spy = _PrecisionSpy()
        m.fp32_precision = "ieee"
        d = extract(card, spy, items, tmp_path / "tf32", device="cpu", progress=False, tf32=True)
        assert spy.seen == {("tf32", "tf32")} and m.fp32_precision == "ieee"
        assert store.read_manifest(d)["tf32_matmul"] is True
    finally:
        m.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision = before


def _gtzan(tmp_path):
    write_gtzan(tmp_path / "data", per_split=2, seconds=1.5)
    return tmp_path / "data"


def test_cli_tf32_is_recorded_in_cache_and_result_and_flagged(tmp_path):
    """`marble extract --tf32`: the cache manifest and the probe result record tf32_matmul; the submission check
    lists it as a deviation (as bf16); a default extraction records tf32_matmul false and is not flagged."""
    data = _gtzan(tmp_path)
    base = ["extract", "--model", PLUGIN, "--task", "gtzan", "--data-dir", str(data), "--device", "cpu",
            "--num-workers", "0", "-q", "--allow-partial"]
    res = runner.invoke(app, base + ["--cache-dir", str(tmp_path / "tf32"), "--tf32"])
    assert res.exit_code == 0, res.output
    assert store.read_manifest(Path(res.stdout.strip().splitlines()[-1]))["tf32_matmul"] is True
    card = get_card("gtzan")
    r = run_clip(card, PLUGIN, cache_root=tmp_path / "tf32", results_dir=tmp_path / "res", name="toy",
                 layers=(1,), lrs=(1e-3,), max_epochs=1)
    assert r["manifest"]["tf32_matmul"] is True and r["manifest"]["compute_dtype"] == "fp32"
    assert "features extracted with TF32 matmuls (protocol: full fp32 matmuls; re-extract without --tf32)" \
        in protocol_deviations(r, card)
    ok = complete_result("fp32/enc")
    ok["manifest"].update(compute_dtype="fp32", tf32_matmul=False)
    tf = complete_result("tf32/enc")
    tf["manifest"].update(compute_dtype="fp32", tf32_matmul=True)
    assert protocol_deviations(ok, card) == []
    assert protocol_deviations(tf, card) == [
        "features extracted with TF32 matmuls (protocol: full fp32 matmuls; re-extract without --tf32)"]
    p = tmp_path / "tf32.json"
    write_result(p, tf)
    res = runner.invoke(app, ["leaderboard", "check", "--submission", str(p)])
    assert res.exit_code == 2 and "TF32 matmuls" in res.output
