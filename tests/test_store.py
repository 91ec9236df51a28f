"""The cache's atomic-write and checksum primitives, which every writer (caches, results, sweep state) uses."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from marble.io import atomic_open, atomic_save_npy, file_digests, file_sha256


def test_atomic_open_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "sub" / "state.bin"
    with atomic_open(path) as f:
        f.write(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["state.bin"]  # no temporary file left behind


def test_atomic_save_npy_keeps_the_name_and_checksum_is_chunked(tmp_path):
    a = np.arange(12, dtype=np.float16).reshape(3, 4)
    atomic_save_npy(tmp_path / "features.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "features.npy"), a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npy"]
    data = (tmp_path / "features.npy").read_bytes()
    assert file_sha256(tmp_path / "features.npy") == hashlib.sha256(data).hexdigest()
    assert file_digests(tmp_path / "features.npy", chunk=7)["sha256"] == hashlib.sha256(data).hexdigest()
