"""Export: the folder ``marble pretrain export`` writes loads with ``marble.encoders.load_encoder`` and gives
the training backbone's hidden states (post-LN and pre-LN, fp32), and the whole CLI path
``marble pretrain run`` -> ``export`` -> ``marble extract`` works on a fixture task."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from marble.cli import app
from marble.encoders import load_encoder
from marble.pretrain.config import get_preset
from marble.pretrain.export import export_checkpoint
from marble.pretrain.model import MERTPretrainModel
from marble.pretrain.trainer import TrainConfig, build_optimizer, normalize_batch, save_checkpoint
from pretrain_helpers import make_tiny_encodec, write_audio


def _checkpoint(tmp_path, preset_name: str):
    torch.manual_seed(0)
    preset = get_preset(preset_name)
    model = MERTPretrainModel(preset)
    with torch.no_grad():  # non-trivial norms and biases, as after training
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        model.hubert.masked_spec_embed.normal_()
    cfg = TrainConfig(audio_dir="a", out_dir=str(tmp_path / "run"), preset=preset_name, steps=10)
    opt, sched = build_optimizer(model, cfg, preset)
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", model=model, optimizer=opt, scheduler=sched, step=7,
                    preset=preset, cfg=cfg, teacher={"source": "x"})
    return model.eval(), preset


@pytest.mark.parametrize("preset_name", ["tiny", "tiny-preln"])
def test_export_loads_with_marble_and_matches_the_backbone(tmp_path, preset_name):
    model, preset = _checkpoint(tmp_path, preset_name)
    out = export_checkpoint(tmp_path / "run", tmp_path / "export")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "mert_model" and cfg["do_stable_layer_norm"] == preset.pre_ln
    assert cfg["attention_relax"] == preset.attention_relax and cfg["sample_rate"] == 24000
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["do_normalize"] == (not preset.pre_ln) and pre["sampling_rate"] == 24000
    from safetensors.torch import load_file

    assert set(load_file(str(out / "model.safetensors"))) == set(model.hubert.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ignored keys, no missing tensors
        enc = load_encoder(str(out))
    assert enc.num_states == 3 and enc.dim == 32 and enc.sample_rate == 24000 and enc.frame_rate == 75.0
    wav = np.random.default_rng(0).standard_normal((2, 12000)).astype(np.float32) * 0.3
    x = torch.from_numpy(np.stack([enc.prepare(w) for w in wav]))
    train_x = normalize_batch(torch.from_numpy(wav)) if preset.normalize else torch.from_numpy(wav)
    torch.testing.assert_close(x, train_x, rtol=1e-5, atol=1e-5)  # the input the backbone was trained on
    got = enc.hidden_states(x)
    with torch.no_grad():
        hub = model.hubert(train_x, output_hidden_states=True)
        heads_input = model(train_x)["hidden"]
    want = torch.stack([*hub.hidden_states[:-1], hub.last_hidden_state], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the last state marble reports is exactly what the prediction heads were trained on
    torch.testing.assert_close(got[:, -1], heads_input, rtol=1e-5, atol=1e-5)
    meta = json.loads((out / "marble_pretrain.json").read_text())
    assert meta["step"] == 7 and meta["preset"] == preset_name


def test_cli_run_export_extract(tmp_path):
    from marble.cache.store import read_clip_split
    from marble.encoders.identity import model_cache_dir
    from marble.testing import fixtures

    runner = CliRunner()
    audio, run, export, data, cache = (tmp_path / n for n in ("audio", "run", "export", "data", "cache"))
    write_audio(audio, n=3, seconds=1.5)
    enc = make_tiny_encodec(tmp_path / "encodec")
    r = runner.invoke(app, ["pretrain", "run", "--audio-dir", str(audio), "--out", str(run), "--preset", "tiny",
                            "--steps", "3", "--batch-size", "2", "--crop-seconds", "1", "--teacher", str(enc),
                            "--device", "cpu", "--num-workers", "0", "--save-every", "2", "-q"])
    assert r.exit_code == 0, r.output
    assert "step 3/3" in r.output and (run / "checkpoint.pt").is_file()
    r = runner.invoke(app, ["pretrain", "export", str(run), str(export)])
    assert r.exit_code == 0, r.output
    fixtures.write_gtzan(data, per_split=1)
    r = runner.invoke(app, ["extract", "--model", str(export), "--task", "gtzan", "--data-dir", str(data),
                            "--cache-dir", str(cache), "--allow-partial", "--num-workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    train = read_clip_split(model_cache_dir(cache, str(export), "gtzan") / "train")
    assert train.features.shape[1:] == (3, 32) and np.isfinite(train.features).all()


def test_cli_errors_name_the_fix(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "marble", "pretrain", "run", "--audio-dir", str(tmp_path / "missing"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=root,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 2 and "error:" in r.stderr and "--audio-dir" in r.stderr and "Traceback" not in r.stderr
    runner = CliRunner()
    r = runner.invoke(app, ["pretrain", "export", str(tmp_path / "nothing"), str(tmp_path / "x")])
    assert r.exit_code != 0 and "no pretraining checkpoint" in str(r.exception)
