"""Teachers against independent references: the CQT against a float64 evaluation of its defining sum (and
nnAudio, MERT's own CQT, when installed), EnCodec codes against a direct ``EncodecModel.encode`` call,
frame alignment, and the teacher's load errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from marble.pretrain.teachers import CQT, EncodecTeacher, align_frames
from marble.pretrain.teachers.cqt import cqt_frequencies, cqt_lengths
from marble.pretrain.teachers.encodec import TeacherLoadError
from pretrain_helpers import make_tiny_encodec

SR, HOP = 24000, 320


@pytest.fixture(scope="module")
def cqt():
    return CQT()


def _direct_cqt(x: np.ndarray, k: int, n: int) -> float:
    """float64: |sum_j x[n*hop + j - ceil(l/2)] w[j] e^{2 pi i f (j - ceil(l/2)) / sr}| * sqrt(l) / sum(w),
    periodic Hann w of l = ceil(Q sr / f) samples, Q = 1 / (2^(1/48) - 1), zeros outside the signal."""
    f = 32.7 * 2.0 ** (k / 48.0)
    q = 1.0 / (2.0 ** (1.0 / 48.0) - 1.0)
    length = int(math.ceil(q * SR / f))
    j = np.arange(length)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * j / length)
    off = j - (length + 1) // 2
    idx = n * HOP + off
    ok = (idx >= 0) & (idx < len(x))
    s = np.sum(x[idx[ok]] * w[ok] * np.exp(2j * np.pi * f * off[ok] / SR))
    return abs(s) * math.sqrt(length) / w.sum()


def test_cqt_shape_and_recipe_constants(cqt):
    assert cqt.n_bins == 336 and cqt.bins_per_octave == 48 and cqt.hop_length == 320
    freqs = cqt_frequencies(32.7, 336, 48)
    assert abs(freqs[0] - 32.7) < 1e-9 and abs(freqs[48] - 65.4) < 1e-9 and freqs[-1] < SR / 2
    assert cqt_lengths(SR, 32.7, 336, 48)[0] == math.ceil(SR / 32.7 / (2 ** (1 / 48) - 1))
    y = cqt(torch.zeros(2, 5 * SR))
    assert y.shape == (2, 336, 5 * SR // HOP + 1)  # 376 frames at 75 Hz for a 5 s crop


def test_cqt_matches_float64_direct_computation(cqt):
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 97.3 * t) + 0.05 * rng.standard_normal(len(t))
    y = cqt(torch.tensor(x, dtype=torch.float32)[None])[0].double().numpy()
    for k in (0, 47, 100, 173, 250, 335):        # every octave group, both ends
        for n in (0, 3, 56, y.shape[1] - 1):     # edges (zero padding) and the middle
            ref = _direct_cqt(x, k, n)
            assert abs(y[k, n] - ref) <= 1e-4 * max(1.0, ref), (k, n, y[k, n], ref)


def test_cqt_peaks_at_the_sine_bin(cqt):
    t = np.arange(SR) / SR
    for k in (60, 200, 300):
        f = 32.7 * 2 ** (k / 48)
        y = cqt(torch.tensor(np.sin(2 * np.pi * f * t), dtype=torch.float32)[None])[0]
        assert int(y[:, 37].argmax()) == k
        # librosa scaling: a unit sine gives about sqrt(l) / 2 at its bin
        assert abs(float(y[k, 37]) / (math.sqrt(cqt.lengths[k]) / 2) - 1) < 0.05


def test_cqt_matches_nnaudio_when_installed(cqt):
    nna = pytest.importorskip("nnAudio.features")
    ref = nna.cqt.CQT(sr=SR, hop_length=HOP, fmin=32.7, fmax=None, n_bins=336, bins_per_octave=48, filter_scale=1,
                      norm=1, window="hann", center=True, pad_mode="constant", trainable=False,
                      output_format="Magnitude", verbose=False)
    x = torch.randn(2, SR) * 0.3
    torch.testing.assert_close(cqt(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def encodec_dir(tmp_path_factory):
    return make_tiny_encodec(tmp_path_factory.mktemp("encodec") / "encodec_24khz")


def test_encodec_codes_equal_direct_encode(encodec_dir):
    from transformers import EncodecModel

    teacher = EncodecTeacher(str(encodec_dir))
    assert teacher.num_codebooks == 8 and teacher.frame_rate == 75.0 and teacher.codebook_size == 1024
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(3, 5 * SR, generator=g) * 0.2
    codes = teacher.codes(wav)
    assert codes.shape == (3, 8, 375) and codes.dtype == torch.long  # 8 codebooks x 75 Hz x 5 s
    direct = EncodecModel.from_pretrained(str(encodec_dir)).eval()
    with torch.no_grad():
        ref = direct.encode(wav[:, None, :], bandwidth=6.0).audio_codes[0]
    assert torch.equal(codes, ref)
    assert len(torch.unique(codes)) > 50  # a real code sequence, not a constant


def test_alignment_trims_to_the_hubert_frames():
    from marble.pretrain.config import get_preset
    from marble.pretrain.model import MERTPretrainModel

    model = MERTPretrainModel(get_preset("tiny"))
    n = 5 * SR
    t_model = model.num_frames(n)
    assert t_model == 374
    codes, cqt_t = torch.zeros(1, 375, 8), torch.zeros(1, n // HOP + 1, 336)
    hidden = torch.zeros(1, t_model, 32)
    h, c, q = align_frames(hidden, codes, cqt_t, dim=1)
    assert h.shape[1] == c.shape[1] == q.shape[1] == 374
    assert torch.equal(c, codes[:, :374])  # trailing frames dropped, frame i stays frame i


def test_teacher_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(TeacherLoadError, match="no EnCodec checkpoint there.*--teacher"):
        EncodecTeacher(str(tmp_path / "missing"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on a machine without network
    with pytest.raises(TeacherLoadError, match="unreachable offline.*local directory"):
        EncodecTeacher("facebook/encodec_24khz_not_cached")
