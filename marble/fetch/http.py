"""Resumable, verified HTTP(S) downloads.

A file is written to ``<dest>.part`` and renamed to ``<dest>`` only after its size and checksum (when
known) match, so an interrupted transfer, a checksum mismatch or a full disk never leaves a file under
its final name. A part is resumed only when it can be shown to be the beginning of the same remote file:
``<dest>.part.json``, written when the transfer began, records the URL, the remote size and the
server's validators (ETag, Last-Modified); the resumed request sends them as ``If-Range`` and overlaps
the part by one byte, and the answer must agree on the start, the total size, the validators and that
byte. Anything else (no record, another URL, a part longer than the file, a ``416``) discards the part
and starts over. A download with no pinned size asks the server once more for its last byte, so a
``Content-Length`` short of the file is caught (the rest is fetched) rather than installed. Redirects to
another host are named, and refused for files with no pinned checksum unless the caller allows them.
Only the standard library is used: ``requests`` would add a dependency without adding behaviour.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from marble.errors import MarbleError
from marble.io import file_digests

CHUNK = 1 << 20
USER_AGENT = "marble-benchmark (+https://github.com/a43992899/MARBLE)"
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class DownloadError(MarbleError, OSError):
    pass


class ChecksumError(DownloadError):
    pass


class UnreachableError(DownloadError):
    """The host could not be reached at all (name resolution, refused or unroutable connection)."""

    def __init__(self, message: str, host: str):
        super().__init__(message)
        self.host = host


@dataclass(frozen=True)
class Checksum:
    """An expected digest: ``algo`` is ``md5`` or ``sha256``."""

    algo: str
    hexdigest: str


@dataclass(frozen=True)
class Fetched:
    """A verified download: where it is, its size and its sha256 (computed while it was written)."""

    path: Path
    size: int
    sha256: str


def check_mirror(mirror: str | None) -> str | None:
    """``mirror`` if it is an http(s) base URL with a host (None stays None); else a :class:`MarbleError`
    naming the problem, so a typo never silently falls back to the official hosts."""
    if mirror is None:
        return None
    example = "give a base URL such as http://mirror.lab/marble"
    if not mirror.strip():
        raise MarbleError(f"--mirror {mirror!r}: empty; {example}, or leave the option out to use the official hosts")
    try:
        parts = urllib.parse.urlsplit(mirror.strip())
        host, _ = parts.hostname, parts.port
    except ValueError as e:
        raise MarbleError(f"--mirror {mirror!r}: not a URL ({e}); {example}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise MarbleError(f"--mirror {mirror!r}: not an http(s) URL with a host; {example}")
    if parts.query or parts.fragment:
        raise MarbleError(f"--mirror {mirror!r}: a base URL takes no ?query or #fragment; {example}")
    return mirror.strip()


def mirror_url(url: str, mirror: str | None) -> str:
    """``url`` with its scheme and host replaced by the ``mirror`` base URL (path and query kept), so a
    lab mirror serves the official paths: ``http://h/a/b.zip`` + ``http://m/x`` -> ``http://m/x/a/b.zip``."""
    if mirror is None:
        return url
    parts = urllib.parse.urlsplit(url)
    out = check_mirror(mirror).rstrip("/") + parts.path
    return out + ("?" + parts.query if parts.query else "")


def owner(path: Path) -> str:
    """The user name (else uid) owning ``path``."""
    try:
        import pwd

        uid = path.stat().st_uid
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return f"uid {uid}"
    except (OSError, ImportError):
        return "another user"


def unwritable(path: Path, e: OSError) -> DownloadError:
    """The error for a file or folder this user may not write: say whose it is and what to do (a rerun
    would fail the same way)."""
    why = os.strerror(e.errno)
    if path.exists() and not path.is_dir() and path.stat().st_uid != os.geteuid():
        who = owner(path)
        return DownloadError(f"{path}: cannot write ({why}): it belongs to {who}; ask {who} to finish or delete it "
                             "(or delete it yourself if you may), or use a --data-dir of your own")
    folder = path if path.is_dir() else path.parent
    return DownloadError(f"{folder}: cannot write ({why}); choose a --data-dir you can write, or ask its owner "
                         f"({owner(folder)}) to make it writable")


