"""A byte-identical copy of a file listed in another split under another name is refused before anything is
extracted (issue 22, partial), naming both files; the check reads only what it must."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from extract_helpers import builtin, write_wav  # noqa: E402
from extract_plugin import ToyEncoder  # noqa: E402

from marble.cache import duplicates  # noqa: E402
from marble.cache.extract import extract  # noqa: E402
from marble.datasets.base import DataFormatError, Item  # noqa: E402


def _items(root: Path, n: int, start: int = 0) -> list[Item]:
    genres = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
    out = []
    for i in range(start, start + n):
        g = genres[i % 10]
        p = write_wav(root / g / f"{g}.{i:05d}.wav", 1.5, sr=8000, seed=i)  # equal sizes: the check must look inside
        out.append(Item(uid=f"{g}/{g}.{i:05d}.wav", path=p, label=i % 10))
    return out


def test_a_copy_of_a_train_file_in_test_is_refused_before_any_work(tmp_path):
    """Before: extracted and scored (the probe is tested on a file it was trained on)."""
    card = builtin("gtzan")
    train, valid = _items(tmp_path / "a", 3), _items(tmp_path / "b", 2, start=3)
    copy = tmp_path / "c" / "rock" / "rock.00099.wav"
    copy.parent.mkdir(parents=True)
    shutil.copy(train[1].path, copy)
    test = _items(tmp_path / "c", 2, start=5) + [Item(uid="rock/rock.00099.wav", path=copy, label=9)]
    with pytest.raises(DataFormatError) as e:
        extract(card, ToyEncoder(), {"train": train, "valid": valid, "test": test}, tmp_path / "cache", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{copy}: byte-identical to {train[1].path}, which split 'train' lists")
    assert "'classical/classical.00001.wav' in 'train'" in msg and "'rock/rock.00099.wav' in 'test'" in msg
    assert not (tmp_path / "cache").exists()  # refused before anything was written
    os.link(train[2].path, tmp_path / "c" / "hard.wav")  # a hard link is the same bytes
    test = _items(tmp_path / "c", 2, start=5) + [Item(uid="rock/hard.wav", path=tmp_path / "c" / "hard.wav", label=9)]
    with pytest.raises(DataFormatError, match="byte-identical"):
        extract(card, ToyEncoder(), {"train": train, "valid": valid, "test": test}, tmp_path / "cache", progress=False)


def test_same_size_same_ends_different_middle_is_not_a_copy(tmp_path, monkeypatch):
    """Files of one size whose first and last 4 KiB agree are hashed in full before anything is refused; files that
    part earlier are never read further (the I/O bound: 4 KiB per file of a shared size)."""
    sr, n = 8000, 8000 * 3
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(n)).astype(np.float32)
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(str(a), x, sr, subtype="PCM_16")
    y = x.copy()
    y[n // 2] += 0.25  # one sample in the middle
    sf.write(str(b), y, sr, subtype="PCM_16")
    assert a.stat().st_size == b.stat().st_size and a.read_bytes()[:4096] == b.read_bytes()[:4096]
    calls = {"read": 0, "sha256": 0}
    real_read, real_sha = duplicates._read, duplicates.file_sha256
    monkeypatch.setattr(duplicates, "_read", lambda p, w: calls.__setitem__("read", calls["read"] + 1) or real_read(p, w))
    monkeypatch.setattr(duplicates, "file_sha256",
                        lambda p: calls.__setitem__("sha256", calls["sha256"] + 1) or real_sha(p))
    items = {"train": [Item(uid="a", path=a, label=0)], "test": [Item(uid="b", path=b, label=0)]}
    assert duplicates.refuse_identical_files(items) == 2  # not refused
    assert calls == {"read": 4, "sha256": 2}
    # distinct recordings of one size part at the first 4 KiB: nothing more is read
    c = write_wav(tmp_path / "c.wav", 3.0, sr=8000, seed=1, channels=1)
    d = write_wav(tmp_path / "d.wav", 3.0, sr=8000, seed=2, channels=1)
    calls.update(read=0, sha256=0)
    duplicates.refuse_identical_files({"train": [Item(uid="c", path=c, label=0)], "test": [Item(uid="d", path=d, label=0)]})
    assert calls == {"read": 2, "sha256": 0}
    # different sizes: not even opened
    e = write_wav(tmp_path / "e.wav", 2.0, sr=8000, seed=1, channels=1)
    calls.update(read=0, sha256=0)
    assert duplicates.refuse_identical_files({"train": [Item(uid="c", path=c, label=0)],
                                              "test": [Item(uid="e", path=e, label=0)]}) == 0
    assert calls == {"read": 0, "sha256": 0}


def test_excerpts_of_one_file_in_two_splits_are_not_copies(tmp_path):
    """Two different excerpts of identical files (VocalSet-style chunks) are different audio."""
    a = write_wav(tmp_path / "a.wav", 4.0, sr=8000, seed=3)
    b = tmp_path / "b.wav"
    shutil.copy(a, b)
    items = {"train": [Item(uid="a0", path=a, label=0, offset=0.0, duration=2.0)],
             "test": [Item(uid="b2", path=b, label=0, offset=2.0, duration=2.0)]}
    duplicates.refuse_identical_files(items)
    items["test"] = [Item(uid="b0", path=b, label=0, offset=0.0, duration=2.0)]
    with pytest.raises(DataFormatError, match="byte-identical"):
        duplicates.refuse_identical_files(items)
