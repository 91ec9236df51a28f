"""MUSDB18 end to end on a synthetic two-source set in the MUSDB18-HQ wav layout, plus the STFT
reconstruction pieces against independent computations."""

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch

from musdb_fixtures import SOURCES, write_musdb_wav
from marble.metrics.separation import sdr_per_track
from marble.registry import Head, get_card
from marble.separation import magnitude, stft


def _norbert_target(mag: np.ndarray, x: np.ndarray, eps: float = 1e-10, iterations: int = 1) -> np.ndarray:
    """open-unmix's wiener(mag[..., None], x, niter, softmask=False, residual=True)[..., 0] written with
    norbert (its EM, eps given): ``mag`` [n, F], ``x`` complex [n, F, C] -> the target [n, F, C]."""
    import norbert

    init = mag[..., None] * np.exp(1j * np.angle(x))  # [n, F, C]
    y = np.stack([init, x - init], -1).astype(np.complex128)
    scale = max(1.0, np.abs(x).max() / 10)
    return norbert.expectation_maximization(y / scale, x.astype(np.complex128) / scale, iterations, eps=eps)[0][..., 0] * scale


def test_wiener_target_matches_norbert():
    """The per-source Wiener EM (target + residual, eps 1e-10) equals norbert's EM on open-unmix's
    initial estimates; several models of a block at once equal one at a time; float64 keeps a
    spatially rank-one block (a mono source on both channels) finite."""
    from marble.separation import wiener_target

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((12, 9, 2)) + 1j * rng.standard_normal((12, 9, 2))).astype(np.complex64) * 30
    mags = np.abs(rng.standard_normal((3, 12, 9))).astype(np.float32) * 20  # three models' magnitudes [n, F]
    X = torch.as_tensor(x.transpose(2, 1, 0))  # [C, F, n]
    got = wiener_target(torch.as_tensor(mags.transpose(0, 2, 1)), X).numpy()  # [3, C, F, n]
    for k in range(3):
        want = _norbert_target(mags[k], x).transpose(2, 1, 0)
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(wiener_target(torch.as_tensor(mags[k].T), X).numpy(), got[k])
    for it in (2, 3):  # the residual's update is skipped in the last pass only: earlier passes need it
        np.testing.assert_allclose(wiener_target(torch.as_tensor(mags[0].T), X, iterations=it).numpy(),
                                   _norbert_target(mags[0], x, iterations=it).transpose(2, 1, 0), rtol=1e-5, atol=1e-5)
    assert torch.equal(wiener_target(torch.as_tensor(mags[0].T), X, iterations=0).abs().float(),
                       torch.as_tensor(mags[0].T).expand(2, -1, -1))
    mono = np.repeat(x[..., :1], 2, axis=-1)  # identical channels: R is rank one
    y = wiener_target(torch.as_tensor(mags[0].T), torch.as_tensor(mono.transpose(2, 1, 0)))
    assert torch.isfinite(torch.view_as_real(y)).all()
    np.testing.assert_allclose(y.numpy().transpose(2, 1, 0), _norbert_target(mags[0], mono), rtol=1e-4, atol=1e-4)


