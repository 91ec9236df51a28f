"""GTZAN beat end to end on a synthetic metronome set in the GTZAN + GTZAN-Rhythm (JAMS) layout."""

import json

import numpy as np
import torch

from beat_fixtures import write_metronome_gtzan
from marble.beat import DBNBeatTracker
from marble.datasets import get_dataset
from marble.metrics import beat_f_measure, beat_f_measure_pooled
from marble.registry import get_card
from marble.audio import load


def spectral_flux(wav: np.ndarray, sr: int = 24000, hop: int = 320) -> np.ndarray:
    """A trivial onset activation at 75 Hz, scaled into (0, 1)."""
    x = torch.as_tensor(wav)
    mag = torch.stft(x, 1024, hop, window=torch.hann_window(1024), return_complex=True).abs()
    flux = torch.relu(torch.diff(torch.log1p(100 * mag), dim=1)).sum(0)
    flux = torch.cat([flux[:1] * 0, flux]).numpy().astype(np.float64)
    return 0.01 + 0.98 * flux / flux.max()


def test_metronome_spectral_flux_dbn_scores(tmp_path):
    truth = write_metronome_gtzan(tmp_path)
    card = get_card("gtzan-beat")
    items = get_dataset(card, tmp_path, allow_partial=True).items("test") + \
        get_dataset(card, tmp_path, allow_partial=True).items("valid")
    assert len(items) == 4
    refs = [it.extra["beats"] for it in items]
    name = {it.uid: it.uid.split("/")[-1][:-4] for it in items}
    for it, r in zip(items, refs):  # the JAMS round trip gives back the written beats
        np.testing.assert_allclose(r, {**truth["test"], **truth["valid"]}[name[it.uid]])
    acts = [spectral_flux(load(it.path, 24000)) for it in items]
    est = DBNBeatTracker(75).batch(acts)
    assert beat_f_measure(refs, est) > 0.9
    assert beat_f_measure_pooled(refs, est) > 0.9


def test_run_gtzan_beat_end_to_end(tmp_path):
    """Random 10 s training crops of 14 s click tracks, whole tracks for valid/test: the pooled F
    (main, monitor) and the per-track mir_eval F both exceed 0.9 on the click-track fixture."""
    from marble.probe.sequence import run

    write_metronome_gtzan(tmp_path, seconds=14.0)
    card = get_card("gtzan-beat")
    r = run(card, "handcrafted", data_dir=tmp_path, results_dir=tmp_path / "res", layers=[0], lrs=[1e-3, 5e-3],
            max_epochs=4, batch_size=2)
    assert r["task"] == "gtzan-beat" and r["main_metric"] == "beat_f_measure_pooled" and r["track"] == "constrained"
    assert len(r["sweep"]) == 2 and {e["lr"] for e in r["sweep"]} == {1e-3, 5e-3}
    for part in ("valid", "test"):
        assert set(r[part]) == {"beat_f_measure", "beat_f_measure_pooled"}
        assert all(0.0 <= v <= 1.0 for v in r[part].values())
    sel = r["selected"]
    best = max(r["sweep"], key=lambda e: e["valid"]["beat_f_measure_pooled"])
    assert sel["valid_score"] == best["valid"]["beat_f_measure_pooled"] and sel["layer"] == 0
    assert r["training"]["max_epochs"] == 4 and r["training"]["layers"] == [0]
    assert r["training"]["decoder"]["observation_lambda"] == 16 and r["training"]["train_crop_seconds"] == 10.0
    assert r["test"]["beat_f_measure_pooled"] > 0.9 and r["test"]["beat_f_measure"] > 0.9, r["test"]
    saved = json.loads((tmp_path / "res" / "handcrafted" / "gtzan-beat" / "constrained.json").read_text())
    assert saved["test"] == r["test"] and saved["manifest"]["encoder"]["name"] == "handcrafted"


def test_training_crops_are_random_10s_clips(tmp_path):
    """Each epoch draws one crop per track from (seed, epoch) alone; a crop is 10 s cut before
    resampling and its targets are the beats shifted to the crop."""
    from marble.beat.train import CropSource
    from marble.encoders import load_encoder

    truth = write_metronome_gtzan(tmp_path, seconds=14.0)
    card = get_card("gtzan-beat")
    items = get_dataset(card, tmp_path, allow_partial=True).items("train")
    src = CropSource(items, load_encoder("handcrafted"), 10.0, 1)
    o1, s1 = src.starts(1234, 0)
    o2, s2 = src.starts(1234, 0)
    o3, s3 = src.starts(1234, 1)
    assert (o1 == o2).all() and (s1 == s2).all() and not np.allclose(s1, s3)
    assert ((s1 >= 0) & (s1 <= 4.0)).all()
    (wav, beats), = src.batch([0], s1)
    assert len(wav) == 240000  # 10 s at the encoder rate
    name = items[0].uid.split("/")[-1][:-4]
    np.testing.assert_allclose(beats, truth["train"][name] - s1[0])


