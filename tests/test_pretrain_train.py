"""The training loop end to end on CPU: the loss goes down, targets come from the clean audio, unreadable
and short files are skipped, interrupted runs (KeyboardInterrupt, SIGINT, SIGKILL) resume to the same
weights as an uninterrupted run, and input errors are MarbleErrors naming the fix."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import marble.pretrain.trainer as trainer_mod
from marble.errors import MarbleError
from marble.pretrain.trainer import CHECKPOINT, TrainConfig, load_checkpoint, train
from pretrain_helpers import make_tiny_encodec, write_audio

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    audio = root / "audio"
    write_audio(audio, n=4, seconds=2.0)
    write_audio(audio / "flac", n=2, seconds=1.5, sr=24000, seed=1, ext="flac")
    (audio / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)  # unreadable: skipped, reported
    write_audio(audio / "short", n=1, seconds=0.4)                            # shorter than the crop: skipped
    enc = make_tiny_encodec(root / "encodec")
    return {"root": root, "audio": audio, "encodec": enc}


def _cfg(corpus, out, **over) -> TrainConfig:
    base = dict(audio_dir=str(corpus["audio"]), out_dir=str(out), preset="tiny", steps=8, batch_size=4,
                crop_seconds=1.0, teacher=str(corpus["encodec"]), device="cpu", save_every=2, log_every=1, seed=3,
                num_workers=0)
    base.update(over)
    return TrainConfig(**base)


def _weights(out) -> dict[str, torch.Tensor]:
    return load_checkpoint(out)["model"]


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loss_decreases_and_targets_come_from_clean_audio(corpus, tmp_path, monkeypatch, capsys):
    seen = {}
    orig_mix, orig_cqt = trainer_mod.inbatch_noise_mixup, trainer_mod.CQT.forward

    def spy_mix(x, *a, **k):
        out, segs = orig_mix(x, *a, **k)
        seen.setdefault("mix", []).append((x.clone(), out.clone(), segs))
        return out, segs

    def spy_cqt(self, x):
        seen.setdefault("cqt_in", []).append(x.clone())
        return orig_cqt(self, x)

    monkeypatch.setattr(trainer_mod, "inbatch_noise_mixup", spy_mix)
    monkeypatch.setattr(trainer_mod.CQT, "forward", spy_cqt)
    losses = []
    summary = train(_cfg(corpus, tmp_path / "run", steps=30, save_every=30), progress=False,
                    on_step=lambda s, m: losses.append(m))
    assert summary["step"] == 30 and len(losses) == 30
    first = sum(m["loss"] for m in losses[:5]) / 5
    last = sum(m["loss"] for m in losses[-5:]) / 5
    assert last < 0.85 * first, (first, last)
    # the code predictions beat guessing uniformly over 1024 codes in each of the 8 codebooks
    assert sum(m["ce"] for m in losses[-5:]) / 5 < 8 * math.log(1024) - 3
    assert sum(m["accuracy"] for m in losses[-5:]) > sum(m["accuracy"] for m in losses[:5])
    assert all(0.3 < m["masked_frames"] / (4 * 74) < 0.8 for m in losses)
    # the CQT target is computed from the clean model input, before mixup; some steps do mix
    assert any(segs for _, _, segs in seen["mix"])
    for cqt_in, (clean, mixed, segs) in zip(seen["cqt_in"], seen["mix"]):
        assert torch.equal(cqt_in, clean)
        assert torch.equal(clean, mixed) == (not segs)
    err = capsys.readouterr().err
    assert "broken.wav" in err and "clip0.wav" in err and "shorter than" in err  # reported, not fatal
    log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert len(log) == 30 and '"ce_7"' in log[-1]


@pytest.fixture(scope="module")
def reference_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    train(_cfg(corpus, out), progress=False)
    return _weights(out)


def test_keyboard_interrupt_then_rerun_resumes_to_identical_weights(corpus, tmp_path, reference_run):
    out = tmp_path / "run"

    def stop(step, metrics):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(corpus, out), progress=False, on_step=stop)
    assert load_checkpoint(out)["step"] == 3  # saved on the interrupt, not only at save_every
    summary = train(_cfg(corpus, out), progress=False)
    assert summary["resumed_from"] == 3 and summary["step"] == 8
    _same(_weights(out), reference_run)


def test_sigint_finishes_the_step_saves_and_resumes(corpus, tmp_path, reference_run):
    out = tmp_path / "run"

    def ctrl_c(step, metrics):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # handled by the trainer: flag, save, KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under `nohup ... &`
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(corpus, out), progress=False, on_step=ctrl_c)
    assert load_checkpoint(out)["step"] == 5
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    train(_cfg(corpus, out), progress=False)
    _same(_weights(out), reference_run)


def test_sigkill_mid_run_then_rerun_resumes(corpus, tmp_path, reference_run):
    out = tmp_path / "run"
    cfg = _cfg(corpus, out)
    cmd = [sys.executable, "-m", "marble", "pretrain", "run", "--audio-dir", cfg.audio_dir, "--out", str(out),
           "--preset", "tiny", "--steps", "8", "--batch-size", "4", "--crop-seconds", "1.0", "--teacher", cfg.teacher,
           "--device", "cpu", "--save-every", "2", "--seed", "3", "--num-workers", "0", "-q"]
    # the child computes the first steps, this process the rest and the reference: the same thread count on both sides
    # (torch's sums split by it), whatever OMP_NUM_THREADS says and whatever test modules set at import
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while not (out / CHECKPOINT).is_file():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(out)["step"]  # the file is complete (atomic), never half-written
    assert 2 <= killed_at < 8
    summary = train(cfg, progress=False)
    assert summary["resumed_from"] == killed_at and summary["step"] == 8
    _same(_weights(out), reference_run)  # same process-independent result as the uninterrupted run


def test_finished_run_is_not_retrained_and_settings_must_match(corpus, tmp_path):
    out = tmp_path / "run"
    train(_cfg(corpus, out, steps=2), progress=False)
    assert train(_cfg(corpus, out, steps=2), progress=False)["done"]
    with pytest.raises(MarbleError, match="different settings.*new --out"):
        train(_cfg(corpus, out, steps=4, seed=4), progress=False)
    with pytest.raises(MarbleError, match="effective batch of 4.*new --out"):
        train(_cfg(corpus, out, steps=4, batch_size=2), progress=False)
    # more steps with the same settings continue the run
    assert train(_cfg(corpus, out, steps=3), progress=False)["step"] == 3


def test_input_errors(corpus, tmp_path):
    with pytest.raises(MarbleError, match="audio folder not found.*--audio-dir"):
        train(_cfg(corpus, tmp_path / "o", audio_dir=str(tmp_path / "nope")), progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio")
    with pytest.raises(MarbleError, match="no audio files found"):
        train(_cfg(corpus, tmp_path / "o", audio_dir=str(tmp_path / "empty")), progress=False)
    with pytest.raises(MarbleError, match="no EnCodec checkpoint.*--teacher"):
        train(_cfg(corpus, tmp_path / "o", teacher=str(tmp_path / "no-encodec")), progress=False)
    short = tmp_path / "short"
    write_audio(short, n=2, seconds=0.5)
    with pytest.raises(MarbleError, match="could not fill a batch.*--crop-seconds"):
        train(_cfg(corpus, tmp_path / "o2", audio_dir=str(short)), progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(MarbleError, match="cannot read the checkpoint"):
        train(_cfg(corpus, tmp_path / "bad"), progress=False)


def test_lr_schedule():
    from marble.pretrain.trainer import lr_factor

    assert lr_factor(0, 32000, 400000) == pytest.approx(1 / 32000)
    assert lr_factor(31999, 32000, 400000) == pytest.approx(1.0)
    assert lr_factor(32000, 32000, 400000) == pytest.approx(1.0)
    assert lr_factor(216000, 32000, 400000) == pytest.approx(0.5)
    assert lr_factor(400000, 32000, 400000) == 0.0
    assert TrainConfig(audio_dir="a", out_dir="b").resolved_warmup() == 32000
    assert replace(TrainConfig(audio_dir="a", out_dir="b"), steps=100).resolved_warmup() == 8