def test_track_reconstruction_blocks_and_overlap_add():
    """Block-wise inverse STFT equals torch.istft; a source model's estimate, streamed in Wiener blocks,
    equals norbert's EM on the same blocks of a full torch.stft followed by torch.istft; with the exact
    magnitude of one of two well-separated sources, the residual takes the other and the target comes back."""
    from marble.separation import N_FFT, HOP, OverlapAdd, separate_target

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
    mag_a = magnitude(torch.stack([a, 0.8 * a])).mean(0).float()  # [F, N]
    est = separate_target(mix, mag_a, block=100)  # [2, n]
    Xm = stft(mix).numpy().transpose(2, 1, 0)  # [N, F, C]
    blocks = [_norbert_target(mag_a.numpy().T[i:i + 100], Xm[i:i + 100]) for i in range(0, Xm.shape[0], 100)]
    ref_est = torch.istft(torch.as_tensor(np.concatenate(blocks).transpose(2, 1, 0)), N_FFT, HOP,
                          window=torch.hann_window(N_FFT, dtype=torch.float64), length=n)
    torch.testing.assert_close(est.double(), ref_est, atol=1e-4, rtol=0)
    ref = torch.stack([a, 0.8 * a]).numpy()
    sdr = sdr_per_track([ref.T[None]], [est.numpy().T[None]], labels=["a"])[0]
    assert (sdr > 15).all(), sdr


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
    # the learnable input shift and scale before fc1, one per feature dimension, init 0 and 1
    assert torch.equal(head.input_mean.detach(), torch.zeros(16)) and torch.equal(head.input_scale.detach(), torch.ones(16))
    assert {"input_mean", "input_scale"} <= {n for n, p in head.named_parameters() if p.requires_grad}
    head.eval()
    x, mag = torch.randn(2, 30, 16), torch.rand(2, 1025, 30)
    y = head(x, mag)
    assert y.shape == (2, 1025, 30) and (y >= 0).all()
    with torch.no_grad():
        shift, scale = torch.randn(16), torch.rand(16) + 0.5
        head.input_mean.copy_(shift)
        head.input_scale.copy_(scale)
        y_shift = head(x, mag)
        head.input_mean.zero_()
        head.input_scale.fill_(1.0)
        torch.testing.assert_close(head((x + shift) * scale, mag), y_shift)  # (x + shift) * scale, then fc1
    assert not torch.allclose(y_shift, y)
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
            max_epochs=3, batch_size=4, accumulate=1, chunks_per_epoch=16, museval=False)
    names = ["sdr_mean", "sdr_vocals", "sdr_drums", "sdr_bass", "sdr_other"]  # museval (slow) switched off here
    assert set(r["test"]) == set(card.metrics.names) and r["main_metric"] == "sdr_mean"
    assert all(isinstance(r["test"][m], float) for m in names)
    assert all(r["test"][m] is None for m in card.metrics.names if m.startswith("museval"))  # not computed
    assert r["sweep"][0]["layer"] == 3 and r["training"]["max_epochs"] == 3 and r["training"]["learning_rates"] == [5e-3]
    assert r["selected"]["valid_score"] == r["valid"]["sdr_mean"]
    assert {s: c["layer"] for s, c in r["selected"]["per_source"].items()} == dict.fromkeys(SOURCES, 3)
    assert r["training"]["accumulate"] == 1 and r["training"]["steps_per_epoch"] == 4
    per_source = r["training"]["per_source_epochs"]
    assert len(per_source) == 1 and all(set(v) == set(SOURCES) for v in per_source.values())
    # the mixture as every estimate, scored the same way (at 24 kHz, as the probe scores)
    import soundfile as sf
    import soxr

    d = tmp_path / "MUSDB18" / "test" / "Fixture C - Three"
    ref = np.stack([soxr.resample(sf.read(d / f"{s}.wav", dtype="float32")[0], 44100, 24000) for s in SOURCES])
    mix = soxr.resample(sf.read(d / "mixture.wav", dtype="float32")[0], 44100, 24000)
    base = sdr_per_track([ref], [np.stack([mix] * 4)], labels=SOURCES)[0]
    # the two audible sources beat the mixture; the near-silent bass/other of this fixture are scored too
    assert r["test"]["sdr_vocals"] > base[0] + 1.0 and r["test"]["sdr_drums"] > base[1] + 1.0, (r["test"], base)
    assert r["test"]["sdr_mean"] == pytest.approx(np.mean([r["test"][f"sdr_{s}"] for s in SOURCES]))
    # the result is a schema-valid results JSON that `marble leaderboard` shows
    from typer.testing import CliRunner

    from marble.cli import app
    from marble.results import read_result

    assert read_result(tmp_path / "res" / "handcrafted" / "musdb" / "constrained.json")["task"] == "musdb"
    out = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(tmp_path / "res"), "--format", "csv",
                                   "--no-reported"])
    assert out.exit_code == 0 and "musdb" in out.output, out.output


def _valid_track(run):
    ev = run.evals["valid"][0]
    return ev, ev.mixture(), run.feats["valid"](ev.item)


def test_each_source_estimate_is_independent_of_the_other_models(tmp_path):
    """Per-source Wiener: a source's estimate depends on its own model only (the target and one
    residual), so changing the bass model changes no vocals SDR; the vocals SDR equals a re-computation
    with norbert's EM on the same 600-frame blocks of a full torch.stft, then torch.istft."""
    from marble.separation import N_FFT, HOP
    from musdb_fixtures import separation, set_mask

    run = separation(tmp_path)
    vocals, _, bass, _ = run.new_state().models[0]
    set_mask(vocals.model, 0.6)
    set_mask(bass.model, 0.05)
    before, _ = run.score("valid", [vocals, bass])
    set_mask(bass.model, 0.7)
    after, _ = run.score("valid", [vocals, bass])
    assert after[0, 0] == before[0, 0] and after[1, 0] != before[1, 0]
    ev, mix, _ = _valid_track(run)
    X = stft(mix).numpy().transpose(2, 1, 0)  # [N, F, C]
    mag = 0.6 * np.abs(X).mean(-1)  # the mask times the mono mixture magnitude
    y = np.concatenate([_norbert_target(mag[a:a + 600], X[a:a + 600]) for a in range(0, len(X), 600)])
    est = torch.istft(torch.as_tensor(y.transpose(2, 1, 0)), N_FFT, HOP, window=torch.hann_window(N_FFT, dtype=torch.float64),
                      length=mix.shape[-1]).numpy()
    ref = ev.reference("vocals")
    want = sdr_per_track([ref.T[None]], [est.T[None]], labels=["vocals"])[0, 0]
    assert abs(before[0, 0] - want) < 1e-3, (before[0, 0], want)


