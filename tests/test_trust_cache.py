"""Trust, round 3 (issue 22), feature caches: a cache whose files were changed after extraction is neither kept
by ``extract`` nor scored by ``probe`` (content hashes per split file, clip and frame caches), ``--no-verify`` is
recorded and refused as a submission, and damaged or unwritable caches give an ``error:`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from marble.cache import store
from marble.io import file_sha256, write_json
from marble.results import read_result
from marble.testing.fixtures import write_folder_dataset, write_gtzan_beat
from tests.test_trust import _one_error_line

HERE = Path(__file__).parent
PLUGIN = str(HERE / "extract_plugin.py") + ":ToyEncoder"
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}


def _marble(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marble", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=ENV, **kw)


def _ok(r) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _tamper(path: Path, seed: int = 0) -> None:
    """Overwrite an array file with random finite values of the same shape and dtype (the same size)."""
    a = np.load(path)
    size = path.stat().st_size
    np.save(path.open("wb"), np.random.default_rng(seed).standard_normal(a.shape).astype(a.dtype))
    assert path.stat().st_size == size


@pytest.fixture()
def clip_task(tmp_path):
    card = write_folder_dataset(tmp_path / "data", per_split=3)
    common = ["--model", PLUGIN, "--task", card, "--cache-dir", tmp_path / "cache", "--device", "cpu"]
    _ok(_marble("extract", *common, "--data-dir", tmp_path / "data", "--num-workers", "0", "-q"))
    cache = next((tmp_path / "cache").glob("*/my-multiclass"))
    return {"card": card, "common": common, "cache": cache, "data": tmp_path / "data"}


def test_a_tampered_clip_cache_is_re_extracted_and_never_probed(clip_task, tmp_path):
    """Issue 22 item 4: test/features.npy overwritten with random finite values of the same size was kept by
    `extract`, scored by `probe`, and the result passed `leaderboard check --submission`."""
    cache, common = clip_task["cache"], clip_task["common"]
    info = store.read_manifest(cache)["splits"]["test"]
    feats = cache / "test" / store.FEATURES
    assert info["content_sha256"][store.FEATURES] == file_sha256(feats)  # recorded at extraction
    assert set(info["content_sha256"]) == {store.FEATURES, store.INDEX, store.LABELS}
    original = np.load(feats)

    _tamper(feats)
    r = _ok(_marble("extract", *common, "--data-dir", clip_task["data"], "--num-workers", "0", "-q"))
    assert "cached split is damaged" in r.stderr and "content sha256" in r.stderr, r.stderr
    np.testing.assert_array_equal(np.load(feats), original)  # extracted again, not kept

    _tamper(feats)
    probe = ["probe", *common, "--results-dir", tmp_path / "res", "--max-epochs", "1", "--lrs", "1e-3"]
    _one_error_line(_marble(*probe), str(cache / "test"), "content sha256", "differs from the",
                    "recorded at extraction", "--no-verify")
    assert not list((tmp_path / "res").rglob("*.json"))

    _ok(_marble(*probe, "--no-verify"))  # the escape hatch, recorded
    result = next((tmp_path / "res").rglob("constrained.json"))
    assert read_result(result, tasks_dir=clip_task["card"].parent)["manifest"]["cache_verified"] is False
    r = _marble("leaderboard", "check", "--submission", "--tasks-dir", clip_task["card"].parent, result)
    assert r.returncode == 2 and "cache not verified: probed with --no-verify" in r.stderr, r.stdout + r.stderr

    _ok(_marble("extract", *common, "--data-dir", clip_task["data"], "--num-workers", "0", "-q"))
    _ok(_marble(*probe))
    assert read_result(result, tasks_dir=clip_task["card"].parent)["manifest"]["cache_verified"] is True


def test_a_tampered_frame_cache_is_re_extracted_and_never_probed(tmp_path):
    """Frame tasks read one file per track: each is hashed while written and checked before the probe uses it."""
    write_gtzan_beat(tmp_path / "data", per_split=2)
    common = ["--model", "handcrafted", "--task", "gtzan-beat", "--cache-dir", tmp_path / "cache", "--device", "cpu"]
    extract = ["extract", *common, "--data-dir", tmp_path / "data", "--allow-partial", "--num-workers", "0", "-q"]
    _ok(_marble(*extract))
    cache = tmp_path / "cache" / "handcrafted" / "gtzan-beat"
    recorded = store.read_manifest(cache)["splits"]["test"]["content_sha256"]
    frames = sorted((cache / "test" / "frames").glob("*.npy"))
    assert len(frames) == 2 and set(recorded) == {store.INDEX, *(f"frames/{p.name}" for p in frames)}
    original = np.load(frames[0])

    _tamper(frames[0])
    r = _ok(_marble(*extract))
    assert "cached split is damaged" in r.stderr, r.stderr
    np.testing.assert_array_equal(np.load(frames[0]), original)

    _tamper(frames[0])
    probe = ["probe", *common, "--data-dir", tmp_path / "data", "--results-dir", tmp_path / "res", "--max-epochs",
             "1", "--layers", "0", "--lrs", "1e-3"]
    _one_error_line(_marble(*probe), str(frames[0]), "differs from the", "--no-verify")
    planted = cache / "valid" / "frames" / "planted.npy"  # a frame file extraction never wrote
    _ok(_marble(*extract))
    np.save(planted, np.zeros((3, 2, 2), np.float16))
    _one_error_line(_marble(*probe), str(planted), "has no recorded content hash")
    planted.unlink()
    _ok(_marble(*probe))
    r = read_result(tmp_path / "res" / "handcrafted" / "gtzan-beat" / "constrained.json")
    assert r["manifest"]["cache_verified"] is True


def test_a_cache_of_an_older_marble_gets_its_hashes_recorded_by_extract(clip_task):
    """A finished split without recorded hashes (an older marble) is refused by `probe` until `extract` records
    them (without re-extracting)."""
    cache, common = clip_task["cache"], clip_task["common"]
    m = store.read_manifest(cache)
    recorded = {s: m["splits"][s].pop("content_sha256") for s in ("train", "valid", "test")}
    write_json(cache / store.MANIFEST, m)
    _one_error_line(_marble("probe", *common, "--max-epochs", "1", "--lrs", "1e-3", "--results-dir",
                            cache.parent / "res"), "no content hashes recorded", "rerun `marble extract")
    mtime = (cache / "test" / store.FEATURES).stat().st_mtime_ns
    r = _ok(_marble("extract", *common, "--data-dir", clip_task["data"], "--num-workers", "0", "-q"))
    assert "recorded the content hashes" in r.stderr
    assert {s: store.read_manifest(cache)["splits"][s]["content_sha256"] for s in recorded} == recorded
    assert (cache / "test" / store.FEATURES).stat().st_mtime_ns == mtime  # not re-extracted


def test_probe_on_a_truncated_features_file_is_an_error_line(clip_task, tmp_path):
    """Issue 22 partial: `probe` on a truncated features.npy raised numpy's 'mmap length is greater than file
    size' traceback (with or without verification)."""
    feats = clip_task["cache"] / "test" / store.FEATURES
    feats.write_bytes(feats.read_bytes()[:-100])
    for extra in ([], ["--no-verify"]):
        r = _marble("probe", *clip_task["common"], "--results-dir", tmp_path / "res", "--max-epochs", "1",
                    "--lrs", "1e-3", *extra)
        _one_error_line(r, str(clip_task["cache"] / "test"), "rerun `marble extract")