def _progress(total: int | None, initial: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=quiet or None, file=sys.stderr, leave=False)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect to the same host (e.g. http -> https); another host is named through ``log``
    and followed only when ``cross_host`` allows it."""

    def __init__(self, url: str, cross_host: bool, log):
        self.url, self.cross_host, self.log = url, cross_host, log
        self.named: set[str] = set()

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        if new.scheme not in ("http", "https"):
            raise DownloadError(f"{self.url}: the server redirects to {newurl!r}, not an http(s) URL; refused")
        if new.hostname != urllib.parse.urlsplit(req.full_url).hostname:
            if not self.cross_host:
                raise DownloadError(f"{self.url}: the server redirects to another host, {new.hostname} ({new.geturl()}); "
                                    "no pinned checksum vouches for what that host serves, so it was not followed: "
                                    "pass --allow-redirects to follow it, or use --mirror with a host that serves the file")
            if new.hostname not in self.named:
                self.named.add(new.hostname)
                self.log(f"{self.url}: redirected to another host, {new.hostname}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Short(Exception):
    """The server closed the connection before sending the announced length."""


class _Restart(Exception):
    """The part cannot be shown to be the start of this file: discard it and start over."""


@dataclass
class _Record:
    """What the part was started from (``<dest>.part.json``)."""

    url: str
    total: int | None
    etag: str | None
    modified: str | None

    @classmethod
    def read(cls, path: Path) -> "_Record | None":
        try:
            d = json.loads(path.read_text())
            return cls(str(d["url"]), d.get("total"), d.get("etag"), d.get("modified"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))


def _discard(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink(missing_ok=True)
        except PermissionError as e:
            raise unwritable(p, e) from None


def download(url: str, dest: str | os.PathLike, *, size: int | None = None, checksum: Checksum | None = None,
             reuse_sha256: str | None = None, retries: int = 3, timeout: float = 60.0, quiet: bool = False,
             allow_redirects: bool = False, log=None) -> Fetched:
    """Fetch ``url`` to ``dest`` atomically.

    An existing ``dest`` is kept only if it matches the pinned ``size``/``checksum``, or, with nothing
    pinned, the sha256 recorded when it was downloaded (``reuse_sha256``); any other is fetched again
    and replaced once the new file is verified. ``retries`` more attempts resume after a dropped connection. A redirect to another
    host is followed only with a pinned ``checksum`` or ``allow_redirects``. Raises
    :class:`ChecksumError` (the part is deleted), :class:`UnreachableError` (the host cannot be reached)
    or :class:`DownloadError` (the part is kept for the next run to resume when it can).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.json")
    algos = ("sha256",) + ((checksum.algo,) if checksum else ())
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in _UNWRITABLE:
            raise unwritable(dest.parent, e) from None
        raise
    if dest.exists():
        got = file_digests(dest, algos)
        pinned = size is not None or checksum is not None
        if (pinned and (size is None or dest.stat().st_size == size)
                and (checksum is None or got[checksum.algo] == checksum.hexdigest)) \
                or (not pinned and reuse_sha256 is not None and got["sha256"] == reuse_sha256):
            return Fetched(dest, dest.stat().st_size, got["sha256"])
        # not what it should be, and nothing shows which part of it could be kept: fetched whole, it replaces
        # this file only once verified (a failed download loses nothing)
    opener = urllib.request.build_opener(_Redirects(url, allow_redirects or checksum is not None, log))
    attempt, restarts, received_any, last_error = 0, 0, False, None
    while True:
        try:
            received_any |= _transfer(opener, url, part, meta, size, timeout, quiet, desc=dest.name,
                                      confirm=size is None and checksum is None)
            break
        except DownloadError:
            raise
        except _Restart:
            _discard(part, meta)
            restarts += 1
            if restarts > 2:
                raise DownloadError(f"{url}: the server's answers do not agree on this file (size, validators or "
                                    "content change between requests); nothing was kept; try again later or use "
                                    "another --mirror") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, _Short) as e:
            if isinstance(e, OSError) and e.errno in _NO_SPACE:
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"{part}: cannot write ({os.strerror(e.errno)}) after {have} bytes; free disk space "
                                    f"and rerun the same command to resume (the partial file is kept, never used as complete)") from None
            if isinstance(e, OSError) and e.errno in _UNWRITABLE and not isinstance(e, urllib.error.URLError):
                raise unwritable(Path(e.filename) if getattr(e, "filename", None) else part, e) from None
            if isinstance(e, urllib.error.HTTPError) and e.code < 500 and e.code != 408:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check the URL or --mirror "
                                    f"(nothing was saved as {dest})") from None
            last_error = e
            attempt += 1
            if attempt > retries:
                have = part.stat().st_size if part.exists() else 0
                host = urllib.parse.urlsplit(url).hostname or url
                if _unreachable(last_error) and not received_any:
                    raise UnreachableError(f"{url}: cannot reach {host} ({_reason(last_error)}); check the network "
                                           "connection and the host name, or use --mirror", host) from None
                resume = f"rerun the same command to resume from {part}" if have and meta.exists() else "rerun the same command to retry"
                raise DownloadError(f"{url}: download interrupted ({_reason(last_error)}) after {have} bytes; {resume}") from None
            time.sleep(min(2.0 ** attempt * 0.1, 5.0))
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        _discard(part, meta)
        raise ChecksumError(f"{url}: got {got_size} bytes, expected {size}; the file was not kept (the host or mirror "
                            f"serves a different file)")
    digests = file_digests(part, algos)
    if checksum is not None and digests[checksum.algo] != checksum.hexdigest:
        _discard(part, meta)
        raise ChecksumError(f"{url}: {checksum.algo} {digests[checksum.algo]} does not match the pinned {checksum.hexdigest}; "
                            f"the file was not kept (the host or mirror serves a different file)")
    os.replace(part, dest)
    _discard(meta)
    return Fetched(dest, got_size, digests["sha256"])