def test_monitor_is_the_validation_sdr_not_the_mse(tmp_path):
    """A model whose epochs are ranked differently by its validation MSE (the second edition's monitor)
    and by the validation SDR of its own reconstruction keeps the SDR's epoch."""
    from marble.separation import mono_magnitude
    from musdb_fixtures import separation, set_mask

    run = separation(tmp_path)
    state = run.new_state()
    vocals = state.models[0][0]
    for m in state.flat[1:]:
        m.active = False
    ev, mix, _ = _valid_track(run)
    mix_mag, target = mono_magnitude(mix), mono_magnitude(torch.as_tensor(ev.reference("vocals")))
    masks = [0.6, 0.7, 0.75, 0.9]
    mse = [float(torch.mean((a * mix_mag - target) ** 2)) for a in masks]  # the model's output is mask x |mix|
    sdr = []
    for a in masks:
        set_mask(vocals.model, a)
        sdr.append(float(run.score("valid", [vocals])[0].mean()))
    by_mse, by_sdr = int(np.argmin(mse)), int(np.argmax(sdr))
    assert by_mse != by_sdr, (mse, sdr)  # the fixture separates the two monitors
    order = [by_mse, by_sdr] + [i for i in range(len(masks)) if i not in (by_mse, by_sdr)]
    for epoch, i in enumerate(order):  # epoch e's "training" leaves the model at mask masks[order[e]]
        set_mask(vocals.model, masks[i])
        run.validate_epoch(state, epoch)
    assert vocals.best_epoch == order.index(by_sdr) + 1 and vocals.best_score == sdr[by_sdr]
    vocals.restore()
    assert torch.allclose(vocals.model.output_mean, torch.full_like(vocals.model.output_mean, masks[by_sdr]))


def test_each_source_selects_its_own_row(tmp_path):
    """Two (layer, LR) rows where vocals prefer the first and drums the second: each source reports
    its own row's validation and test SDR, the MUSDB score is the mean of the four selected test SDRs,
    and the result is consistent (marble.results.consistency) and schema-valid."""
    from marble.probe.frames import build_result
    from marble.results import write_result
    from marble.separation.train import _result
    from musdb_fixtures import separation, set_mask

    run = separation(tmp_path, rows=((3, 1e-3), (1, 1e-3)))
    state = run.new_state()
    good, bad = {"vocals": 0.6, "drums": 0.5, "bass": 0.05, "other": 0.05}, 0.99
    for k, s in enumerate(run.sources):
        set_mask(state.models[0][k].model, good[s] if s != "drums" else bad)
        set_mask(state.models[1][k].model, good[s] if s == "drums" else bad)
    out = _result(run, state, run.card, 1, use_museval=False)
    sel, sweep = out["selected"]["per_source"], out["sweep"]
    assert (sel["vocals"]["layer"], sel["drums"]["layer"], sel["bass"]["layer"]) == (3, 1, 3)
    assert sweep[0]["valid"]["sdr_vocals"] > sweep[1]["valid"]["sdr_vocals"]
    assert sweep[1]["valid"]["sdr_drums"] > sweep[0]["valid"]["sdr_drums"]
    vocals_test = run.score("test", [state.models[0][0]])[0].mean()
    drums_test = run.score("test", [state.models[1][1]])[0].mean()
    assert out["test"]["sdr_vocals"] == sweep[0]["test"]["sdr_vocals"] == vocals_test
    assert out["test"]["sdr_drums"] == sweep[1]["test"]["sdr_drums"] == drums_test
    assert sweep[0]["test"]["sdr_drums"] is None and sweep[1]["test"]["sdr_vocals"] is None
    four = [out["test"][f"sdr_{s}"] for s in run.sources]
    assert out["test"]["sdr_mean"] == pytest.approx(np.mean(four), rel=1e-12)
    assert out["valid"]["sdr_mean"] == out["selected"]["valid_score"]
    result = build_result(run.card, "handcrafted", run.encoder, out, track="constrained", seed=1234, device="cpu",
                          started=0.0, cache=None)
    write_result(tmp_path / "r.json", result, card=run.card)  # schema + consistency


