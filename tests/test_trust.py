"""Trust and safety (issue 11): no result that lies, no file touched outside its place, no code run from
data, no stale cache used as if fine, bad input refused with an `error:` line, and processes that clean
up after themselves. One test (or a parametrised family) per fault found."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from extract_helpers import builtin, card_variant, write_wav  # noqa: E402
from extract_plugin import ToyEncoder  # noqa: E402

from marble.audio import AudioError, load  # noqa: E402
from marble.cache import store  # noqa: E402
from marble.io import file_sha256  # noqa: E402
from marble.cache.extract import EncoderContractError, extract  # noqa: E402
from marble.cli import app  # noqa: E402
from marble.datasets.base import Item  # noqa: E402
from marble.registry import CardError, get_card, load_card  # noqa: E402
from marble.results import ResultError, read_result, result_path, write_result  # noqa: E402
from marble.results.submission import check_file  # noqa: E402
from marble.testing.fixtures import write_folder_dataset  # noqa: E402
from tests.test_results import make_result  # noqa: E402

HERE = Path(__file__).parent
PLUGIN = str(HERE / "extract_plugin.py") + ":ToyEncoder"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}


def _marble(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marble", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV, **kw)


def _one_error_line(r: subprocess.CompletedProcess, *expected: str) -> str:
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "Traceback" not in out, out
    flat = " ".join(out.split())
    assert "error:" in flat, out
    for e in expected:
        assert e in flat, out
    return flat


def incompleteness(result, card):
    from marble.results.accounting import incompleteness

    return incompleteness(result, card)


def _format_error():
    from marble.datasets.base import DataFormatError

    return DataFormatError


def _gtzan_items(root: Path, n: int, seconds: float = 1.5, start: int = 0) -> list[Item]:
    genres = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
    out = []
    for i in range(start, start + n):
        g = genres[i % 10]
        p = write_wav(root / g / f"{g}.{i:05d}.wav", seconds + 0.05 * i, sr=8000, seed=i)
        out.append(Item(uid=f"{g}/{g}.{i:05d}.wav", path=p, label=i % 10))
    return out


def _probe(card, cache, results, **kw):
    from marble.probe.clip import run_clip

    return run_clip(card, "plugins/toy-encoder", cache_root=cache, results_dir=results, max_epochs=2,
                    lrs=(1e-3,), layers=(1, "weighted"), **kw)


# ---------------------------------------------------------------------------------------------------
# Results that lie


def test_unreadable_test_files_make_the_result_incomplete_and_the_submission_check_refuses_it(tmp_path):
    card = builtin("gtzan")
    train, valid, test = (_gtzan_items(tmp_path / "a", 4), _gtzan_items(tmp_path / "b", 3, start=4),
                          _gtzan_items(tmp_path / "c", 3, start=7))
    for it in test[1:]:  # 2 of 3 test clips unreadable
        it.path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    cache = extract(card, ToyEncoder(), {"train": train, "valid": valid, "test": test}, tmp_path / "cache",
                    progress=False, listed={"test": {"n_listed": 3, "missing": []}})
    m = store.read_manifest(cache)
    # split checksums are written by extract itself (not only by a test helper), once: beside each split's status
    assert set(m["splits"]) == {"train", "valid", "test"} and "split_checksums" not in m
    assert all(len(v["items_sha256"]) == 64 for v in m["splits"].values())
    r = _probe(card, tmp_path / "cache", tmp_path / "res")
    assert r["manifest"]["split_checksums"] == {s: {k: v[k] for k in ("items_sha256", "split_file_sha256")}
                                                for s, v in m["splits"].items()}
    t = r["data"]["splits"]["test"]
    assert (t["listed"], t["cached"], t["scored"], len(t["skipped"])) == (3, 1, 1, 2)
    assert {s["file"] for s in t["skipped"]} == {str(it.path) for it in test[1:]}
    assert r["data"]["splits"]["train"] == {"listed": 4, "cached": 4, "skipped": [], "scored": 4}
    problems = incompleteness(r, card)
    assert len(problems) == 1 and problems[0].startswith("split test: 2 of 3 files not scored")
    path = result_path(tmp_path / "res", "plugins/toy-encoder", "gtzan", "constrained")
    fc = check_file(path, {"gtzan": card})
    assert fc.valid and not fc.accepted
    assert any("incomplete data: split test: 2 of 3" in d for d in fc.deviations)
    res = CliRunner().invoke(app, ["leaderboard", "check", "--submission", str(path)])
    assert res.exit_code == 2 and "incomplete data" in res.output
    # the leaderboard marks the cell
    from marble.leaderboard import build

    lb = build(tmp_path / "res", reported=False)
    assert lb.rows[0].cells["gtzan"].deviations and not lb.rows[0].complete


def test_clips_shorter_than_the_minimum_window_are_recorded_as_skipped(tmp_path):
    card = card_variant(tmp_path, "gtzan", "gtzan-win", "window_seconds = 5.0\nmin_window_seconds = 1.0")
    items = {"train": _gtzan_items(tmp_path / "a", 3), "valid": _gtzan_items(tmp_path / "b", 2, start=3),
             "test": _gtzan_items(tmp_path / "c", 2, start=5)}
    short = write_wav(tmp_path / "c" / "short.wav", 0.5, sr=8000, seed=9)
    items["test"].append(Item(uid="rock/short.wav", path=short, label=9))
    extract(card, ToyEncoder(), items, tmp_path / "cache", progress=False)
    r = _probe(card, tmp_path / "cache", tmp_path / "res", write=False)
    t = r["data"]["splits"]["test"]
    assert (t["listed"], t["cached"], t["scored"]) == (3, 2, 2)
    assert "too short" in t["skipped"][0]["reason"]
    assert any("1 of 3 files not scored (too short" in p for p in incompleteness(r, card))


def test_card_declared_exclusions_keep_a_result_complete():
    card = get_card("gtzan")
    r = make_result()
    assert incompleteness(r, card) == []
    r["data"]["splits"]["train"]["skipped"] = [{"file": "/d/genres_original/jazz/jazz.00054.wav",
                                               "uid": "jazz/jazz.00054.wav", "reason": "cannot decode"}]
    assert incompleteness(r, card) == []  # excluded by the card, by design
    r["data"]["splits"]["train"]["skipped"].append({"file": "/d/x/blues.00001.wav", "uid": "blues/blues.00001.wav",
                                                   "reason": "cannot decode"})
    assert incompleteness(r, card) == ["split train: 1 of 442 files not scored (cannot decode), e.g. /d/x/blues.00001.wav"]
    del r["data"]
    assert "no per-split file accounting" in incompleteness(r, card)[0]


def test_many_skipped_files_are_grouped_per_reason_and_still_counted():
    """A partial MTG download skips tens of thousands of files: one entry per reason with a count keeps the result
    small, the completeness check still counts every file, and a card-excluded file stays listed on its own."""
    from marble.results import result_bytes
    from marble.results.accounting import GROUP_OVER, compact

    card = get_card("gtzan")
    r = make_result()
    missing = [{"file": f"/d/x/blues.{i:05d}.wav", "reason": "not on disk (extracted with --allow-partial)"}
               for i in range(GROUP_OVER * 40)]
    r["data"]["splits"]["train"]["skipped"] = missing + [
        {"file": "/d/genres_original/jazz/jazz.00054.wav", "uid": "jazz/jazz.00054.wav", "reason": "cannot decode"}]
    before = incompleteness(r, card)
    r["data"] = compact(r["data"], card.splits.excluded)
    entries = r["data"]["splits"]["train"]["skipped"]
    assert len(entries) == 2 and entries[0]["uid"] == "jazz/jazz.00054.wav"
    assert entries[1]["count"] == GROUP_OVER * 40 and entries[1]["examples"][0] == "/d/x/blues.00000.wav"
    assert incompleteness(r, card) == before == [
        f"split train: {GROUP_OVER * 40} of 442 files not scored (not on disk), e.g. /d/x/blues.00000.wav"]
    assert len(result_bytes(r)) < 20_000
    few = make_result()
    few["data"]["splits"]["train"]["skipped"] = missing[:3]
    assert compact(few["data"])["splits"]["train"]["skipped"] == missing[:3]  # a few files stay listed one by one


@pytest.mark.parametrize("edit, field", [
    (lambda r: (r["test"].update(accuracy=1.7), r["sweep"][2]["test"].update(accuracy=1.7)), "test.accuracy"),
    (lambda r: r["sweep"][0]["valid"].update(accuracy=-0.1), "sweep[0].valid.accuracy"),
    (lambda r: r["seeds"].update(ci95=[0.73, 1.02]), "seeds.ci95[1]"),
])
def test_scores_outside_their_metric_range_are_refused(tmp_path, edit, field):
    r = make_result(seeds=True)
    edit(r)
    p = tmp_path / "r.json"
    p.write_text(json.dumps(r))
    with pytest.raises(ResultError, match=rf"field '{field.replace('[', '.').replace(']', '.')}'.*outside the range"):
        read_result(p)
    res = CliRunner().invoke(app, ["leaderboard", "check", str(p)])
    assert res.exit_code == 2 and "outside the range of accuracy" in res.output
    with pytest.raises(ResultError):
        write_result(tmp_path / "w.json", r)


def test_confidence_interval_is_clipped_to_the_metric_range():
    from marble.probe.report import seed_summary

    s = seed_summary([1, 2, 3], [1.0, 1.0, 0.9], "accuracy")
    assert s["ci95"][1] == 1.0 and s["ci95"][0] < s["mean"]
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * np.std([1.0, 1.0, 0.9], ddof=1) / math.sqrt(3)
    assert s["ci95"][0] == pytest.approx(s["mean"] - half)
    sdr = seed_summary([1, 2, 3], [5.0, 6.0, 7.0], "sdr_vocals")  # dB: unbounded
    assert sdr["ci95"][1] == pytest.approx(6.0 + stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))


# ---------------------------------------------------------------------------------------------------
# Stale or broken caches


def _small_cache(tmp_path, card):
    items = {"train": _gtzan_items(tmp_path / "a", 4), "valid": _gtzan_items(tmp_path / "b", 2, start=4),
             "test": _gtzan_items(tmp_path / "c", 2, start=6)}
    return items, extract(card, ToyEncoder(), items, tmp_path / "cache", progress=False)


def test_probe_refuses_a_cache_made_with_another_card_or_checkpoint(tmp_path):
    card = card_variant(tmp_path, "gtzan", "gtzan-edit", "crop_seconds = 30.0")
    items, cache = _small_cache(tmp_path, card)
    _probe(card, tmp_path / "cache", tmp_path / "res", write=False)  # as extracted: fine
    text = card.path.read_text().replace("crop_seconds = 30.0", "crop_seconds = 1.0")
    card.path.write_text(text)
    edited = load_card(card.path)
    with pytest.raises(store.CacheError, match="another version of the task card"):
        _probe(edited, tmp_path / "cache", tmp_path / "res", write=False)
    # a checkpoint folder whose weights changed after extraction
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"new weights")
    m = store.read_manifest(cache)
    m["encoder"].update(weights_file="model.safetensors", weights_sha256="0" * 64)
    with pytest.raises(store.CacheError, match="changed since these features were extracted"):
        store.check_cache_for(cache, m, card_variant(tmp_path, "gtzan", "gtzan-edit", "crop_seconds = 30.0"), str(ckpt))
    m["splits"]["valid"]["status"] = "pending"
    m["encoder"]["weights_sha256"] = file_sha256(ckpt / "model.safetensors")
    with pytest.raises(store.CacheError, match="split 'valid' was not completely extracted"):
        store.check_cache_for(cache, m, load_card(card.path), str(ckpt))


def test_frame_probe_refuses_a_cache_of_an_edited_card(tmp_path):
    from beat_fixtures import write_metronome_gtzan

    from marble.datasets import get_dataset
    from marble.encoders import load_encoder
    from marble.probe.sequence import run

    write_metronome_gtzan(tmp_path, seconds=4.0)
    card = card_variant(tmp_path, "gtzan-beat", "beat-edit", "crop_seconds = 30.0")
    items = {s: get_dataset(card, tmp_path, allow_partial=True).items(s) for s in ("train", "valid", "test")}
    enc = load_encoder("handcrafted")
    extract(card, enc, {"valid": items["valid"]}, tmp_path / "cache", progress=False)
    card.path.write_text(card.path.read_text().replace("crop_seconds = 30.0", "crop_seconds = 3.0"))
    with pytest.raises(store.CacheError, match="another version of the task card"):
        run(load_card(card.path), "handcrafted", cache_dir=tmp_path / "cache", items=items, results_dir=None,
            encoder=enc, layers=[0], lrs=[1e-3], max_epochs=1)


def test_extract_verifies_a_complete_cache_and_redoes_damaged_splits(tmp_path):
    card = builtin("gtzan")
    items, cache = _small_cache(tmp_path, card)
    before = {s: np.array(store.read_clip_split(cache / s).features) for s in ("train", "valid")}
    f = cache / "train" / store.FEATURES
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated features.npy
    import shutil

    shutil.rmtree(cache / "valid")  # a deleted split folder
    extract(card, ToyEncoder(), items, tmp_path / "cache", progress=False)
    for s in ("train", "valid"):
        np.testing.assert_array_equal(store.read_clip_split(cache / s).features, before[s])
    assert store.read_manifest(cache)["splits"]["valid"]["status"] == "complete"


# ---------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_truncated_audio_is_refused_not_cached_short(tmp_path, fmt):
    import soundfile as sf

    x = (0.3 * np.sin(np.arange(16000 * 3) / 7)).astype(np.float32)
    p = tmp_path / f"full.{fmt}"
    sf.write(str(p), x, 16000)
    assert len(load(p)) >= 16000 * 3 - 2304
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(AudioError, match="truncated"):
        load(cut)
    card = builtin("gtzan")
    items = {"train": _gtzan_items(tmp_path / "a", 2), "valid": _gtzan_items(tmp_path / "b", 1, start=2),
             "test": _gtzan_items(tmp_path / "c", 1, start=3) + [Item(uid="rock/cut", path=cut, label=9)]}
    cache = extract(card, ToyEncoder(), items, tmp_path / "cache", progress=False)
    errs = store.read_manifest(cache)["splits"]["test"]["errors"]
    assert [e["uid"] for e in errs] == ["rock/cut"] and "truncated" in errs[0]["reason"]


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for b in page:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def _overstate_ogg_length(path, extra: int) -> None:
    """Add ``extra`` to the granule position of the file's last Ogg page (CRC recomputed): the frame count
    libsndfile reports then runs past what decodes, as in some complete real-world files."""
    import struct

    data = bytearray(path.read_bytes())
    last = data.rfind(b"OggS")
    nseg = data[last + 26]
    end = last + 27 + nseg + sum(data[last + 27:last + 27 + nseg])
    granule = struct.unpack_from("<q", data, last + 6)[0]
    struct.pack_into("<q", data, last + 6, granule + extra)
    struct.pack_into("<I", data, last + 22, 0)
    struct.pack_into("<I", data, last + 22, _ogg_crc(bytes(data[last:end])))
    path.write_bytes(bytes(data))


def test_ogg_whose_header_overstates_its_length_is_read_not_refused(tmp_path):
    """A complete Ogg file may declare a little more than decodes (Debian's wesnoth northerners.ogg: 0.13 s).
    It and a crop ending at its end are read; a declared length far past the audio is still refused."""
    import soundfile as sf

    sr = 44100
    x = (0.3 * np.sin(np.arange(sr * 10) / 7)).astype(np.float32)
    p = tmp_path / "song.ogg"
    sf.write(str(p), x, sr, format="OGG", subtype="VORBIS")
    real = sf.info(str(p)).frames
    _overstate_ogg_length(p, 5806)
    assert sf.info(str(p)).frames == real + 5806  # the fixture does what it claims
    assert real <= len(load(p)) < real + 5806  # read whole (the last packet is no longer trimmed), not refused
    declared = real + 5806
    assert 0 < len(load(p, offset=(declared - 2 * sr) / sr, duration=2.0)) < 2 * sr  # a crop to the declared end
    _overstate_ogg_length(p, sr * 2)  # 2 s more than decodes, 20 % of the file
    with pytest.raises(AudioError, match="truncated"):
        load(p)


def test_the_same_file_twice_is_refused(tmp_path):
    card = builtin("gtzan")
    a = _gtzan_items(tmp_path / "a", 3)
    with pytest.raises(_format_error(), match="in splits 'train' and 'test'"):
        extract(card, ToyEncoder(), {"train": a[:2], "valid": [a[2]], "test": [dataclasses.replace(a[0], uid="x")]},
                tmp_path / "cache", progress=False)
    with pytest.raises(_format_error(), match="appears twice in split 'train'"):
        extract(card, ToyEncoder(), {"train": a[:2] + [a[0]], "valid": [a[2]]}, tmp_path / "cache", progress=False)
    with pytest.raises(_format_error(), match="twice in split 'train'"):
        extract(card, ToyEncoder(), {"train": a[:2] + [dataclasses.replace(a[0], uid="copy")]}, tmp_path / "cache",
                progress=False)
    assert not (tmp_path / "cache").exists()  # refused before anything was written


@pytest.mark.parametrize("training, key", [
    ("learning_rates = [1e-3, -1e-4]", "training.learning_rates[1]"),
    ("learning_rates = [nan]", "training.learning_rates[0]"),
    ("learning_rates = [inf]", "training.learning_rates[0]"),
    ("max_epochs = -1", "training.max_epochs"),
    ("max_epochs = 0", "training.max_epochs"),
    ("early_stop_patience = -2", "training.early_stop_patience"),
])
def test_impossible_training_settings_are_refused_when_the_card_loads(tmp_path, training, key):
    from tests.test_registry import MINIMAL

    p = tmp_path / "bad.toml"
    p.write_text(MINIMAL.format(id="bad") + f"\n[training]\n{training}\n")
    with pytest.raises(CardError, match=rf"{p}: key '{key.replace('[', '.').replace(']', '.')}'"):
        load_card(p)


def test_a_negative_epoch_cap_on_the_command_line_is_refused():
    from marble.probe.config import ConfigError, card_plan

    with pytest.raises(ConfigError, match="--max-epochs -1: must be at least 1"):
        card_plan(get_card("gtzan"), max_epochs=-1)


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace(",valid\n", "\n", 1), "row 4: missing field"),
    (lambda t: t.replace(",valid\n", ",valid,extra\n", 1), "malformed table"),
    (lambda t: t.replace("audio/test_000.wav", "audio/t\xe9st.wav"), "not UTF-8"),
    (lambda t: t.replace('"low",test', '"zebra",test', 1), "label 'zebra' is not in the vocabulary"),
])
def test_malformed_metadata_gives_an_error_line_in_extract(tmp_path, edit, expected):
    card = write_folder_dataset(tmp_path / "data", per_split=2)
    meta = tmp_path / "data" / "mydata" / "metadata.csv"
    data = edit(meta.read_text())
    meta.write_bytes(data.encode("latin-1") if "not UTF-8" in expected else data.encode())
    r = _marble("extract", "--model", PLUGIN, "--task", card, "--data-dir", tmp_path / "data", "--cache-dir",
                tmp_path / "cache", "--device", "cpu", "--num-workers", "0", "-q")
    _one_error_line(r, str(meta), expected)


class _Broken(ToyEncoder):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def hidden_states(self, wav, upto=None):
        hs = super().hidden_states(wav, upto)
        if self.mode == "nan":
            hs[:, 2, 3] = float("nan")
        elif self.mode == "inf":
            hs[:, 1, 0, 0] = float("inf")
        else:  # clip means of state 0 beyond fp16 (|x| > 65504)
            hs = torch.cat([hs[:, :1] * 1e6, hs[:, 1:]], dim=1)
        return hs


@pytest.mark.parametrize("mode, layer, what", [("nan", 2, "NaN or inf"), ("inf", 1, "NaN or inf"),
                                               ("big", 0, "beyond the fp16 cache range")])
def test_non_finite_features_are_refused_naming_layer_and_file(tmp_path, mode, layer, what):
    card = builtin("gtzan")
    items = {"train": _gtzan_items(tmp_path / "a", 2)}
    with pytest.raises(EncoderContractError, match=f"{what}.*hidden state {layer}") as ei:
        extract(card, _Broken(mode), items, tmp_path / "cache", progress=False, splits=["train"])
    assert str(items["train"][0].path) in str(ei.value)
    assert not (tmp_path / "cache" / "plugins__toy-encoder" / "gtzan" / "train" / store.FEATURES).exists()


# ---------------------------------------------------------------------------------------------------
# Files outside their place


def test_task_ids_that_are_paths_never_reach_the_filesystem(tmp_path):
    from tests.test_registry import MINIMAL

    for bad in ("../outside", "/abs/path", ".."):
        p = tmp_path / "bad.toml"
        p.write_text(MINIMAL.format(id=bad))
        with pytest.raises(CardError, match="key 'id'"):
            load_card(p)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    card = dataclasses.replace(builtin("gtzan"), id="../../victim")  # a card object that skipped validation
    with pytest.raises(store.CacheError, match="not a folder name"):
        extract(card, ToyEncoder(), {"train": _gtzan_items(tmp_path / "a", 2)}, tmp_path / "cache" / "x",
                progress=False, splits=["train"])
    assert (victim / "precious.txt").read_text() == "keep me"
    # an existing folder that is not a cache is never deleted by --overwrite
    d = store.cache_dir(tmp_path / "c2", "plugins/toy-encoder", "gtzan")
    d.mkdir(parents=True)
    (d / "thesis.tex").write_text("keep me")
    (d / store.MANIFEST).write_text(json.dumps({"format": 0, "splits": {}}))
    with pytest.raises(store.CacheError, match="refusing to delete"):
        extract(builtin("gtzan"), ToyEncoder(), {"train": _gtzan_items(tmp_path / "a", 2)}, tmp_path / "c2",
                progress=False, splits=["train"], overwrite=True)
    assert (d / "thesis.tex").read_text() == "keep me"


def test_metadata_path_linking_out_of_the_dataset_folder_names_the_link(tmp_path):
    """A relative path that is a symbolic link out of the folder is refused, and the message says it is a
    link (the path itself looks fine) and how to fix it; a link inside the folder is read."""
    from marble.datasets import get_dataset

    card_path = write_folder_dataset(tmp_path / "data", per_split=2)
    audio = tmp_path / "data" / "mydata" / "audio"
    outside = tmp_path / "elsewhere.wav"
    (audio / "train_000.wav").rename(outside)
    (audio / "train_000.wav").symlink_to(outside)
    with pytest.raises(_format_error(), match="'audio/train_000.wav' is a link to .*elsewhere.wav, outside the "
                                              "dataset folder .*copy \\(or hard-link\\) the file in"):
        get_dataset(load_card(card_path), tmp_path / "data").items("train")
    (audio / "train_000.wav").unlink()
    (audio / "real.wav").write_bytes(outside.read_bytes())
    (audio / "train_000.wav").symlink_to(audio / "real.wav")
    assert len(get_dataset(load_card(card_path), tmp_path / "data").items("train")) == 2


@pytest.mark.parametrize("rel", ["../outside.wav", "/etc/hostname", "audio/../../outside.wav",
                                 "audio\\..\\..\\outside.wav", "C:\\outside.wav"])
def test_metadata_paths_may_not_leave_the_dataset_folder(tmp_path, rel):
    """One lexical rule (marble.paths.relative_inside) for metadata rows, card paths, archive members: backslashes
    are separators and a drive is refused, in a metadata table as in an archive."""
    from marble.datasets import get_dataset

    card_path = write_folder_dataset(tmp_path / "data", per_split=2)
    meta = tmp_path / "data" / "mydata" / "metadata.csv"
    meta.write_text(meta.read_text().replace("audio/train_000.wav", rel))
    with pytest.raises(_format_error(), match="points outside the dataset folder"):
        get_dataset(load_card(card_path), tmp_path / "data").items("train")
    for card_key in ('subdir = "../x"', 'subdir = "/abs"', 'subdir = "C:/x"', 'subdir = "x\\\\..\\\\.."'):
        text = card_path.read_text().replace('subdir = "mydata"', card_key)
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(CardError, match="key 'source.subdir'"):
            load_card(bad)
    ok = tmp_path / "ok.toml"  # the data folder itself stays a valid subdir
    ok.write_text(card_path.read_text().replace('subdir = "mydata"', 'subdir = "."'))
    assert load_card(ok).source.subdir == "."


# ---------------------------------------------------------------------------------------------------
# Code run from data


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_probe_state_file_with_a_pickle_payload_is_refused(tmp_path):
    from marble.probe.sweep import StateFileError, load_state

    marker = tmp_path / "ran"
    state = tmp_path / "constrained.state.pt"
    torch.save({"epoch": 1, "evil": _Payload(str(marker))}, state)
    with pytest.raises(StateFileError, match="--fresh"):
        load_state(state)
    assert not marker.exists()
    # through the probe: the saved state beside the result is refused with the fix named
    card = builtin("gtzan")
    _small_cache(tmp_path, card)
    out = result_path(tmp_path / "res", "plugins/toy-encoder", "gtzan", "constrained")
    out.parent.mkdir(parents=True)
    torch.save({"evil": _Payload(str(marker))}, out.with_name("constrained.state.pt"))
    with pytest.raises(StateFileError, match="--fresh"):
        _probe(card, tmp_path / "cache", tmp_path / "res")
    assert not marker.exists()
    r = _probe(card, tmp_path / "cache", tmp_path / "res", fresh=True)  # --fresh gets past it
    assert r["selected"]["layer"] in (1, "weighted")


def test_pretraining_checkpoint_loads_weights_only(tmp_path):
    from marble.pretrain.config import get_preset
    from marble.pretrain.trainer import (CHECKPOINT, PretrainError, TrainConfig, build_optimizer, load_checkpoint,
                                         save_checkpoint)

    model = torch.nn.Linear(4, 2)
    cfg = TrainConfig(audio_dir=str(tmp_path), out_dir=str(tmp_path))
    preset = get_preset("95m")
    opt, sched = build_optimizer(model, cfg, preset)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    save_checkpoint(tmp_path / CHECKPOINT, model=model, optimizer=opt, scheduler=sched, step=1, preset=preset,
                    cfg=cfg, teacher={"name": "x"})
    state = load_checkpoint(tmp_path)  # a real checkpoint loads with weights_only=True
    assert state["step"] == 1 and torch.equal(state["model"]["weight"], model.weight.detach())
    marker = tmp_path / "ran"
    torch.save({"format": state["format"], "evil": _Payload(str(marker))}, tmp_path / CHECKPOINT)
    with pytest.raises(PretrainError, match="cannot read the checkpoint"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# Process hygiene


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_decode_workers_die_with_a_killed_extract(tmp_path):
    items = _gtzan_items(tmp_path / "a", 12)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from extract_plugin import ToyEncoder
        from extract_helpers import builtin
        from marble.datasets.base import Item
        from marble.cache.extract import extract
        items = [Item(uid=p.parent.name + "/" + p.name, path=p, label=i % 10)
                 for i, p in enumerate(sorted(Path({str(tmp_path / 'a')!r}).rglob('*.wav')))]
        extract(builtin("gtzan"), ToyEncoder(delay=5.0), {{"train": items}}, {str(tmp_path / 'cache')!r},
                splits=["train"], num_workers=2, batch_size=1, unit_size=2, progress=False)
    """))
    p = subprocess.Popen([sys.executable, str(script)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(_children(p.pid)) < 2:
            time.sleep(0.2)
        workers = _children(p.pid)
        assert len(workers) >= 2, "the decode workers never started"
        time.sleep(1.0)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "decode workers outlived their extract"
    finally:
        if p.poll() is None:
            p.kill()


def test_two_extracts_of_a_fresh_cache_do_not_collide(tmp_path):
    card = write_folder_dataset(tmp_path / "data", per_split=3)
    args = ["extract", "--model", PLUGIN, "--task", card, "--data-dir", tmp_path / "data", "--cache-dir",
            tmp_path / "cache", "--device", "cpu", "--num-workers", "0", "-q", "--unit-size", "1"]
    procs = [subprocess.Popen([sys.executable, "-m", "marble", *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
        assert "Traceback" not in err, err
    d = Path(outs[0][0].strip().splitlines()[-1])
    m = store.read_manifest(d)
    assert all(m["splits"][s]["status"] == "complete" for s in ("train", "valid", "test"))
    assert len(store.read_clip_split(d / "test")) == 3


def test_disk_full_during_probe_is_an_error_line(tmp_path):
    import resource

    card = builtin("gtzan")
    _small_cache(tmp_path, card)

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    r = _marble("probe", "--model", "plugins/toy-encoder", "--task", "gtzan", "--cache-dir", tmp_path / "cache",
                "--results-dir", tmp_path / "res", "--max-epochs", "2", "--checkpoint-every", "1", "--lrs", "1e-3",
                "--layers", "1,weighted", preexec_fn=small_files)
    _one_error_line(r, "constrained.state.pt: cannot write (File too large)", "free disk space")
    assert "enforce fail" not in r.stderr


class _RaisingEncoder(ToyEncoder):
    def hidden_states(self, wav, upto=None):
        raise RuntimeError("kaboom in my model")


def test_a_plugin_whose_hidden_states_raises_gives_an_error_line(tmp_path):
    plugin = tmp_path / "bad_plugin.py"
    plugin.write_text("from extract_plugin import ToyEncoder\n\n"
                      "class Bad(ToyEncoder):\n    def hidden_states(self, wav, upto=None):\n"
                      "        raise RuntimeError('kaboom in my model')\n")
    card = write_folder_dataset(tmp_path / "data", per_split=1)
    r = _marble("extract", "--model", f"{plugin}:Bad", "--task", card, "--data-dir", tmp_path / "data",
                "--cache-dir", tmp_path / "cache", "--device", "cpu", "--num-workers", "0", "-q")
    _one_error_line(r, "hidden_states raised RuntimeError: kaboom in my model", "fix the encoder")


def test_a_plugin_class_without_its_own_init_can_be_constructed(tmp_path):
    from marble.encoders import load_encoder

    plugin = tmp_path / "noinit.py"
    plugin.write_text(textwrap.dedent("""
        import torch
        from marble.encoders.base import Encoder

        class NoInit(Encoder):
            name = "no-init"
            sample_rate, frame_rate, num_states, dim = 8000, 100.0, 2, 3

            def num_frames(self, n):
                return n // 80

            def hidden_states(self, wav, upto=None):
                t = wav.shape[1] // 80
                x = wav[:, : t * 80].reshape(wav.shape[0], t, 80)[..., :3]
                return torch.stack([x, 2 * x], dim=1)
    """))
    enc = load_encoder(f"{plugin}:NoInit")
    assert enc.name == "no-init" and enc.hidden_states(torch.ones(2, 800)).shape == (2, 2, 10, 3)