def _unreachable(e: BaseException) -> bool:
    reason = e.reason if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError) else e
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError, socket.timeout)):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    return (int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))) if m else None


def _validators(resp) -> tuple[str | None, str | None]:
    return resp.headers.get("ETag"), resp.headers.get("Last-Modified")


def _transfer(opener, url: str, part: Path, meta: Path, size: int | None, timeout: float, quiet: bool, desc: str,
              confirm: bool) -> bool:
    """One request; appends to (or starts) ``part``; with ``confirm``, asks the server to confirm the end.
    Returns whether any byte arrived."""
    have = part.stat().st_size if part.exists() else 0
    rec = _Record.read(meta) if have else None
    if have and (rec is None or rec.url != url or rec.total is None or have > rec.total
                 or (size is not None and rec.total != size)):
        raise _Restart  # nothing shows this part is the start of this file
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have - 1}-"  # one byte of overlap: it must match the part's last byte
        if rec.etag and not rec.etag.startswith("W/"):
            headers["If-Range"] = rec.etag
        elif rec.modified:
            headers["If-Range"] = rec.modified
    try:
        resp = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part claims bytes the file does not have
            raise _Restart from None
        raise
    with resp:
        if have:
            cr = _content_range(resp.headers.get("Content-Range"))
            etag, modified = _validators(resp)
            if resp.status != 206 or cr is None:
                have = 0  # the server ignored the range, or the file changed (If-Range): start again
            elif cr != (have - 1, rec.total) or (rec.etag and etag and etag != rec.etag) \
                    or (rec.modified and modified and modified != rec.modified):
                raise _Restart
            else:
                with open(part, "rb") as f:
                    f.seek(have - 1)
                    last = f.read(1)
                if resp.read(1) != last:
                    raise _Restart
        total = rec.total if have else _total(resp)
        if not have:
            etag, modified = _validators(resp)
            _Record(url, total, etag, modified).write(meta)
        received, arrived = have, False
        with open(part, "ab" if have else "wb") as out, _progress(total or size, have, desc, quiet) as bar:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                arrived = True
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    if total is not None and received < total:
        raise _Short(f"connection closed at byte {received} of {total}")
    if total is not None and received > total:
        raise _Restart
    if confirm and not _confirm_end(opener, url, part, meta, timeout):
        raise _Restart
    return arrived or bool(have)


def _total(resp) -> int | None:
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _confirm_end(opener, url: str, part: Path, meta: Path, timeout: float) -> bool:
    """With no pinned size, ask for the last byte received: a server whose ``Content-Length`` fell short
    of the file says so in ``Content-Range`` (then the part is resumed, not installed short). A server
    that does not serve ranges cannot be asked: its first answer stands."""
    have = part.stat().st_size
    if not have:
        return True
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                                               "Range": f"bytes={have - 1}-"})
    try:
        with opener.open(req, timeout=timeout) as resp:
            if resp.status != 206:
                return _total(resp) in (None, have)
            cr = _content_range(resp.headers.get("Content-Range"))
            if cr is None or cr[0] != have - 1:
                return False
            rec = _Record.read(meta)
            etag, modified = _validators(resp)
            if rec is None or (rec.etag and etag and etag != rec.etag) or (rec.modified and modified and modified != rec.modified):
                return False
            if cr[1] is not None and cr[1] > have:  # the rest is resumed on the next attempt, against the true size
                rec.total = cr[1]
                rec.write(meta)
                raise _Short(f"the server announced {have} bytes but holds {cr[1]}")
            return cr[1] in (None, have)
    except urllib.error.HTTPError as e:
        if e.code == 416:
            return False
        raise
