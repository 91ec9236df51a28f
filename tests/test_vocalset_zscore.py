"""VocalSet chunks are z-normalised before any encoder (PROTOCOL §2): a task-card property, applied for every
encoder, so an encoder whose own input normalisation is off (MERT-v1-330M) still sees normalised chunks.

Reference computation, independent of marble's decoding: soundfile reads the chunk's samples, torch's
``(x - x.mean()) / x.std()`` normalises it in the file's rate (44.1 kHz in the real data; the reference
preprocessing's formula), soxr resamples
it to the encoder rate, and the encoder's hidden states are time-averaged in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from marble.audio import AudioError, load
from marble.cache.extract import extract
from marble.cache.store import read_clip_split
from marble.datasets import get_dataset
from marble.encoders import load_encoder
from marble.registry import get_card
from marble.testing import fixtures as F

from encoder_ckpts import mert_config_json, reference_hubert, save_mert_dir

torch.set_num_threads(1)


@pytest.mark.parametrize("task", ["vocalset-technique", "vocalset-singer"])
def test_cards_declare_chunk_normalisation(task):
    assert get_card(task).audio.zscore is True
    assert get_card("gtzan").audio.zscore is False  # a task property, not a default


def test_load_zscore_before_resampling(tmp_path):
    sr = 44100
    x = (0.2 + 0.3 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)).astype(np.float32)
    p = tmp_path / "a.wav"
    sf.write(p, x, sr, subtype="FLOAT")
    z = load(p, zscore=True)
    ref = torch.from_numpy(x.astype(np.float64))
    np.testing.assert_allclose(z, ((ref - ref.mean()) / ref.std()).numpy(), atol=1e-6)
    assert abs(float(np.std(z, ddof=1)) - 1) < 1e-5
    z24 = load(p, 24000, zscore=True)  # normalised in the file's rate, then resampled
    np.testing.assert_allclose(z24, soxr.resample(z, sr, 24000, quality="HQ"), atol=1e-5)
    sf.write(tmp_path / "silent.wav", np.zeros(sr, np.float32), sr)
    with pytest.raises(AudioError, match="silent.wav: constant"):
        load(tmp_path / "silent.wav", zscore=True)


def test_vocalset_chunks_normalised_for_an_encoder_without_its_own(tmp_path):
    F.write_vocalset(tmp_path / "data", singers=["f1", "f2", "m3"], techniques=("belt", "vibrato"), seconds=3.6,
                     silence=0.2)
    card = get_card("vocalset-technique")
    data = get_dataset(card, tmp_path / "data", allow_partial=True)
    items = [it for s in ("train", "test") for it in data.items(s)]  # f1: train; f2, m3: test
    assert len(items) >= 4
    mert = save_mert_dir(tmp_path / "mert330-like", reference_hubert(), mert_config_json(), preprocessor={
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": False, "sampling_rate": 24000,
        "feature_size": 1, "padding_value": 0.0, "return_attention_mask": True})
    enc = load_encoder(str(mert))
    assert enc.normalize is False  # the encoder itself would feed raw audio
    seen = []  # what the encoder's first conv receives
    hook = enc.model.feature_extractor.register_forward_pre_hook(lambda m, args: seen.append(args[0].double().clone()))
    cache = extract(card, enc, {"train": items}, tmp_path / "cache", device="cpu", progress=False)
    hook.remove()
    chunks = torch.cat([w for w in seen])  # [chunks, T]: equal-length chunks
    assert chunks.shape[0] == len(items)
    assert chunks.mean(1).abs().max() < 0.02 and (chunks.std(1) - 1).abs().max() < 0.05  # normalised input
    got = np.asarray(read_clip_split(cache / "train").features, dtype=np.float64)  # [chunks, S, H]
    assert got.shape[0] == len(items)

    def features(x: np.ndarray, sr: int) -> np.ndarray:
        wav = soxr.resample(x, sr, enc.sample_rate, quality="HQ").astype(np.float32)
        with torch.no_grad():
            return enc.hidden_states(torch.from_numpy(wav)[None])[0].double().mean(1).numpy()

    assert list(read_clip_split(cache / "train").uids) == [it.uid for it in items]
    raw_std = []
    for it, g in zip(items, got):
        sr = sf.info(str(it.path)).samplerate  # the fixture's rate; 44.1 kHz in the real data
        start, n = int(round(it.offset * sr)), int(round(132000 / 44100 * sr))  # one 3 s chunk
        x, _ = sf.read(str(it.path), start=start, frames=n, dtype="float32", always_2d=True)
        x = torch.from_numpy(x.mean(1).astype(np.float64))
        want = features(((x - x.mean()) / x.std()).float().numpy(), sr)
        np.testing.assert_allclose(g, want, rtol=2e-3, atol=2e-3, err_msg=it.uid)
        raw_std.append(float(x.std()))
    assert max(raw_std) < 0.5  # the recordings themselves are far from unit variance: the check has teeth