def test_seeding_independent_of_other_probes(tmp_path):
    """A probe trains exactly as it does alone: layer 3 of a (0, 3, weighted) sweep has the same
    initial weights, the same crops and dropout, hence the same scores, as layer 3 run alone."""
    from marble.probe.sequence import run
    from marble.probe.sweep import Probe, TrainConfig, initial_state

    cfg = TrainConfig()
    full = initial_state([Probe(layer, lr) for layer in (0, 1, 2, 3, "weighted") for lr in (1e-3, 5e-3)], cfg,
                         [8, 16, 1], 4, "cpu")
    alone = initial_state([Probe(3, 5e-3)], cfg, [8, 16, 1], 4, "cpu")
    for k in ("w0", "b0", "w1", "b1"):
        assert torch.equal(full.params[k][7], alone.params[k][0])

    write_metronome_gtzan(tmp_path, seconds=12.0)
    card = get_card("gtzan-beat")
    kw = dict(data_dir=tmp_path, results_dir=None, lrs=[5e-3], max_epochs=2, batch_size=2)
    r_all = run(card, "handcrafted", layers=[0, 3, "weighted"], **kw)
    r_one = run(card, "handcrafted", layers=[3], **kw)
    row_all = next(r for r in r_all["sweep"] if r["layer"] == 3)
    assert row_all["valid"] == r_one["sweep"][0]["valid"] and row_all["test"] == r_one["sweep"][0]["test"]
    assert row_all["best_epoch"] == r_one["sweep"][0]["best_epoch"]


def test_direction_comes_from_the_card():
    """The selection and early stopping follow the card's direction; NaN never wins."""
    import dataclasses

    from marble.probe.frames import make_module_probes
    from marble.probe.select import pick_best
    from marble.probe.sweep import Probe

    tr = get_card("gtzan-beat").training
    (mp,) = make_module_probes([Probe(0, 1e-3)], lambda: torch.nn.Linear(2, 1), tr, "cpu", "min")
    for epoch, v in enumerate([3.0, float("nan"), 2.0, 2.5], 1):
        mp.observe(v, epoch, patience=10)
    assert mp.best_score == 2.0 and mp.best_epoch == 3 and mp.bad_epochs == 1
    (mx,) = make_module_probes([Probe(0, 1e-3)], lambda: torch.nn.Linear(2, 1), tr, "cpu", "max")
    for epoch, v in enumerate([float("nan"), 1.0, 3.0, 2.0], 1):
        mx.observe(v, epoch, patience=10)
    assert mx.best_score == 3.0 and mx.best_epoch == 3
    assert pick_best([0.5, float("nan"), 0.2], "min") == 2 and pick_best([0.5, float("nan"), 0.2], "max") == 0
    card = get_card("musdb")
    assert card.training.monitor == "main" and dataclasses.replace(card.training, monitor="loss").monitor == "loss"


def test_weighted_sum_option_for_frame_tasks(tmp_path):
    """The constrained track's weighted-sum layer option on a frame task: a softmax over states 1..L
    (state 0 excluded), trained with the head, reported in the result's ``weighted_sum``."""
    from marble.probe.frames import WeightedStates, feature_layers, probe_input
    from marble.probe.sequence import run

    assert feature_layers([0, "weighted"], 4) == [0, 1, 2, 3] and feature_layers([2], 4) == [2]
    mix = WeightedStates(3, dim=1)
    x = torch.randn(2, 4, 5, 6)  # [B, S, T, H] holding states 0..3
    got = mix(probe_input("weighted", x, [0, 1, 2, 3], 1))
    w = torch.softmax(mix.logits.detach().double(), 0)
    want = sum(w[i] * x[:, i + 1].double() for i in range(3))  # float64 re-computation, state 0 excluded
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)

    write_metronome_gtzan(tmp_path, seconds=6.0)
    card = get_card("gtzan-beat")
    r = run(card, "handcrafted", data_dir=tmp_path, results_dir=tmp_path / "res", layers=[0, "weighted"], lrs=[5e-3],
            max_epochs=2)
    assert {row["layer"] for row in r["sweep"]} == {0, "weighted"}
    weights = r["weighted_sum"]["weights"]
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-9 and r["weighted_sum"]["lr"] == 5e-3