def test_steps_per_epoch_and_chunks_per_step(tmp_path):
    """ceil(chunks / (batch_size x accumulate)) optimiser steps an epoch: the card's 5,504 chunks in 22
    steps of 256; a small run takes exactly that many Adam steps per model."""
    from musdb_fixtures import separation

    card_run = separation(tmp_path, chunks_per_epoch=5504)
    assert (card_run.batch_size, card_run.accumulate, card_run.chunks_per_step, card_run.steps_per_epoch) == (32, 8, 256, 22)
    # 16 chunks a step: 3 steps, the last of 5; the weighted-sum models train too
    run = separation(tmp_path, rows=((3, 1e-3), ("weighted", 1e-3)), batch_size=2, chunks_per_epoch=37)
    state = run.new_state()
    run.train_epoch(state, 0)
    for m in state.flat:
        steps = {int(s["step"]) for s in m.optimizer.state.values()}
        assert steps == {3}, steps
    assert all(m.model[0].logits.grad is not None for m in state.models[1])


def test_accumulated_micro_batches_equal_one_large_step_with_frozen_batchnorm(tmp_path):
    """8 accumulated micro-batches of 4 give the gradient (and Adam step) of one step on all 32 chunks
    when BatchNorm is frozen (eval) and dropout off; with BatchNorm training, statistics are per
    micro-batch (as on each DDP rank), so the two differ."""
    from musdb_fixtures import separation, tiny_card

    card = tiny_card(dropout=0.0)
    acc, one = separation(tmp_path, card, batch_size=4), separation(tmp_path, card, batch_size=32, accumulate=1)
    chunks = np.stack([np.random.default_rng(i).standard_normal((4, 2, 24000)).astype(np.float32) * 0.1 for i in range(32)])

    def step(run, frozen_bn):
        state = run.new_state()
        active = state.models[0][:1]
        model = active[0].model
        model.train()
        if frozen_bn:
            for mod in model.modules():
                if isinstance(mod, torch.nn.BatchNorm1d):
                    mod.eval()
        run.train_step(active, chunks, 0, 0)
        return [p.grad.clone() for p in model.parameters()], [p.detach().clone() for p in model.parameters()]

    (g8, p8), (g1, p1) = step(acc, True), step(one, True)
    for a, b in zip(g8, g1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(p8, p1):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    (g8, _), (g1, _) = step(acc, False), step(one, False)
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g8, g1))


def test_cached_and_on_the_fly_features_are_equal(tmp_path):
    """One encoder-piece rule: marble extract's frame cache and the probe's on-the-fly features of the
    same track are equal, and both are the prepared mono mixture with 320 zeros appended, encoded in
    consecutive pieces from the start (here 1 s, the last the remainder), frames concatenated (fp16)."""
    from extract_helpers import card_variant
    from marble.audio import load
    from marble.cache.extract import extract
    from marble.datasets import get_dataset
    from marble.encoders import load_encoder
    from marble.probe.frames import FrameFeatures
    from marble.testing.fixtures import write_musdb

    write_musdb(tmp_path / "data", per_split=1, seconds=2.5)
    card = card_variant(tmp_path, "musdb", "musdb-pieces", "train_chunk_seconds = 6.0\npiece_seconds = 1.0\ntail_samples = 320")
    ds = get_dataset(card, tmp_path / "data", allow_partial=True)
    items = {s: ds.items(s) for s in ("valid", "test")}
    enc = load_encoder("handcrafted", device="cpu").eval()
    cache = extract(card, enc, items, tmp_path / "cache", device="cpu", progress=False, batch_size=4)
    layers = [0, 3]
    for split in ("valid", "test"):
        item = items[split][0]
        cached = FrameFeatures(enc, layers, "cpu", cache, split, 0.0, card)
        fly = FrameFeatures(enc, layers, "cpu", None, split, 0.0, card)
        a, b = cached(item), fly(item)
        assert cached.cache_reads == 1 and fly.encoder_passes == 3
        assert torch.equal(a, b)
        clip = np.concatenate([enc.prepare(load(item.path, 24000)), np.zeros(320, np.float32)])
        parts = [enc.hidden_states(torch.as_tensor(clip[i:i + 24000])[None])[0, layers] for i in range(0, len(clip), 24000)]
        assert [p.shape[1] for p in parts] == [76, 76, 39]  # 1 s, 1 s, 0.5 s + 320 samples
        assert torch.equal(a, torch.cat(parts, 1).half().float())


