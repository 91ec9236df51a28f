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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from marble.fetch.http import CHUNK, ChecksumError, DownloadError


@dataclass(frozen=True)
class Installed:
    rel: str
    size: int
    sha256: str


def safe_rel(rel: str) -> str:
    """``rel`` normalised; raises if it is absolute or climbs out of the dataset root."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts or ":" in p.parts[0]:
        raise DownloadError(f"archive member path {rel!r} would leave the dataset folder; refusing to extract it")
    return str(p)


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


def _members(archive: Path, kind: str) -> Iterator[tuple[str, Callable]]:
    """(member name, opener) for every regular file, in archive order."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16) or "__MACOSX" in info.filename:
                    continue
                yield info.filename, (lambda info=info: zf.open(info))
    elif kind == "tar":
        with tarfile.open(archive, "r|*") as tf:  # streaming: one pass over a possibly huge .tar.gz
            for m in tf:
                if m.isfile():
                    yield m.name, (lambda m=m: tf.extractfile(m))
    else:
        raise ValueError(f"unknown archive kind {kind!r}")


def _au_to_wav(src: Path, dest: Path) -> None:
    import soundfile as sf

    data, sr = sf.read(str(src), dtype="int16", always_2d=True)
    sf.write(str(dest), data, sr, subtype="PCM_16", format="WAV")


def extract(archive: Path, kind: str, root: Path, mapper: Callable[[str], str | None],
            keep: Callable[[str], bool] = lambda rel: True, member_sha256: dict[str, str] | None = None) -> list[Installed]:
    """Extract the members ``mapper`` names (and ``keep`` accepts) below ``root``; returns what was installed.

    ``member_sha256`` (member name -> published digest) is checked on the bytes read; a mismatch aborts
    the archive, installs nothing from it, and raises :class:`ChecksumError`.
    """
    root.mkdir(parents=True, exist_ok=True)
    staging = root / ".marble" / f"staging-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staged: list[tuple[Path, Installed]] = []
    try:
        try:
            for name, opener in _members(archive, kind):
                rel = mapper(name)
                if rel is None:
                    continue
                rel = safe_rel(rel)
                if not keep(rel):
                    continue
                tmp = staging / rel
                tmp.parent.mkdir(parents=True, exist_ok=True)
                convert = name.lower().endswith(".au") and rel.lower().endswith(".wav")
                raw = tmp.with_name(tmp.name + ".au") if convert else tmp
                h = hashlib.sha256()
                with opener() as src, open(raw, "wb") as out:
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        h.update(chunk)
                        out.write(chunk)
                want = (member_sha256 or {}).get(name)
                if want is not None and h.hexdigest() != want:
                    raise ChecksumError(f"{archive}: member {name} has sha256 {h.hexdigest()}, the published one is {want}; "
                                        "nothing from this archive was installed")
                if convert:
                    _au_to_wav(raw, tmp)
                    raw.unlink()
                    from marble.fetch.http import file_digest

                    digest = file_digest(tmp, "sha256")
                else:
                    digest = h.hexdigest()
                staged.append((tmp, Installed(rel, tmp.stat().st_size, digest)))
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
            raise DownloadError(f"{archive}: damaged archive ({e}); delete it and rerun the download") from None
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise
            raise DownloadError(f"{root}: cannot write ({os.strerror(e.errno)}) while extracting {archive.name}; nothing "
                                "from it was installed; free disk space and rerun (the downloaded archive is kept)") from None
        for tmp, inst in staged:
            final = root / inst.rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [inst for _, inst in staged]
