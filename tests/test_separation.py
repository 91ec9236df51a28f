"""MUSDB18 end to end on a synthetic two-source set in the MUSDB18-HQ wav layout, plus the STFT
reconstruction pieces against independent computations."""

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from musdb_fixtures import SOURCES, write_musdb_wav
from marble.metrics.separation import sdr_per_track
from marble.registry import Head, get_card
from marble.separation import magnitude, stft


def test_wiener_em_step_matches_norbert():
    """Our EM step (norbert's steps on all frames of a block at once) equals
    ``norbert.expectation_maximization``; the residual and scaling follow open-unmix's wiener()."""
    import norbert

    from marble.separation import expectation_maximization, wiener_em

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((12, 9, 2)) + 1j * rng.standard_normal((12, 9, 2))).astype(np.complex64) * 30
    y = (rng.standard_normal((12, 9, 2, 3)) + 1j * rng.standard_normal((12, 9, 2, 3))).astype(np.complex64)
    want = norbert.expectation_maximization(y.copy(), x, 1)[0]
    np.testing.assert_allclose(expectation_maximization(y, x, 1), want, rtol=1e-4, atol=1e-5)
    # wiener_em = open-unmix's wiener(iterations=1, softmask=False, residual=True) written with norbert
    mags = np.abs(y)
    init = mags * np.exp(1j * np.angle(x))[..., None]
    init = np.concatenate([init, (x - init.sum(-1))[..., None]], -1).astype(np.complex64)
    scale = max(1.0, np.abs(x).max() / 10)
    want = norbert.expectation_maximization(init / scale, x / scale, 1)[0] * scale
    np.testing.assert_allclose(wiener_em(mags, x, 1), want, rtol=1e-4, atol=1e-4)
    assert wiener_em(mags, x, 0).shape == (12, 9, 2, 4)


def test_track_reconstruction_blocks_and_overlap_add():
    """Block-wise inverse STFT equals torch.istft; Wiener with exact magnitudes of two
    well-separated sources recovers them (the residual takes what the models miss)."""
    from marble.separation import N_FFT, HOP, OverlapAdd, separate_track

    x = torch.randn(2, 24000 * 2 + 11, dtype=torch.float64)
    X = stft(x)
    ola = OverlapAdd((2,), x.shape[-1])
    ola.add(X[..., :70], 0)
    ola.add(X[..., 70:], 70)
    want = torch.istft(X, N_FFT, HOP, window=torch.hann_window(N_FFT, dtype=torch.float64), length=x.shape[-1])
    torch.testing.assert_close(ola.result().double(), want, atol=1e-5, rtol=0)
    n = 24000 * 3
    t = np.arange(n) / 24000
    a = torch.as_tensor(np.sin(2 * np.pi * 440 * t) * 0.5)
    b = torch.as_tensor(np.sin(2 * np.pi * 3000 * t) * 0.3)
    mix = torch.stack([a + b, 0.8 * a + b]).float()
    mags = torch.stack([magnitude(torch.stack([a, 0.8 * a])).mean(0), magnitude(torch.stack([b, b])).mean(0)])
    est = separate_track(mix, mags.float(), block=100)  # [2, 2, n]
    ref = torch.stack([torch.stack([a, 0.8 * a]), torch.stack([b, b])]).numpy()
    sdr = sdr_per_track([ref.transpose(0, 2, 1)], [est.numpy().transpose(0, 2, 1)], labels=["a", "b"])[0]
    assert (sdr > 15).all(), sdr  # ~19 dB and ~44 dB


