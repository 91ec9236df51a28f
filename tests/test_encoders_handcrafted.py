"""The weight-free handcrafted encoder against a float64 numpy/scipy re-computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch

from marble.encoders import load_encoder


@pytest.fixture(scope="module")
def enc():
    return load_encoder("handcrafted")


def signal(n, sr=24000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    return (0.5 * np.sin(2 * np.pi * 523.25 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


def reference_logmel(x: np.ndarray, sr=24000, n_fft=2048, hop=320, n_mels=64) -> np.ndarray:
    """float64: zero-padded centred frames, periodic Hann (scipy), |rfft|^2, HTK-mel triangles."""
    x = np.pad(x.astype(np.float64), (n_fft // 2, n_fft // 2))
    n_frames = 1 + (len(x) - n_fft) // hop
    win = scipy.signal.get_window("hann", n_fft, fftbins=True)
    frames = np.stack([x[i * hop: i * hop + n_fft] * win for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [T, F]
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    imel = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    pts = imel(np.linspace(0, mel(sr / 2), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    fb = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        for j, f in enumerate(freqs):
            if lo < f <= c:
                fb[m, j] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[m, j] = (hi - f) / (hi - c)
    return np.log(power @ fb.T + 1e-6)


def test_shape_layout_determinism(enc):
    x = torch.from_numpy(np.stack([signal(24000), signal(24000, seed=1)]))
    out = enc.hidden_states(x)
    assert out.shape == (2, 4, 76, 96) and enc.num_frames(24000) == 76
    assert (enc.sample_rate, enc.frame_rate, enc.num_states, enc.dim) == (24000, 75.0, 4, 96)
    # padding channels are zero; state 3 is the concatenation of states 0..2
    assert out[:, 0, :, 64:].abs().max() == 0 and out[:, 1, :, 12:].abs().max() == 0
    assert out[:, 2, :, 20:].abs().max() == 0
    torch.testing.assert_close(out[:, 3], torch.cat([out[:, 0, :, :64], out[:, 1, :, :12], out[:, 2, :, :20]], -1))
    assert torch.equal(out, enc.hidden_states(x))
    assert torch.equal(enc.hidden_states(x, upto=1), out[:, :2])
    assert torch.isfinite(enc.hidden_states(torch.zeros(1, 100))).all()  # silence and very short input


def test_logmel_and_mfcc_match_float64_reference(enc):
    x = signal(24000 + 123, seed=2)
    feats = enc.features(torch.from_numpy(x)[None])
    ref = reference_logmel(x)
    got = feats["logmel"][0].double().numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-3, rtol=0)
    mfcc_ref = scipy.fft.dct(ref, type=2, norm="ortho", axis=1)[:, :20]
    np.testing.assert_allclose(feats["mfcc"][0].double().numpy(), mfcc_ref, atol=5e-3, rtol=1e-4)


@pytest.mark.parametrize("freq,pc", [(440.0, 9), (261.63, 0), (196.0, 7), (1174.66, 2)])
def test_chroma_peaks_at_the_pitch_class(enc, freq, pc):
    t = np.arange(24000) / 24000
    x = torch.from_numpy(np.sin(2 * np.pi * freq * t).astype(np.float32))[None]
    chroma = enc.features(x)["chroma"][0, 5:-5]
    assert (chroma.argmax(-1) == pc).all()
    assert torch.allclose(chroma.amax(-1), torch.ones(()), atol=1e-4)