def test_stems_mixture_is_stem_zero(tmp_path):
    """In the .stem.mp4 layout the validation/test mixture is stem 0 as shipped (a mastered mixture is
    not the sum of the four stems), read at the encoder rate."""
    import shutil

    if shutil.which("ffmpeg") is None:
        pytest.skip("writing and reading .stem.mp4 needs ffmpeg")
    import soxr
    import stempeg

    from marble.datasets.base import Item
    from marble.datasets.musdb import STEM_IDS
    from marble.separation.stems import TrackStems
    from marble.separation.train import EvalTrack

    rng = np.random.default_rng(0)
    src = (0.1 * rng.standard_normal((4, 44100, 2))).astype(np.float32)
    mix = np.tanh(3 * src.sum(0)) / 3  # "mastered": not the sum
    path = tmp_path / "Song.stem.mp4"
    stempeg.write_stems(str(path), np.concatenate([mix[None], src]), sample_rate=44100,
                        writer=stempeg.StreamsWriter(codec="aac"))
    sources = ["vocals", "drums", "bass", "other"]
    item = Item(uid="Song", path=path, extra={"is_wav": False, "sources": {s: STEM_IDS[s] for s in sources}})
    ev = EvalTrack(item, TrackStems(item, sources, 24000, mixture=True))
    decoded, rate = stempeg.read_stems(str(path))
    want = soxr.resample(decoded[0].astype(np.float32), rate, 24000, quality="HQ").T.astype(np.float16).astype(np.float32)
    got = ev.mixture().numpy()
    np.testing.assert_array_equal(got, want)
    stems_sum = sum(soxr.resample(decoded[STEM_IDS[s]], rate, 24000, quality="HQ").T for s in sources)
    assert np.abs(got - stems_sum).max() > 0.05


def test_training_chunks_hold_the_four_stems_of_their_scheduled_tracks(tmp_path):
    """Every source serves as the target from every training track equally often per epoch (the
    reference's 64 chunks per track), each source's track shuffled on its own (random track mixing); a
    chunk holds all four stems, vocals included (the reference's vocal-free drums/bass/other training
    mixtures are a bug not followed: the models see the sum of these four), each an excerpt of its
    scheduled track's stem scaled by a gain in U(0.25, 1.25) and possibly channel-swapped."""
    from marble.separation.stems import chunk_schedule, training_chunk
    from musdb_fixtures import separation

    run = separation(tmp_path)
    n_tracks = len(run.train_stems)
    sched = chunk_schedule(n_tracks, 64 * n_tracks, 4, np.random.default_rng(0))
    for k in range(4):
        assert np.bincount(sched[:, k], minlength=n_tracks).tolist() == [64] * n_tracks
    assert len({tuple(sched[:, k]) for k in range(4)}) == 4  # each source shuffled on its own
    ids = [1, 0, 1, 0]
    chunk = training_chunk(run.train_stems, 1.0, np.random.default_rng(5), ids)
    assert chunk.shape == (4, 2, 24000)
    replay = np.random.default_rng(5)  # the draws, in order: offset, gain, swap, per source
    for k, s in enumerate(run.sources):
        tr = run.train_stems[ids[k]]
        start, gain, swap = replay.uniform(0, tr.duration - 1.0), replay.uniform(0.25, 1.25), replay.random() < 0.5
        want = tr.read(s, start, 1.0)[:, :24000] * gain
        np.testing.assert_array_equal(chunk[k], want[::-1] if swap else want)
        assert np.abs(chunk[k]).max() > 0
    buffer = np.full((4, 2, 24000), np.nan, dtype=np.float32)  # the trainer's reused buffer: every sample rewritten
    assert training_chunk(run.train_stems, 1.0, np.random.default_rng(5), ids, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, chunk)
    with pytest.raises(ValueError, match="out has shape"):
        training_chunk(run.train_stems, 1.0, np.random.default_rng(5), ids, out=buffer[:, :, :100])


def test_models_separated_together_equal_each_alone():
    """The scoring speed-up changes no number: several models of a track separated together on one mixture STFT
    give, bit for bit, what each model gives alone (the per-model loop scoring ran before: mixture STFT block, EM,
    overlap-add)."""
    from marble.separation import OverlapAdd, mixture_blocks, num_frames, separate_targets, wiener_target

    torch.manual_seed(0)
    mix = torch.randn(2, 24000 * 3 + 17) * 0.3
    mags = torch.rand(3, 1025, num_frames(mix.shape[-1])) * 5  # three models' magnitudes over the whole track
    together = separate_targets(mix, [lambda a, mm, k=k: mags[k, :, a:a + mm.shape[-1]] for k in range(3)], block=100)
    for k in range(3):
        ola = OverlapAdd((2,), mix.shape[-1])
        for a, X in mixture_blocks(mix, 100):
            ola.add(wiener_target(mags[k, :, a:a + X.shape[-1]], X), a)
        assert torch.equal(together[k], ola.result())


