"""Extraction pipeline: cache contents equal a direct un-batched float64 computation; manifest
identity and refusal; bad audio reported and skipped; interrupted runs resume; corrupt units redone."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from extract_helpers import builtin, card_variant, gtzan_items, reference_windows, write_wav  # noqa: E402
from extract_plugin import ToyEncoder  # noqa: E402

from marble.audio import load  # noqa: E402
from marble.cache import store  # noqa: E402
from marble.cache.extract import CacheMismatchError, extract, parse_states  # noqa: E402
from marble.datasets.base import Item  # noqa: E402

TOL = dict(rtol=2e-3, atol=2e-3)  # fp16 storage


def _log(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]


def test_clip_task_whole_clip_matches_direct_computation(tmp_path):
    items = gtzan_items(tmp_path, n=5)
    card, enc = builtin("gtzan"), ToyEncoder()
    d = extract(card, enc, {"train": items[:3], "test": items[3:]}, tmp_path / "cache", unit_size=2, batch_size=2,
                progress=False)
    assert d == tmp_path / "cache" / "plugins__toy-encoder" / "gtzan"
    for split, its in (("train", items[:3]), ("test", items[3:])):
        cs = store.read_clip_split(d / split)
        assert cs.features.dtype == np.float16 and cs.features.shape == (len(its), enc.num_states, enc.dim)
        assert list(cs.uids) == [it.uid for it in its] and list(cs.windows) == [0] * len(its)
        assert list(cs.groups) == [it.uid for it in its]
        assert cs.labels.dtype == np.int64 and list(cs.labels) == [it.label for it in its]
        for row, it in enumerate(its):
            (ref,) = reference_windows(card, enc, it)
            np.testing.assert_allclose(cs.features[row].astype(np.float64), ref, **TOL)
        assert not (d / split / "units").exists()  # merged and cleaned
    m = store.read_manifest(d)
    assert m["encoder"] == json.loads(json.dumps(enc.identity()))
    assert m["task"] == {"id": "gtzan", "version": 2, "sha256": card.sha256, "protocol": "marble-v1",
                         "prediction": "multiclass"}
    assert m["dtype"] == "float16" and m["compute_dtype"] == "fp32" and m["format"] == 1
    assert m["splits"]["train"]["status"] == m["splits"]["test"]["status"] == "complete"
    assert m["splits"]["train"]["n_items"] == 3 and m["errors"] == []
    assert len(m["splits"]["train"]["items_sha256"]) == 64
    # a complete cache is reused as is: nothing recomputed on a second call
    n = len(_log(d))
    extract(card, enc, {"train": items[:3], "test": items[3:]}, tmp_path / "cache", progress=False)
    assert len(_log(d)) == n


def test_gtzan_encodes_the_whole_file(tmp_path):
    """PROTOCOL §4 (third edition): a GTZAN file longer than 30.0 s (919 of 929 are, by up to 0.65 s) is encoded
    whole, as the reference did (crop_to_length_in_sec: null); version 1 of the card cut it at 30.0 s."""
    import soundfile as sf

    sr, rng = 22050, np.random.default_rng(0)
    t = np.arange(30 * sr) / sr  # 30 s of a quiet tone, then 0.6 s of loud noise: the tail moves the time mean
    x = np.r_[0.1 * np.sin(2 * np.pi * 220 * t), 0.9 * rng.uniform(-1, 1, int(0.6 * sr))].astype(np.float32)
    (tmp_path / "blues").mkdir()
    sf.write(tmp_path / "blues" / "blues.00000.wav", x, sr, subtype="PCM_16")
    item = Item(uid="blues/blues.00000.wav", path=tmp_path / "blues" / "blues.00000.wav", label=0)
    card, enc = builtin("gtzan"), ToyEncoder()
    assert card.audio.crop_seconds is None and card.version == 2
    d = extract(card, enc, {"test": [item]}, tmp_path / "cache", progress=False)
    got = store.read_clip_split(d / "test").features[0].astype(np.float64)
    wav = load(item.path, enc.sample_rate)
    assert len(wav) == round(30.6 * enc.sample_rate)
    with torch.no_grad():
        whole = enc.hidden_states(torch.from_numpy(enc.prepare(wav).astype(np.float32))[None])[0].double().mean(1)
        first30 = enc.hidden_states(torch.from_numpy(enc.prepare(wav[:30 * enc.sample_rate]).astype(np.float32))[None])
    np.testing.assert_allclose(got, whole.numpy(), **TOL)
    assert np.abs(got - first30[0].double().mean(1).numpy()).max() > 0.01  # (5x the fp16 tolerance) the 30.0 s crop computes something else


def test_windowed_task_last_window_rule_and_labels(tmp_path):
    # EMO logic (crop, then non-overlapping windows, a last window kept only if >= 1 s), shorter numbers
    card = card_variant(tmp_path, "emo", "emo-mini", "crop_seconds = 3.5\nwindow_seconds = 1.5")
    enc = ToyEncoder(seed=3)
    mk = lambda i, s: write_wav(tmp_path / "EMO" / f"{i}.wav", s, sr=44100, seed=i)  # noqa: E731
    items = [
        Item("a", mk(1, 4.0), label=[0.5, -1.0]),  # crop 3.5 s -> 1.5 + 1.5, 0.5 s tail dropped
        Item("b", mk(2, 2.7), label=[1.0, 2.0]),  # 1.5 + 1.2 (kept: >= 1 s)
        Item("c", mk(3, 1.2), label=[0.0, 0.25]),  # a single short window of 1.2 s
        Item("d", mk(4, 5.0), label=[-2.0, 0.0], offset=0.5, duration=2.6, group="song-d"),  # excerpt 0.5..3.1
        Item("e", mk(5, 0.8), label=[3.0, 3.0]),  # shorter than the 1 s minimum: reported, skipped
    ]
    d = extract(card, enc, {"train": items}, tmp_path / "cache", unit_size=2, batch_size=3, progress=False)
    cs = store.read_clip_split(d / "train")
    assert list(cs.uids) == ["a", "a", "b", "b", "c", "d", "d"]
    assert list(cs.windows) == [0, 1, 0, 1, 0, 0, 1]
    assert list(cs.groups) == ["a", "a", "b", "b", "c", "song-d", "song-d"]
    assert cs.labels.dtype == np.float32 and cs.labels.shape == (7, 2)
    np.testing.assert_array_equal(cs.labels[[0, 1, 6]], [[0.5, -1.0], [0.5, -1.0], [-2.0, 0.0]])
    row = 0
    for it in items[:4]:
        for ref in reference_windows(card, enc, it):
            np.testing.assert_allclose(cs.features[row].astype(np.float64), ref, **TOL)
            row += 1
    # the excerpt really is [0.5, 3.1) s of the file (crop before resampling)
    full = load(items[3].path, 8000)
    part = load(items[3].path, 8000, offset=0.5, duration=2.6)
    assert abs(len(part) - 2.6 * 8000) <= 2 and np.corrcoef(full[4000:4000 + 8000], part[:8000])[0, 1] > 0.99
    (err,) = store.read_manifest(d)["errors"]
    assert err["uid"] == "e" and err["file"] == str(items[4].path) and "too short" in err["reason"]


def test_multilabel_labels_are_multi_hot(tmp_path):
    card = card_variant(tmp_path, "mtt", "mtt-mini", "crop_seconds = 1.0")
    enc = ToyEncoder()
    items = [Item(f"t{i}", write_wav(tmp_path / "MTT" / f"{i}.wav", 1.5, seed=i), label=lab)
             for i, lab in enumerate([[0, 3], [], [49]])]
    d = extract(card, enc, {"valid": items}, tmp_path / "cache", progress=False)
    cs = store.read_clip_split(d / "valid")
    assert cs.labels.dtype == np.uint8 and cs.labels.shape == (3, 50)
    assert cs.labels.sum() == 3 and cs.labels[0, 0] == cs.labels[0, 3] == cs.labels[2, 49] == 1
    with pytest.raises(ValueError, match="class indices"):
        extract(card, enc, {"valid": [Item("x", items[0].path, label=[50])]}, tmp_path / "other", progress=False)


def test_frame_task_selected_states(tmp_path):
    card, enc = builtin("gtzan-beat"), ToyEncoder(seed=1)
    items = gtzan_items(tmp_path, n=3)
    items = [Item(it.uid, it.path) for it in items]
    d = extract(card, enc, {"test": items}, tmp_path / "cache", states="0,2", unit_size=2, progress=False)
    fs = store.FrameStore(d / "test")
    for it in items:
        (ref,) = reference_windows(card, enc, it, states=[0, 2])
        got = fs.read(it.uid)
        assert got.dtype == np.float16 and got.shape == ref.shape and got.shape[0] == 2
        np.testing.assert_allclose(got.astype(np.float64), ref, **TOL)
    index = pd.read_csv(d / "test" / "index.tsv", sep="\t")
    assert list(index["uid"]) == [it.uid for it in items]
    assert list(index["frames"]) == [fs.read(it.uid).shape[1] for it in items]
    m = store.read_manifest(d)
    assert m["states"] == [0, 2] and m["kind"] == "frame" and m["splits"]["test"]["status"] == "complete"
    with pytest.raises(ValueError, match="frame-level tasks only"):
        extract(builtin("gtzan"), enc, {"test": items}, tmp_path / "c2", states="0,2", progress=False)


def test_long_windows_are_chunked_exactly(tmp_path):
    """A window longer than max_chunk_seconds: clip feature = mean over all frames of its equal chunks."""
    card, enc = builtin("gtzan"), ToyEncoder(seed=2)
    item = Item("long", write_wav(tmp_path / "long.wav", 3.3, seed=9), label=1)
    d = extract(card, enc, {"train": [item]}, tmp_path / "cache", max_chunk_seconds=1.0, progress=False)
    clip = enc.prepare(load(item.path, enc.sample_rate)).astype(np.float32)
    n = math.ceil(len(clip) / 8000)
    edges = [round(i * len(clip) / n) for i in range(n + 1)]
    frames = [enc.hidden_states(torch.from_numpy(clip[a:b])[None])[0].double().detach().numpy()
              for a, b in zip(edges[:-1], edges[1:])]
    ref = np.concatenate(frames, axis=1).mean(axis=1)
    np.testing.assert_allclose(store.read_clip_split(d / "train").features[0].astype(np.float64), ref, **TOL)
    assert store.read_manifest(d)["max_chunk_seconds"] == 1.0


def test_manifest_mismatch_refuses_reuse(tmp_path):
    items = gtzan_items(tmp_path, n=2)
    card = builtin("gtzan")
    d = extract(card, ToyEncoder(seed=0), {"train": items}, tmp_path / "cache", progress=False)
    before = np.array(store.read_clip_split(d / "train").features)
    with pytest.raises(CacheMismatchError, match="(?s)encoder.*--overwrite"):
        extract(card, ToyEncoder(seed=1), {"train": items}, tmp_path / "cache", progress=False)
    with pytest.raises(CacheMismatchError, match="item list changed"):
        extract(card, ToyEncoder(seed=0), {"train": items[:1]}, tmp_path / "cache", progress=False)
    with pytest.raises(CacheMismatchError, match="compute_dtype"):
        extract(card, ToyEncoder(seed=0), {"train": items}, tmp_path / "cache", dtype="bf16", progress=False)
    np.testing.assert_array_equal(store.read_clip_split(d / "train").features, before)  # untouched
    extract(card, ToyEncoder(seed=1), {"train": items}, tmp_path / "cache", overwrite=True, progress=False)
    after = store.read_clip_split(d / "train").features
    assert not np.allclose(after, before)
    assert store.read_manifest(d)["encoder"]["weights_sha256"] == ToyEncoder(seed=1).identity()["weights_sha256"]


def test_bad_audio_is_reported_and_skipped(tmp_path):
    good = gtzan_items(tmp_path, n=3)
    garbage = tmp_path / "bad" / "garbage.wav"
    garbage.parent.mkdir()
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    empty = tmp_path / "bad" / "empty.wav"
    empty.write_bytes(b"")
    tiny = write_wav(tmp_path / "bad" / "tiny.wav", 0.01)  # fewer samples than one encoder frame
    bad = [Item("garbage", garbage, label=0), Item("empty", empty, label=0), Item("tiny", tiny, label=0),
           Item("missing", tmp_path / "nope.wav", label=0)]
    items = [good[0], bad[0], good[1], bad[1], bad[2], bad[3], good[2]]
    d = extract(builtin("gtzan"), ToyEncoder(), {"train": items}, tmp_path / "cache", unit_size=3, num_workers=1,
                progress=False)
    cs = store.read_clip_split(d / "train")
    assert list(cs.uids) == [g.uid for g in good]
    m = store.read_manifest(d)
    errors = {e["uid"]: e for e in m["errors"]}
    assert set(errors) == {"garbage", "empty", "tiny", "missing"}
    assert errors["missing"]["reason"] == "file not found" and errors["missing"]["file"] == str(tmp_path / "nope.wav")
    assert "too short" in errors["tiny"]["reason"]
    assert errors["garbage"]["file"] == str(garbage)
    assert m["splits"]["train"]["n_ok"] == 3 and len(m["splits"]["train"]["errors"]) == 4


def test_interrupt_resumes_and_corrupt_unit_is_redone(tmp_path):
    items = gtzan_items(tmp_path, n=7)
    card, enc = builtin("gtzan"), ToyEncoder()
    args = dict(unit_size=2, batch_size=2, progress=False)
    clean = extract(card, enc, {"train": items}, tmp_path / "clean", **args)

    def stop_after_two(split, k):
        if k == 1:
            raise KeyboardInterrupt  # Ctrl-C right after unit 1 was committed

    with pytest.raises(KeyboardInterrupt):
        extract(card, enc, {"train": items}, tmp_path / "cache", on_unit=stop_after_two, **args)
    d = tmp_path / "cache" / "plugins__toy-encoder" / "gtzan"
    assert store.read_manifest(d)["splits"]["train"]["status"] == "pending"
    assert sorted(p.name for p in (d / "train" / "units").iterdir()) == ["00000.json", "00000.npz", "00001.json", "00001.npz"]
    unit0 = d / "train" / "units" / "00000.npz"
    unit0.write_bytes(unit0.read_bytes()[:-50])  # truncated unit: detected by its checksum
    extract(card, enc, {"train": items}, tmp_path / "cache", **args)
    computed = [e["unit"] for e in _log(d)]
    assert computed == [0, 1, 0, 2, 3]  # unit 1 kept, unit 0 redone, 2 and 3 new
    a, b = store.read_clip_split(clean / "train"), store.read_clip_split(d / "train")
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.uids, b.uids)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_parse_states():
    assert parse_states("12,0,6,6", 13) == [0, 6, 12] and parse_states("all", 13) is None and parse_states(None, 3) is None
    with pytest.raises(ValueError, match="0..12"):
        parse_states("13", 13)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_states("a,b", 13)