def test_extract_refuses_a_split_folder_that_links_out_of_the_cache(clip_task, tmp_path):
    """Issue 22 partial: `extract` wrote through a split folder that is a symlink out of the cache."""
    cache, common = clip_task["cache"], clip_task["common"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    import shutil

    shutil.rmtree(cache / "valid")
    (cache / "valid").symlink_to(outside, target_is_directory=True)
    r = _marble("extract", *common, "--data-dir", clip_task["data"], "--num-workers", "0", "-q")
    _one_error_line(r, str(cache / "valid"), "link", "outside the cache")
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]


def _read_only(paths, on: bool = True) -> None:
    """Make files and folders unwritable: ``chmod a-w``, or for root (who writes regardless) the immutable
    attribute (``chattr +i``: EPERM for root too)."""
    import stat

    for p in paths:
        if os.geteuid() == 0:
            r = subprocess.run(["chattr", "+i" if on else "-i", str(p)], capture_output=True, text=True)
            if r.returncode != 0 and on:
                pytest.skip(f"chattr +i unsupported here ({r.stderr.strip()})")
        else:
            p.chmod(p.stat().st_mode & ~0o222 if on else p.stat().st_mode | stat.S_IWUSR)


def test_extract_into_a_read_only_cache(tmp_path):
    """Issue 22 partial: `extract` with a read-only cache folder crashed on its lock file even when the cache was
    complete. A complete cache is reported as such and nothing is written; an incomplete one is an error line."""
    card = write_folder_dataset(tmp_path / "data", per_split=2)
    common = ["extract", "--model", PLUGIN, "--task", card, "--cache-dir", tmp_path / "cache", "--device", "cpu",
              "--data-dir", tmp_path / "data", "--num-workers", "0", "-q"]
    _ok(_marble(*common))
    cache = next((tmp_path / "cache").glob("*/my-multiclass"))
    tree = sorted((tmp_path / "cache").rglob("*"), key=lambda p: -len(p.parts))
    try:
        _read_only(tree)
        r = _ok(_marble(*common))
        assert "the cache is complete and verified" in r.stderr and "nothing needs writing" in r.stderr, r.stderr
    finally:
        _read_only(tree, on=False)
    m = store.read_manifest(cache)
    m["splits"]["test"]["status"] = "pending"  # now there is work to do
    write_json(cache / store.MANIFEST, m)
    tree = sorted((tmp_path / "cache").rglob("*"), key=lambda p: -len(p.parts))
    try:
        _read_only(tree)
        _one_error_line(_marble(*common), "cannot write to the cache folder", "choose another --cache-dir")
    finally:
        _read_only(tree, on=False)