def test_wiener_em_on_bin_slices_is_the_whole_block_em_bit_for_bit():
    """The CPU's Wiener EM runs on slices of WIENER_BINS frequency bins (cache-sized, ~2x faster): on one thread its
    estimate is, bit for bit, the EM on the whole block at once — full 600-frame blocks and a track's shorter last
    block, several models at once, 0-2 iterations, a scaled mixture (max |X| > 10) and an unscaled one; and it is
    the same on two threads, where one operation on the whole block splits across the threads."""
    from marble.separation import WIENER_BINS, WienerBlock

    g = torch.Generator().manual_seed(0)
    cases = [((), 600, 20.0), ((), 451, 20.0), ((3,), 137, 0.01), ((), 1, 5.0)]
    n_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for lead, n, size in cases:
            X = torch.complex(torch.randn(2, 1025, n, generator=g), torch.randn(2, 1025, n, generator=g)) * size
            mag = torch.rand(*lead, 1025, n, generator=g) * 3 * size
            em = WienerBlock(X)
            for it in (0, 1, 2):
                sliced = em.target(mag, it)
                assert torch.equal(sliced, em.target(mag, it, bins=1025)), (lead, n, it)
                assert sliced.shape == (*lead, 2, 1025, n)
            one = em.target(mag)
            torch.set_num_threads(2)
            assert torch.equal(em.target(mag), one), (lead, n)
            torch.set_num_threads(1)
    finally:
        torch.set_num_threads(n_threads)
    assert 1025 > WIENER_BINS > 1


def _complex_em(mix: torch.Tensor, mag: torch.Tensor, iterations: int, bins: int, eps: float = 1e-10) -> torch.Tensor:
    """The per-source Wiener EM in plain complex128 arithmetic (open-unmix's formulas as torch's complex kernels
    compute them), on slices of ``bins`` frequency bins: WienerBlock's real-arithmetic shortcuts must equal it bit
    for bit."""
    mix = mix.to(torch.complex128)
    mag = mag.unsqueeze(-3).to(torch.float64)
    unit = torch.polar(torch.ones_like(mix.real), torch.angle(mix))
    scale = torch.clamp(mix.abs().amax(dim=(-3, -2, -1), keepdim=True) / 10.0, min=1.0)
    xs = mix / scale
    out = []
    for a in range(0, mix.shape[-2], bins):
        part = slice(a, a + bins)
        m, X, x = mag[..., part, :], mix[..., part, :], xs[..., part, :]
        target = torch.complex(m * unit.real[..., part, :], m * unit.imag[..., part, :])
        X, x = X.expand_as(target), x.expand_as(target)
        if iterations == 0:
            out.append(target)
            continue
        ys = [target / scale, (X - target) / scale]
        x0, x1 = x[..., 0, :, :], x[..., 1, :, :]
        for it in range(iterations):
            vs, Rs = [], []
            for y in ys:
                y0, y1 = y[..., 0, :, :], y[..., 1, :, :]
                v = (y0.real ** 2 + y0.imag ** 2 + y1.real ** 2 + y1.imag ** 2) / 2
                w = (eps + v.sum(-1))[..., None].to(y.dtype)
                c0, c1 = y0.conj().resolve_conj(), y1.conj().resolve_conj()
                Rs.append([(p * q).sum(-1, keepdim=True) / w for p, q in ((y0, c0), (y0, c1), (y1, c0), (y1, c1))])
                vs.append(v.to(y.dtype))
            sq = math.sqrt(eps)
            c00 = sq + vs[0] * Rs[0][0] + vs[1] * Rs[1][0]
            c01 = vs[0] * Rs[0][1] + vs[1] * Rs[1][1]
            c10 = vs[0] * Rs[0][2] + vs[1] * Rs[1][2]
            c11 = sq + vs[0] * Rs[0][3] + vs[1] * Rs[1][3]
            inv_det = 1.0 / (c00 * c11 - c01 * c10)
            i00, i01, i10, i11 = c11 * inv_det, -c01 * inv_det, -c10 * inv_det, c00 * inv_det
            ys = [torch.stack([v * (r00 * i00 + r01 * i10) * x0 + v * (r00 * i01 + r01 * i11) * x1,
                               v * (r10 * i00 + r11 * i10) * x0 + v * (r10 * i01 + r11 * i11) * x1], dim=-3)
                  for v, (r00, r01, r10, r11) in zip(vs, Rs)]
        out.append(ys[0] * scale)
    return torch.cat(out, dim=-2)


