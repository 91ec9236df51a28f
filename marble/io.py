"""Leaf file helpers shared by every part of marble: atomic writes (a reader never sees a half-written file and a
full disk is named as such), JSON and ``.npy`` writes, sha256 of files, safe folder names, the checkpoint reader.

It imports nothing of marble but :mod:`marble.errors`, so caches, encoders, results, fetch and training all use it
without importing each other (arrows run one way).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from marble.errors import MarbleError


def slug(name: str) -> str:
    """A filesystem-safe folder name for an encoder id (``m-a-p/MERT-v1-95M`` -> ``m-a-p__MERT-v1-95M``)."""
    s = str(name).rstrip("/").replace("/", "__").replace(":", "--")
    return re.sub(r"[^A-Za-z0-9._\-]+", "_", s) or "encoder"


class WriteError(MarbleError, OSError):
    """A file could not be written (disk full, quota, file size limit, permissions)."""


class _CheckedWriter:
    """A file handle that remembers a failed or short write (libtorch reports a full disk as an
    unreadable ``enforce fail ... unexpected pos``; with this record the cause is named instead) and hashes
    what it writes, so a content hash costs no second read (``sha256``)."""

    def __init__(self, f):
        self._f, self.error = f, None
        self._hash = hashlib.sha256()

    def write(self, data) -> int:
        try:
            n = self._f.write(data)
        except OSError as e:
            self.error = e
            raise
        if n is not None and n < memoryview(data).nbytes:
            import errno

            self.error = OSError(errno.ENOSPC, "short write (no space left on device?)")
            raise self.error
        self._hash.update(data)
        return n

    def seek(self, *args):
        raise io.UnsupportedOperation("a hashing writer is written in order")  # writers fall back to streaming

    def tell(self) -> int:
        return self._f.tell()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def __getattr__(self, name):
        return getattr(self._f, name)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike):
    """A binary file handle whose content appears at ``path`` only once fully written and fsynced
    (temporary name + ``os.replace``); on an exception the temporary file is removed. A failed write
    (full disk, quota, size limit) raises :class:`WriteError` naming the file, whatever wrote it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            writer = _CheckedWriter(f)
            yield writer
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        cause = writer.error if writer is not None and writer.error is not None else e
        if isinstance(cause, OSError) and not isinstance(cause, MarbleError):
            raise WriteError(f"{path}: cannot write ({cause.strerror or cause}); free disk space (or "
                             "choose another output folder) and rerun: finished work is kept") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def read_torch_state(path: str | os.PathLike, error: type[Exception], fix: str, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only, so a pickle payload
    planted in the file is refused, never run. Any failure raises ``error`` naming the file, the reason and
    ``fix`` (the one reader of marble's training checkpoints: pretraining, fine-tuning)."""
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).splitlines()[0][:200] if str(e) else ""
        raise error(f"{path}: cannot read the {what} ({type(e).__name__}: {reason}); it may be from another tool or "
                    f"version, truncated by a full disk, or carry code (refused). {fix}") from None


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write ``data`` atomically; returns its sha256."""
    with atomic_open(path) as f:
        f.write(data)
    return f.sha256


def atomic_save_npy(path: Path, array: np.ndarray) -> str:
    """``np.save`` atomically; returns the file's sha256 (hashed while written)."""
    with atomic_open(path) as f:  # np.save to a handle keeps the name as given (no ".npy" appended)
        np.save(f, array)
    return f.sha256


def file_digests(path: str | os.PathLike, algos=("sha256",), chunk: int = 1 << 22) -> dict[str, str]:
    """``{algorithm: hex digest}`` of a file, every algorithm (``hashlib`` names) in one read, in chunks (weights
    files and archives are GBs). The one file hasher: caches, weights, splits and downloads all use it."""
    hs = {a: hashlib.new(a) for a in dict.fromkeys(algos)}
    with open(path, "rb") as f:
        while block := f.read(chunk):
            for h in hs.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hs.items()}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (:func:`file_digests`)."""
    return file_digests(path)["sha256"]


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())