def test_probe_reads_every_frame_manifest_extract_writes(tmp_path):
    """`marble extract` writes ``states: "all"`` or the kept list; the frame probe reads both, and a
    layer the cache does not hold is a clear error naming the cache and the fix."""
    import pytest

    from marble.cache.extract import extract
    from marble.cache.store import CacheError
    from marble.encoders import load_encoder
    from marble.probe.frames import FrameFeatures

    write_metronome_gtzan(tmp_path, seconds=4.0)
    card = get_card("gtzan-beat")
    enc = load_encoder("handcrafted")
    items = {"valid": get_dataset(card, tmp_path, allow_partial=True).items("valid")}
    for states, name in ((None, "all"), ("0,2", "some")):
        d = extract(card, enc, items, tmp_path / name, states=states, progress=False)
        item = items["valid"][0]
        ff = FrameFeatures(enc, [2], "cpu", d, "valid", card=card)
        got = ff(item)
        assert ff.cache_reads == 1 and ff.encoder_passes == 0 and got.shape[0] == 1
        np.testing.assert_allclose(got.numpy(), FrameFeatures(enc, [2], "cpu", None, card=card)(item).numpy(), atol=2e-2, rtol=2e-2)
    with pytest.raises(CacheError, match="--states all"):
        FrameFeatures(enc, [1], "cpu", d, "valid", card=card)


def test_references_beyond_the_evaluated_audio_are_dropped(tmp_path):
    """PROTOCOL §4 (third edition): valid/test score the first ``crop_seconds`` of a track; annotated beats at or
    after the end of the evaluated audio (the crop, or the file's end when it is shorter) are dropped from the
    references. With 10 s evaluated of 14 s click tracks, the pooled and per-track F exceed 0.9 only when the
    beats of 10..14 s are dropped (kept, recall could not pass 10/14)."""
    from extract_helpers import card_variant

    from beat_fixtures import write_jams
    from marble.beat.train import evaluated_references, evaluated_seconds
    from marble.probe.sequence import run

    truth = write_metronome_gtzan(tmp_path, seconds=14.0)
    card = card_variant(tmp_path, "gtzan-beat", "beat-10s", "crop_seconds = 10.0\ntrain_chunk_seconds = 10.0")
    items = get_dataset(card, tmp_path, allow_partial=True).items("test")
    name = items[0].uid.split("/")[-1][:-4]
    assert evaluated_seconds(items[0], card) == 10.0
    np.testing.assert_array_equal(evaluated_references(items[0], card), truth["test"][name][truth["test"][name] < 10.0])
    # the built-in card evaluates 30 s: a 14 s file is evaluated whole, an annotation past its end is dropped
    beats = np.r_[truth["test"][name], 14.0, 14.3]
    write_jams(tmp_path / "GTZAN" / "jams" / f"{name}.wav.jams", beats, 14.5)
    item = get_dataset(get_card("gtzan-beat"), tmp_path, allow_partial=True).items("test")[0]
    assert evaluated_seconds(item, get_card("gtzan-beat")) == 14.0
    np.testing.assert_array_equal(evaluated_references(item, get_card("gtzan-beat")), truth["test"][name])
    write_jams(tmp_path / "GTZAN" / "jams" / f"{name}.wav.jams", truth["test"][name], 14.0)

    r = run(card, "handcrafted", data_dir=tmp_path, results_dir=None, layers=[0], lrs=[5e-3], max_epochs=3,
            batch_size=2)
    assert r["test"]["beat_f_measure_pooled"] > 0.9 and r["test"]["beat_f_measure"] > 0.9, r["test"]


def test_frame_probe_reads_the_cache_manifest_once(tmp_path, monkeypatch):
    """The frame probe reads (and hashes) its cache's manifest once: the cache checks, the features' states and the
    result's manifest share that read; the result still names the cache manifest's sha256 and split checksums."""
    import marble.probe.frames as frames
    import marble.probe.sequence as sequence
    from marble.cache.extract import extract
    from marble.encoders import load_encoder
    from marble.io import file_sha256

    write_metronome_gtzan(tmp_path, seconds=4.0)
    card = get_card("gtzan-beat")
    enc = load_encoder("handcrafted")
    ds = get_dataset(card, tmp_path, allow_partial=True)
    d = extract(card, enc, {s: ds.items(s) for s in ("valid", "test")}, tmp_path / "cache", progress=False)
    reads = []
    for mod in (frames, sequence):
        real = mod.read_manifest
        monkeypatch.setattr(mod, "read_manifest", lambda p, real=real: reads.append(p) or real(p))
    r = sequence.run(card, "handcrafted", data_dir=tmp_path, cache_dir=tmp_path / "cache", results_dir=None,
                     layers=[1], lrs=[5e-3], max_epochs=1)
    assert len(reads) == 1  # check_cache_for, verify_frame_cache, 2 x FrameFeatures and the result: one read
    assert r["manifest"]["cache_manifest_sha256"] == file_sha256(d / "manifest.json")
    assert set(r["manifest"]["split_checksums"]) == {"valid", "test"}
