"""k-means teachers (MERT-v0 / HuBERT iteration 1 and 2) against scikit-learn directly: the fitted centroids
and the codes equal a ``MiniBatchKMeans`` fitted and queried on the same standardised frames; the masked-
prediction loss with codebooks of unequal size equals a float64 re-computation over the valid codes only;
and artefacts that do not match (hash, feature definition, checkpoint weights, sample rate, resumed run)
are refused with an error naming the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import MiniBatchKMeans

from marble.encoders import load_encoder
from marble.encoders.handcrafted import HandcraftedEncoder
from marble.encoders.mert import save_mert_dir
from marble.errors import MarbleError
from marble.pretrain.config import get_preset
from marble.pretrain.data import CropBatches, list_audio_files
from marble.pretrain.export import backbone_state_dict, mert_config_dict
from marble.pretrain.losses import mert_loss
from marble.pretrain.model import MERTPretrainModel
from marble.pretrain.teachers.kmeans import (KMeansTeacher, TeacherMismatch, fit_teacher, read_teacher,
                                             save_teacher)
from marble.pretrain.trainer import TrainConfig, load_checkpoint, train
from pretrain_helpers import write_audio

ROOT = Path(__file__).resolve().parents[1]
CROPS, CROP_S, SEED = 16, 1.0, 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("kmeans")
    audio = root / "audio"
    write_audio(audio, n=4, seconds=2.0)
    teacher = root / "t.safetensors"
    fit_teacher(audio, teacher, features="logmel,chroma", clusters=[12, 7], crops=CROPS, crop_seconds=CROP_S,
                seed=SEED)
    return {"root": root, "audio": audio, "teacher": teacher}


def _crops(audio, sr=24000) -> torch.Tensor:
    """The crops the fit used: ``CropBatches`` of 8 per step, seeded with the fit's seed."""
    data = CropBatches(list_audio_files(audio), sr, CROP_S, 8, SEED, CROPS // 8)
    return torch.cat([data[s]["wav"] for s in range(CROPS // 8)])


def _sklearn(frames: np.ndarray, k: int):
    mean, std = frames.mean(0), frames.std(0) + 1e-5
    km = MiniBatchKMeans(n_clusters=k, random_state=SEED, batch_size=4096, max_iter=100, n_init=3)
    return km.fit((frames - mean) / std), mean, std


def test_fit_and_codes_equal_sklearn(corpus):
    desc, tensors, _ = read_teacher(corpus["teacher"])
    assert [(c["name"], c["size"], c["dim"]) for c in desc["codebooks"]] == [("logmel", 12, 64), ("chroma", 7, 12)]
    assert desc["sample_rate"] == 24000 and desc["frame_rate"] == 75.0
    feats = HandcraftedEncoder().features(_crops(corpus["audio"]))
    teacher = KMeansTeacher(corpus["teacher"])
    fresh = torch.from_numpy(np.random.default_rng(9).standard_normal((2, 24000)).astype(np.float32) * 0.1)
    fresh[1] = torch.sin(torch.arange(24000) * 2 * torch.pi * 440 / 24000)
    new = HandcraftedEncoder().features(fresh)
    codes = teacher.codes(fresh)
    assert codes.shape == (2, 2, 24000 // 320 + 1) and codes.dtype == torch.long
    for i, (name, k) in enumerate((("logmel", 12), ("chroma", 7))):
        frames = feats[name].reshape(-1, feats[name].shape[-1]).numpy()
        km, mean, std = _sklearn(frames, k)
        np.testing.assert_allclose(tensors[f"mean.{name}"], mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tensors[f"centroids.{name}"], km.cluster_centers_, rtol=1e-4, atol=1e-4)
        x = (new[name].reshape(-1, new[name].shape[-1]).numpy() - mean) / std
        assert np.array_equal(codes[:, i].reshape(-1).numpy(), km.predict(x))
    assert len(set(codes[:, 0].reshape(-1).tolist())) > 1  # different sounds, different codes


def test_loss_with_kmeans_targets_equals_float64_reference():
    preset = get_preset("tiny")
    sizes = [6, 4]
    preset.num_codebooks, preset.codebook_size, preset.extra["codebook_sizes"] = 2, 6, sizes
    torch.manual_seed(0)
    model = MERTPretrainModel(preset)
    hidden = torch.randn(2, 10, 32)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 2:7] = True
    codes = torch.stack([torch.randint(0, s, (2, 10)) for s in sizes], dim=1)
    cqt = torch.randn(2, 10, preset.cqt_bins)
    res = mert_loss(model, hidden, mask, codes, cqt, torch.tensor(0.0))
    # float64: per codebook, log-softmax over its own codes only (the padding codes do not exist)
    h = hidden[mask].double()
    proj = (h @ model.final_proj.weight.double().T + model.final_proj.bias.double()).view(-1, 2, preset.final_dim)
    ref = 0.0
    for k, s in enumerate(sizes):
        p = proj[:, k] / proj[:, k].norm(dim=-1, keepdim=True)
        e = model.code_embeddings[k, :s].double()
        e = e / e.norm(dim=-1, keepdim=True)
        logits = p @ e.T / 0.1
        t = codes[:, k][mask]
        ref += float(-(logits.detach().log_softmax(-1)[torch.arange(len(t)), t]).mean())
    assert float(res["ce"]) == pytest.approx(ref, rel=1e-5)
    assert torch.isinf(model.code_logits(h.float())[:, 1, 4:]).all()
    res["loss"].backward()
    assert float(model.code_embeddings.grad[1, 4:].abs().sum()) == 0.0  # padding codes get no gradient


def test_train_with_kmeans_teacher_then_iteration_two(corpus, tmp_path):
    """Iteration 1 on the k-means codes; export; iteration 2 clusters a hidden state of the export."""
    out = tmp_path / "run"
    cfg = TrainConfig(audio_dir=str(corpus["audio"]), out_dir=str(out), preset="tiny", steps=3, batch_size=2,
                      crop_seconds=CROP_S, teacher=f"kmeans:{corpus['teacher']}", device="cpu", log_every=1,
                      num_workers=0, seed=1)
    s = train(cfg, progress=False)
    assert s["step"] == 3 and np.isfinite(s["metrics"]["loss"]) and "ce_1" in s["metrics"]
    state = load_checkpoint(out)  # torch.load(weights_only=True): everything in it is plain data
    assert state["preset"]["extra"]["codebook_sizes"] == [12, 7]
    assert state["teacher"]["sha256"] == read_teacher(corpus["teacher"])[2]
    exp = tmp_path / "exp"
    subprocess.run([sys.executable, "-m", "marble", "pretrain", "export", str(out), str(exp)], check=True,
                   capture_output=True)
    it2 = tmp_path / "it2.safetensors"
    fit_teacher(corpus["audio"], it2, features=f"{exp}:1", clusters=[9], crops=CROPS, crop_seconds=CROP_S,
                seed=SEED)
    enc = load_encoder(str(exp))
    wav = _crops(corpus["audio"])
    x = torch.stack([torch.from_numpy(enc.prepare(w.numpy())) for w in wav])
    frames = enc.hidden_states(x, upto=1)[:, 1].reshape(-1, 32).numpy()
    km, mean, std = _sklearn(frames, 9)
    with pytest.raises(TeacherMismatch, match="never loads a model an artefact names.*--teacher-encoder"):
        KMeansTeacher(it2)  # the checkpoint is named by the user, not by the file
    t2 = KMeansTeacher(it2, encoder=str(exp))
    assert t2.names == ["layer1"] and t2.frame_rate == 75.0
    np.testing.assert_allclose(read_teacher(it2)[1]["centroids.layer1"], km.cluster_centers_, rtol=1e-4, atol=1e-4)
    codes = t2.codes(wav[:2])
    assert np.array_equal(codes[:, 0].reshape(-1).numpy(), km.predict((frames[: codes.shape[-1] * 2] - mean) / std))
    # resuming the iteration-1 run with another teacher is refused
    cfg.teacher, cfg.teacher_encoder, cfg.steps = f"kmeans:{it2}", str(exp), 4
    with pytest.raises(TeacherMismatch, match="trained with teacher.*same --teacher"):
        train(cfg, progress=False)
    # the checkpoint the teacher was fitted on changes: refused
    torch.manual_seed(7)
    preset = get_preset("tiny")
    save_mert_dir(exp, mert_config_dict(preset), backbone_state_dict(MERTPretrainModel(preset).state_dict()),
                  normalize=preset.normalize, sample_rate=preset.sample_rate)
    with pytest.raises(TeacherMismatch, match="weights_sha256.*checkpoint weights changed.*refit"):
        KMeansTeacher(it2, encoder=str(exp))


def _rewrite(src: Path, dst: Path, change) -> Path:
    desc, tensors, _ = read_teacher(src)
    desc = json.loads(json.dumps(desc))
    change(desc)
    desc.pop("format")
    save_teacher(dst, desc, tensors)
    return dst


def test_mismatching_artefacts_are_refused(corpus, tmp_path):
    t = corpus["teacher"]
    tampered = tmp_path / "tampered.safetensors"
    raw = bytearray(t.read_bytes())
    raw[-5] ^= 0xFF  # a centroid value
    tampered.write_bytes(bytes(raw))
    with pytest.raises(TeacherMismatch, match="hash mismatch.*modified or is corrupt.*teacher fit"):
        KMeansTeacher(tampered)
    (tmp_path / "junk.safetensors").write_bytes(b"not a teacher")
    with pytest.raises(TeacherMismatch, match="not a marble k-means teacher"):
        KMeansTeacher(tmp_path / "junk.safetensors")
    with pytest.raises(TeacherMismatch, match="no k-means teacher there"):
        KMeansTeacher(tmp_path / "missing.safetensors")

    def more_mels(d):
        d["features"]["identity"]["n_mels"] = 80

    with pytest.raises(TeacherMismatch, match="n_mels differ.*refit"):
        KMeansTeacher(_rewrite(t, tmp_path / "mels.safetensors", more_mels))

    def at_16k(d):
        d["sample_rate"], d["frame_rate"] = 16000, 50.0
        d["features"]["identity"].update(sample_rate=16000, frame_rate=50.0)

    wrong_sr = _rewrite(t, tmp_path / "sr.safetensors", at_16k)
    r = subprocess.run([sys.executable, "-m", "marble", "pretrain", "run", "--audio-dir", str(corpus["audio"]),
                        "--out", str(tmp_path / "o"), "--preset", "tiny", "--teacher", f"kmeans:{wrong_sr}",
                        "--steps", "1", "--device", "cpu", "-q"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error:") and "16000 Hz" in err and "24000 Hz" in err and "refit" in err


def test_cli_fit_and_errors(corpus, tmp_path):
    out = tmp_path / "mfcc.safetensors"
    r = subprocess.run([sys.executable, "-m", "marble", "pretrain", "teacher", "fit", "--audio-dir",
                        str(corpus["audio"]), "--out", str(out), "--features", "mfcc", "--clusters", "5", "--crops", "8",
                        "--crop-seconds", "1", "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "mfcc 5" in r.stdout and read_teacher(out)[2] in r.stdout
    r = subprocess.run([sys.executable, "-m", "marble", "pretrain", "teacher", "fit", "--audio-dir",
                        str(corpus["audio"]), "--out", str(tmp_path / "x.safetensors"), "--features", "spectral"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "expected built-in groups" in r.stderr, r.stderr
    for kw, msg in (({"clusters": [3, 4]}, "one count per feature group"),
                    ({"features": f"{tmp_path}/nope:3"}, "nope"),
                    ({"clusters": [100000]}, "frames for 100000 clusters")):
        kw = {"features": "mfcc", **kw}
        with pytest.raises(MarbleError, match=msg):
            fit_teacher(corpus["audio"], tmp_path / "x.safetensors", crops=8, crop_seconds=1.0, **kw)
    assert not (tmp_path / "x.safetensors").exists()
