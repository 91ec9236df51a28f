"""Trust, round 3 (issue 22), pretraining: a k-means teacher artefact never makes ``pretrain run`` import code
(the model it names is never loaded), a teacher with NaN centroids or a zero std is refused even with a valid
self-hash, settings that cannot train are refused, and a full disk while appending ``log.jsonl`` is an error
line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from marble.pretrain.teachers.kmeans import fit_teacher, read_teacher, save_teacher
from pretrain_helpers import write_audio
from tests.test_trust import _one_error_line

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}


def _marble(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marble", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=ENV, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    write_audio(root / "audio", n=3, seconds=1.5)
    teacher = root / "mfcc.safetensors"
    fit_teacher(root / "audio", teacher, features="mfcc", clusters=[4], crops=8, crop_seconds=1.0, seed=0)
    return {"root": root, "audio": root / "audio", "teacher": teacher}


def _run(corpus, out, *extra, **kw):
    return _marble("pretrain", "run", "--audio-dir", corpus["audio"], "--out", out, "--preset", "tiny", "--steps", "2",
                   "--batch-size", "2", "--crop-seconds", "1", "--num-workers", "0", "--device", "cpu", "-q", *extra,
                   **kw)


def test_a_teacher_never_makes_pretrain_run_import_the_model_it_names(corpus, tmp_path):
    """Issue 22 item 2: an artefact whose description names ``evil.py:Evil`` as the hidden-state checkpoint, with
    a self-hash recomputed to match. Before the fix `pretrain run` loaded it as a plug-in (the marker appeared)."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.py"
    evil.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                    "from marble.encoders.handcrafted import HandcraftedEncoder as Evil\n")
    desc, tensors, _ = read_teacher(corpus["teacher"])
    desc.pop("format")
    dim = tensors["centroids.mfcc"].shape[1]
    desc["features"] = {"encoder": f"{evil}:Evil", "layer": 0, "groups": ["layer0"],
                        "identity": desc["features"]["identity"]}
    desc["codebooks"] = [{"name": "layer0", "size": 4, "dim": dim, "frames": 100}]
    art = tmp_path / "planted.safetensors"
    save_teacher(art, desc, {k.replace("mfcc", "layer0"): v for k, v in tensors.items()})  # a valid self-hash
    r = _run(corpus, tmp_path / "run", "--teacher", f"kmeans:{art}")
    assert not marker.exists(), "pretrain run imported the file the teacher named"
    _one_error_line(r, "never loads a model an artefact names", "--teacher-encoder")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    # a built-in teacher takes no --teacher-encoder; an EnCodec teacher neither
    r = _run(corpus, tmp_path / "run", "--teacher", f"kmeans:{corpus['teacher']}", "--teacher-encoder", f"{evil}:Evil")
    _one_error_line(r, "applies to teachers of hidden states only")
    assert not marker.exists()


@pytest.mark.parametrize("part, value, expected", [
    ("centroids", np.nan, "centroids hold NaN or inf values"),
    ("std", 0.0, "std has 1 zero or negative value(s)"),
    ("mean", np.inf, "mean hold NaN or inf values"),
])
def test_a_teacher_with_nan_centroids_or_zero_std_is_refused(corpus, tmp_path, part, value, expected):
    """The hash is a self-hash: a file rewritten with its hash recomputed passes it, so the values are checked."""
    desc, tensors, _ = read_teacher(corpus["teacher"])
    desc.pop("format")
    tensors = {k: np.array(v) for k, v in tensors.items()}
    tensors[f"{part}.mfcc"].reshape(-1)[1] = value
    art = tmp_path / "bad.safetensors"
    save_teacher(art, desc, tensors)
    r = _run(corpus, tmp_path / "run", "--teacher", f"kmeans:{art}")
    _one_error_line(r, str(art), expected, "refit")


@pytest.mark.parametrize("args, expected", [
    (("--steps", "-1"), "--steps -1: must be at least 1"),
    (("--steps", "0"), "--steps 0: must be at least 1"),
    (("--lr", "nan"), "--lr nan: must be a positive, finite number"),
    (("--lr", "-1e-3"), "--lr -0.001: must be a positive, finite number"),
    (("--warmup-steps", "5"), "--warmup-steps 5: must lie in 0..--steps (2)"),
    (("--save-every", "0"), "--save-every 0: must be at least 1"),
])
def test_settings_that_cannot_train_are_refused(corpus, tmp_path, args, expected):
    """Issue 22 partials: `--steps -1` exited 0 with an untrained checkpoint, `--lr nan` gave a traceback."""
    r = _run(corpus, tmp_path / "run", "--teacher", f"kmeans:{corpus['teacher']}", *args)
    _one_error_line(r, expected)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_disk_full_while_appending_the_training_log_is_an_error_line(corpus, tmp_path):
    import resource

    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text(json.dumps({"old": "x" * 60}) + "\n" * 40_000)  # ~40 kB already there

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))  # run.json fits, the log cannot grow

    r = _run(corpus, out, "--teacher", f"kmeans:{corpus['teacher']}", "--log-every", "1", preexec_fn=small_files)
    _one_error_line(r, "log.jsonl: cannot append the training log (File too large)", "rerun the same command")
