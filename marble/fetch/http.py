"""Resumable, verified HTTP(S) downloads.

A file is written to ``<dest>.part`` and renamed to ``<dest>`` only after its size and checksum (when
known) match, so an interrupted transfer, a checksum mismatch or a full disk never leaves a file under
its final name. A later call resumes a ``.part`` with an HTTP ``Range`` request (a server that ignores
the range gets a fresh download); a part that fails its checksum is deleted, never kept. Redirects are
followed (urllib's handler keeps the ``Range`` header across them). Only the standard library is used:
the transfer is simple enough that ``requests`` would add a dependency without adding behaviour.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from marble.errors import MarbleError

CHUNK = 1 << 20
USER_AGENT = "marble-benchmark (+https://github.com/a43992899/MARBLE)"


class DownloadError(MarbleError, OSError):
    pass


class ChecksumError(DownloadError):
    pass


@dataclass(frozen=True)
class Checksum:
    """An expected digest: ``algo`` is ``md5`` or ``sha256``."""

    algo: str
    hexdigest: str


def mirror_url(url: str, mirror: str | None) -> str:
    """``url`` with its scheme and host replaced by the ``mirror`` base URL (path and query kept), so a
    lab mirror serves the official paths: ``http://h/a/b.zip`` + ``http://m/x`` -> ``http://m/x/a/b.zip``."""
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    out = mirror.rstrip("/") + parts.path
    return out + ("?" + parts.query if parts.query else "")


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _total_from(resp, start: int) -> int | None:
    cr = resp.headers.get("Content-Range")
    if cr:
        m = re.match(r"bytes \d+-\d+/(\d+)", cr)
        if m:
            return int(m.group(1))
    length = resp.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _progress(total: int | None, initial: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=quiet or None, file=sys.stderr, leave=False)


def download(url: str, dest: str | os.PathLike, *, size: int | None = None, checksum: Checksum | None = None,
             retries: int = 3, timeout: float = 60.0, quiet: bool = False) -> Path:
    """Fetch ``url`` to ``dest`` atomically; returns ``dest``.

    An existing ``dest`` is trusted only if it matches ``size``/``checksum`` (when given); one that does
    not is moved back to ``.part`` and re-verified or resumed. ``retries`` more attempts resume after a
    dropped connection. Raises :class:`ChecksumError` (the part is deleted) or :class:`DownloadError`
    (the part is kept for the next run to resume).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if (size is None or dest.stat().st_size == size) and (checksum is None or file_digest(dest, checksum.algo) == checksum.hexdigest):
            return dest
        os.replace(dest, part)  # not what it should be: verify/resume it as a part
    attempt, last_error = 0, None
    while True:
        try:
            _transfer(url, part, size, timeout, quiet, desc=dest.name)
            break
        except ChecksumError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException, _Short) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"{part}: cannot write ({os.strerror(e.errno)}) after {have} bytes; free disk space "
                                    f"and rerun the same command to resume (the partial file is kept, never used as complete)") from None
            if isinstance(e, urllib.error.HTTPError) and e.code < 500 and e.code != 408:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check the URL or --mirror "
                                    f"(nothing was saved as {dest})") from None
            last_error = e
            attempt += 1
            if attempt > retries:
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"{url}: download interrupted ({_reason(last_error)}) after {have} bytes; "
                                    f"rerun the same command to resume from {part}") from None
            time.sleep(min(2.0 ** attempt * 0.1, 5.0))
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise ChecksumError(f"{url}: got {got} bytes, expected {size}; the file was not kept (the host or mirror "
                            f"serves a different file)")
    if checksum is not None:
        digest = file_digest(part, checksum.algo)
        if digest != checksum.hexdigest:
            part.unlink()
            raise ChecksumError(f"{url}: {checksum.algo} {digest} does not match the pinned {checksum.hexdigest}; "
                                f"the file was not kept (the host or mirror serves a different file)")
    os.replace(part, dest)
    return dest


class _Short(Exception):
    """The server closed the connection before sending the announced length."""


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _transfer(url: str, part: Path, size: int | None, timeout: float, quiet: bool, desc: str) -> None:
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part is (or claims to be) complete
            return
        raise
    with resp:
        if have and (resp.status != 206 or _content_range_start(resp.headers.get("Content-Range")) != have):
            have = 0  # the server ignored the range: start again
        total = _total_from(resp, have)
        mode = "ab" if have else "wb"
        received = have
        with open(part, mode) as out, _progress(total or size, have, desc, quiet) as bar:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    if total is not None and received < total:
        raise _Short(f"connection closed at byte {received} of {total}")
