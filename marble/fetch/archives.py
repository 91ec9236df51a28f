"""Archive extraction that never leaves a half-written file under its final name.

Members go to a staging folder beside the dataset (same file system), each hashed while written; only
when the whole archive has been read without error are they renamed into place. A member's path is
mapped by the recipe (``mapper``: member name -> path under the dataset root, or None to skip) and
must stay inside the root. GTZAN's original ``.au`` files are converted to the ``.wav`` the split lists
(same 16-bit samples, same rate) on the way.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from marble.fetch.http import CHUNK, ChecksumError, DownloadError, unwritable
from marble.io import file_sha256
from marble.paths import parent_outside, relative_inside


class ArchiveError(DownloadError):
    """The archive itself is unusable (damaged, or it extracts to more than the dataset can hold): a
    download of it that no pinned checksum vouches for is not worth keeping."""


@dataclass(frozen=True)
class Installed:
    rel: str
    size: int
    sha256: str


def safe_rel(rel: str) -> str:
    """``rel`` normalised; raises if it is absolute or climbs out of the dataset root."""
    out = relative_inside(rel)
    if out is None:
        raise ArchiveError(f"archive member path {rel!r} would leave the dataset folder; refusing to extract it")
    return out


def check_inside(root: Path, rel: str) -> None:
    """Refuse to write or delete ``root/rel`` when a folder on its way is a link out of ``root``."""
    where = parent_outside(root, rel)
    if where is not None:
        raise DownloadError(f"{root / rel}: leads to {where}, outside the dataset folder {root} (a folder on the way "
                            "is a link out of it); marble writes and deletes only inside it: replace the link by a real "
                            "folder, or point --data-dir at the real location")


def join_parts(parts: list[Path], dest: Path) -> Path:
    """Concatenate the parts of a split archive (``mp3.zip.001`` ...) into ``dest``, atomically."""
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, CHUNK)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    return dest


def _members(archive: Path, kind: str) -> Iterator[tuple[str, int, Callable]]:
    """(member name, declared size, opener) for every regular file, in archive order."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16) or "__MACOSX" in info.filename:
                    continue
                yield info.filename, info.file_size, (lambda info=info: zf.open(info))
    elif kind == "tar":
        with tarfile.open(archive, "r|*") as tf:  # streaming: one pass over a possibly huge .tar.gz
            for m in tf:
                if m.isfile():
                    yield m.name, m.size, (lambda m=m: tf.extractfile(m))
    else:
        raise ValueError(f"unknown archive kind {kind!r}")


@dataclass(frozen=True)
class Limit:
    """Ceilings on what an archive's kept members extract to: ``each`` for one member, ``total`` for all."""

    each: int
    total: int


def _too_big(archive: Path, name: str, what: str) -> ArchiveError:
    return ArchiveError(f"{archive}: member {name} {what}, more than this dataset holds; a damaged or hostile archive: "
                        "nothing from it was installed")


def _au_to_wav(src: Path, dest: Path) -> None:
    import soundfile as sf

    data, sr = sf.read(str(src), dtype="int16", always_2d=True)
    sf.write(str(dest), data, sr, subtype="PCM_16", format="WAV")


def extract(archive: Path, kind: str, root: Path, mapper: Callable[[str], str | None],
            keep: Callable[[str], bool] = lambda rel: True, member_sha256: dict[str, str] | None = None,
            limit: Limit | None = None) -> list[Installed]:
    """Extract the members ``mapper`` names (and ``keep`` accepts) below ``root``; returns what was installed.

    ``member_sha256`` (member name -> published digest) is checked on the bytes read; a mismatch aborts
    the archive, installs nothing from it, and raises :class:`ChecksumError`. ``limit`` bounds what one
    kept member and all of them may extract to (the dataset's expected sizes with a margin): an archive
    that expands past it is refused (:class:`ArchiveError`) before it can fill the disk. Every destination
    is checked before the first is moved into place: nothing is written through a link out of ``root``.
    """
    check_inside(root, ".marble/staging")
    staging = root / ".marble" / f"staging-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staged: list[tuple[Path, Installed]] = []
    written = 0
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
            for name, declared, opener in _members(archive, kind):
                rel = mapper(name)
                if rel is None:
                    continue
                rel = safe_rel(rel)
                if not keep(rel):
                    continue
                if limit is not None and declared > limit.each:  # refused before a byte of it is written
                    raise _too_big(archive, name, f"declares {declared:,} bytes, more than the {limit.each:,} one file may have")
                if limit is not None and written + declared > limit.total:
                    raise _too_big(archive, name, f"takes the archive past {limit.total:,} bytes")
                budget = None if limit is None else min(limit.each, limit.total - written)
                tmp = staging / rel
                tmp.parent.mkdir(parents=True, exist_ok=True)
                convert = name.lower().endswith(".au") and rel.lower().endswith(".wav")
                raw = tmp.with_name(tmp.name + ".au") if convert else tmp
                h = hashlib.sha256()
                got = 0
                with opener() as src, open(raw, "wb") as out:
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        got += len(chunk)
                        if budget is not None and got > budget:  # a member larger than it declares
                            raise _too_big(archive, name, f"extracts to more than it declares ({declared:,} bytes)")
                        h.update(chunk)
                        out.write(chunk)
                written += got
                want = (member_sha256 or {}).get(name)
                if want is not None and h.hexdigest() != want:
                    raise ChecksumError(f"{archive}: member {name} has sha256 {h.hexdigest()}, the published one is {want}; "
                                        "nothing from this archive was installed")
                if convert:
                    try:
                        _au_to_wav(raw, tmp)
                    except RuntimeError as e:  # libsndfile's error
                        raise ArchiveError(f"{archive}: member {name} is not a readable AU file ({e}); nothing from "
                                           "this archive was installed") from None
                    raw.unlink()
                    digest = file_sha256(tmp)
                else:
                    digest = h.hexdigest()
                staged.append((tmp, Installed(rel, tmp.stat().st_size, digest)))
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
            raise ArchiveError(f"{archive}: damaged archive ({e}); nothing from it was installed") from None
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise unwritable(Path(e.filename) if e.filename else root, e) from None
            if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise
            raise DownloadError(f"{root}: cannot write ({os.strerror(e.errno)}) while extracting {archive.name}; nothing "
                                "from it was installed; free disk space and rerun (the downloaded archive is kept)") from None
        for _, inst in staged:
            check_inside(root, inst.rel)
        for tmp, inst in staged:
            final = root / inst.rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [inst for _, inst in staged]