def test_per_source_openunmix_models():
    """One open-unmix-style head per source (unidirectional 3-layer LSTM, the card's shape),
    non-negative output scaled by the mixture magnitude; each source's model is its own module."""
    from marble.probe.heads import head_kind
    from marble.separation.head import OpenUnmixHead

    card = get_card("musdb")
    assert (card.head.kind, card.head.layers, card.head.bidirectional, card.head.dropout) == ("openunmix", 3, False, 0.4)
    head = head_kind(card).build(card, 16, 1025)
    assert isinstance(head, OpenUnmixHead) and head.lstm.num_layers == 3 and not head.lstm.bidirectional
    assert head.lstm.hidden_size == 512 and head.fc1.bias is None
    head.eval()
    x, mag = torch.randn(2, 30, 16), torch.rand(2, 1025, 30)
    y = head(x, mag)
    assert y.shape == (2, 1025, 30) and (y >= 0).all()
    assert torch.equal(head(x, torch.zeros_like(mag)), torch.zeros_like(mag))
    # a whole track streamed block by block (LSTM state carried) equals one pass: bounded memory, same output
    state, parts = None, []
    for a in range(0, 30, 7):
        part, state = head.step(x[:, a:a + 7], mag[:, :, a:a + 7], state)
        parts.append(part)
    torch.testing.assert_close(torch.cat(parts, -1), y, rtol=1e-5, atol=1e-6)
    # a bidirectional LSTM reads the future: streaming it would silently change the output, so it is refused
    bi = OpenUnmixHead(16, 1025, hidden=32, layers=1, bidirectional=True).eval()
    _, state = bi.step(x[:, :7], mag[:, :, :7])
    with pytest.raises(ValueError, match="bidirectional"):
        bi.step(x[:, 7:14], mag[:, :, 7:14], state)


def test_fixture_readable_by_musdb(tmp_path):
    if shutil.which("ffprobe") is None:
        pytest.skip("musdb.DB probes files with ffprobe")
    import musdb

    write_musdb_wav(tmp_path, seconds=2.0)
    db = musdb.DB(root=str(tmp_path), is_wav=True, subsets="train")
    assert len(db) == 3 and db[0].sources["vocals"].audio.shape[1] == 2


@pytest.mark.slow
def test_run_musdb_end_to_end_beats_mixture_baseline(tmp_path):
    from marble.probe.sequence import run

    write_musdb_wav(tmp_path / "MUSDB18", seconds=8.0)
    card = get_card("musdb")
    # the card's head with a smaller width so the CPU test stays fast
    card = dataclasses.replace(card, head=Head(kind="openunmix", hidden=32, layers=3, dropout=0.4, bidirectional=False))
    r = run(card, "handcrafted", data_dir=tmp_path, results_dir=tmp_path / "res", layers=[3], lrs=[5e-3],
            max_epochs=3, batch_size=4, chunks_per_epoch=16, museval=False)
    names = ["sdr_mean", "sdr_vocals", "sdr_drums", "sdr_bass", "sdr_other"]  # museval (slow) switched off here
    assert set(r["test"]) == set(card.metrics.names) and r["main_metric"] == "sdr_mean"
    assert all(isinstance(r["test"][m], float) for m in names)
    assert all(r["test"][m] is None for m in card.metrics.names if m.startswith("museval"))  # not computed
    assert r["sweep"][0]["layer"] == 3 and r["training"]["max_epochs"] == 3 and r["training"]["learning_rates"] == [5e-3]
    assert r["selected"]["valid_score"] == r["valid"]["sdr_mean"]
    per_source = r["training"]["per_source_epochs"]
    assert len(per_source) == 1 and all(set(v) == set(SOURCES) for v in per_source.values())
    # the mixture as every estimate, scored the same way (at 24 kHz, as the probe scores)
    import soundfile as sf
    import soxr

    d = tmp_path / "MUSDB18" / "test" / "Fixture C - Three"
    ref = np.stack([soxr.resample(sf.read(d / f"{s}.wav", dtype="float32")[0], 44100, 24000) for s in SOURCES])
    mix = soxr.resample(sf.read(d / "mixture.wav", dtype="float32")[0], 44100, 24000)
    base = sdr_per_track([ref], [np.stack([mix] * 4)], labels=SOURCES)[0]
    assert r["test"]["sdr_mean"] > float(np.mean(base)) + 10, (r["test"], base)
    assert r["test"]["sdr_drums"] > base[1] + 1.0, (r["test"], base)
    # the result is a schema-valid results JSON that `marble leaderboard` shows
    from typer.testing import CliRunner

    from marble.cli import app
    from marble.results import read_result

    assert read_result(tmp_path / "res" / "handcrafted" / "musdb" / "constrained.json")["task"] == "musdb"
    out = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(tmp_path / "res"), "--format", "csv",
                                   "--no-reported"])
    assert out.exit_code == 0 and "musdb" in out.output, out.output
