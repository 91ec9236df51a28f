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