def test_wiener_em_real_arithmetic_is_the_complex_formula_bit_for_bit():
    """WienerBlock computes the parts of the EM whose operands are real in real arithmetic (the mixture
    covariance's diagonal and determinant, its inverse, the scaling by max|X| / 10): element for element the values
    of the plain complex formulas, on STFT blocks as the probe feeds them (frames-major) and on contiguous ones,
    full 600-frame blocks and odd short ones, several models at once, 0-2 iterations, scaled and unscaled."""
    from marble.separation import WienerBlock, _real_times, mixture_blocks

    g = torch.Generator().manual_seed(3)
    a = torch.complex(torch.randn(4, 8, 37, dtype=torch.float64, generator=g), torch.randn(4, 8, 37, dtype=torch.float64, generator=g))
    d = torch.rand(4, 1, 1, dtype=torch.float64, generator=g) * 30 + 1
    assert torch.equal(_real_times(a, 1.0 / d), a / d) and torch.equal(_real_times(a, d), a * d)
    mix = torch.randn(2, 24000 * 9 + 321, generator=g) * 0.5
    blocks = [X for _, X in mixture_blocks(mix, 600)]  # frames-major [2, F, n], as the probe feeds them: 600 and 77
    blocks += [torch.complex(torch.randn(3, 2, 1025, 45, generator=g), torch.randn(3, 2, 1025, 45, generator=g)) * 0.01]
    for X in blocks:
        n = X.shape[-1]
        for mag in ((torch.rand(n, 1025, generator=g) * 40).T, torch.rand(*X.shape[:-3], 1025, n, generator=g) * 40):
            em = WienerBlock(X)
            for it, bins in ((0, 64), (1, 64), (1, 1025), (2, 32)):
                assert torch.equal(em.target(mag, it, bins=bins), _complex_em(X, mag, it, bins)), (X.shape, it, bins)
    assert [X.shape[-1] for X in blocks] == [600, 77, 45]
    assert any(float(WienerBlock(X).scale.max()) > 1 for X in blocks) and float(WienerBlock(blocks[-1]).scale.max()) == 1


def test_wiener_em_compiled_loops_are_the_complex_formula_bit_for_bit():
    """On the CPU the protocol's one EM iteration runs as compiled loops (marble.separation.em_loops) on the slices
    whose bins are contiguous and a multiple of 8: their estimate is, element for element, the plain complex
    formulas' — STFT blocks of music-like audio as the probe feeds them (600 and 77 frames), the head's float32
    magnitude and a float64 one, a scaled mixture (max |X| > 10) and an unscaled one; the block's last bin (1025 =
    16 x 64 + 1) takes the torch path. Other layouts and iteration counts leave the loops unused."""
    from marble.separation import WienerBlock, mixture_blocks

    g = torch.Generator().manual_seed(5)
    t = torch.arange(24000 * 9 + 321) / 24000
    tone = torch.sin(2 * math.pi * 220 * t) + 0.5 * torch.sin(2 * math.pi * 1760 * t + 1.0)
    for gain in (0.002, 3.0):
        mix = gain * (torch.stack([tone, 0.7 * tone]) + 0.3 * torch.randn(2, t.numel(), generator=g))
        for X in [X for _, X in mixture_blocks(mix, 600)]:
            n = X.shape[-1]
            em = WienerBlock(X)
            head = (torch.rand(n, 1025, generator=g) * X.abs().mean(0).T.float()).T  # [F, n], as the head gives it
            for mag in (head, head.double()):
                out = torch.empty(n, 2, 1025, dtype=torch.complex128).permute(1, 2, 0)
                assert em._compiled_target(mag, 1, 1e-10, 64, out) == 1024  # the loops ran on bins 0..1023
                assert torch.equal(em.target(mag, 1, bins=64), _complex_em(X, mag, 1, 64)), (gain, n, mag.dtype)
            assert float(em.scale) > 1 if gain == 3.0 else float(em.scale) == 1
            out = torch.empty(2, n, 1025, dtype=torch.complex128).transpose(-1, -2)
            assert em._compiled_target(head.contiguous(), 1, 1e-10, 64, out) == 0  # frames-last magnitude: torch path
            assert em._compiled_target(head, 2, 1e-10, 64, out) == 0
            assert em._compiled_target(head, 1, 1e-10, 60, out) == 0


def test_overlap_add_in_pieces_is_the_one_piece_sum_bit_for_bit():
    """OverlapAdd.add inverts a block OLA_FRAMES frames at a time (cache-sized): every output sample is, bit for bit,
    the sum of the one-piece computation (the whole block's inverse FFT, windowed, added frame after frame)."""
    from marble.separation import HOP, N_FFT, OLA_FRAMES, OverlapAdd, _frame_indices, mixture_blocks

    mix = torch.randn(2, 24000 * 8 + 123, generator=torch.Generator().manual_seed(7))
    ola, ref = OverlapAdd((2,), mix.shape[-1]), OverlapAdd((2,), mix.shape[-1])
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    blocks = list(mixture_blocks(mix, 150))
    for a, X in blocks:
        spec = X.to(torch.complex128) * 0.5
        ola.add(spec, a)
        frames = torch.fft.irfft(spec.transpose(-1, -2), n=N_FFT, dim=-1)  # [2, n, N_FFT], the whole block at once
        ref.out.index_add_(1, _frame_indices(a, frames.shape[-2], N_FFT, HOP, "cpu"),
                           (frames * window).float().reshape(2, -1))
    assert torch.equal(ola.out, ref.out) and torch.equal(ola.result(), ref.result())
    assert blocks[0][1].shape[-1] > 2 * OLA_FRAMES and blocks[-1][1].shape[-1] % OLA_FRAMES


def test_mse_gradient_is_autograds_bit_for_bit():
    """The trainer hands each head the gradient of its MSE directly (one pass, not the loss's four): for several
    accumulation counts (powers of two and not) and shapes, every parameter's gradient is autograd's through the loss."""
    import copy

    from marble.separation.head import OpenUnmixHead
    from marble.separation.train import mse_gradient

    for parts, (B, T) in ((8, (4, 76)), (3, (2, 50)), (5, (3, 33))):
        torch.manual_seed(parts)
        a = OpenUnmixHead(24, 1025, hidden=16, layers=3, dropout=0.0).train()
        b = copy.deepcopy(a)
        x, mix, tgt = torch.randn(B, T, 24), torch.rand(B, T, 1025) * 3, torch.rand(B, T, 1025)
        (torch.mean((a.frames(x, mix)[0] - tgt) ** 2) / parts).backward()
        pred = b.frames(x, mix)[0]
        pred.backward(mse_gradient(pred.detach(), tgt, parts))
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(p.grad, q.grad), (parts, name)


def test_frames_major_training_step_gives_the_same_gradients():
    """The trainer runs a head in its frames-major layout (mixture, output and targets [B, T, F]: no strided pass
    over the bins): the same magnitudes as the head's [B, F, T] ``step`` and, for the MSE the trainer takes, the same
    gradient of every parameter bit for bit as that loss on the [B, F, T] output (dropout on, BatchNorm training)."""
    import copy

    from marble.probe.frames import seeded
    from marble.separation.head import OpenUnmixHead
    from marble.separation.train import frames_magnitudes
    from marble.separation import mono_magnitude

    torch.manual_seed(0)
    a = OpenUnmixHead(24, 1025, hidden=16, layers=3, dropout=0.4).train()
    b = copy.deepcopy(a)
    wav = torch.randn(3, 2, 2, 24000) * 0.1  # [B, K, C, n]: two sources
    x = torch.randn(3, 76, 24)
    mix = mono_magnitude(wav.sum(1))  # [B, F, N]
    tgt = mono_magnitude(wav)[:, 0]
    assert torch.equal(frames_magnitudes(wav), mono_magnitude(wav).transpose(-1, -2))
    with seeded(7):
        pa = a.step(x, mix)[0]
    with seeded(7):
        pb = b.frames(x, frames_magnitudes(wav.sum(1)))[0]
    assert torch.equal(pa, pb.transpose(1, 2))
    (torch.mean((pa - tgt) ** 2) / 8).backward()
    (torch.mean((pb - frames_magnitudes(wav)[:, 0]) ** 2) / 8).backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_models_side_by_side_train_and_score_as_one_at_a_time(tmp_path):
    """With several workers the source models train and reconstruct side by side (marble.separation.workers):
    every model's weights after a step and every validation SDR equal, bit for bit, those of one worker."""
    from musdb_fixtures import separation

    rows = ((3, 1e-3), ("weighted", 5e-3))
    runs = [separation(tmp_path, rows=rows, batch_size=2, accumulate=2, workers=w) for w in (1, 3)]
    assert [r.workers.workers for r in runs] == [1, 3]
    chunks = np.stack([np.random.default_rng(i).standard_normal((4, 2, 24000)).astype(np.float32) * 0.1
                       for i in range(4)])
    out = []
    for run in runs:
        state = run.new_state()
        for m in state.flat:
            m.model.train()
        run.train_step(state.flat, chunks, 0, 0)
        out.append(([p.detach().clone() for m in state.flat for p in m.model.parameters()],
                    run.score("valid", state.flat)[0]))
    (w1, s1), (w3, s3) = out
    assert all(torch.equal(p, q) for p, q in zip(w1, w3))
    assert np.array_equal(s1, s3) and np.isfinite(s1).all() and s1.shape == (8, 1)
