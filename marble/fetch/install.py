"""Run a recipe: download its sources (resumably), extract what the requested tasks need, and record
every installed file (size, sha256, source) in ``<root>/.marble/manifest.json``.

The manifest is what lets ``verify`` tell a truncated or deleted file from one never downloaded, and
``--fix`` fetch only the sources that hold the wrong files. Downloads live in ``<root>/.marble/downloads``
and are deleted once extracted (``keep_archives`` keeps them: a later ``--fix`` then needs no network).
A kept download is reused only if it still matches its pinned checksum or the sha256 recorded when it
arrived; one with no pinned checksum that turns out damaged is deleted, so a rerun fetches it afresh
instead of failing on it forever. One ``download``/``--fix`` at a time works on a dataset folder
(``<root>/.marble/lock``); nothing is written or deleted through a link out of it.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from marble.datasets.base import data_root
from marble.errors import MarbleError
from marble.fetch.archives import ArchiveError, Installed, check_inside, extract, join_parts
from marble.fetch.http import DownloadError, UnreachableError, download, mirror_url, unwritable
from marble.fetch.recipes import Recipe, Source
from marble.io import file_digests, write_json
from marble.paths import parent_outside

MANIFEST = Path(".marble") / "manifest.json"


class ManualDataError(MarbleError):
    pass


@dataclass
class Manifest:
    path: Path
    files: dict[str, dict] = field(default_factory=dict)  # rel -> {size, sha256, source}
    sources: dict[str, str] = field(default_factory=dict)  # source name -> "complete"
    downloads: dict[str, dict] = field(default_factory=dict)  # file in .marble/downloads -> {size, sha256, url}

    @classmethod
    def load(cls, root: Path) -> "Manifest":
        path = root / MANIFEST
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
            return cls(path, dict(data.get("files", {})), dict(data.get("sources", {})), dict(data.get("downloads", {})))
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
            raise MarbleError(f"{path}: unreadable download manifest ({e}); delete it and run `marble data verify --fix`") from None

    def record(self, source: str, installed: list[Installed]) -> None:
        for inst in installed:
            self.files[inst.rel] = {"size": inst.size, "sha256": inst.sha256, "source": source}

    def save(self) -> None:
        check_inside(self.path.parent.parent, self.path.relative_to(self.path.parent.parent))
        write_json(self.path, {"files": self.files, "sources": self.sources, "downloads": self.downloads})

    def moved(self, recipe: Recipe, root: Path, log) -> None:
        """Move what an earlier marble installed under an old folder name (``recipe.moved``) to the new
        one, so a later ``--fix`` adds to the folder the loaders read."""
        for old, new in recipe.moved:
            rels = [r for r in self.files if r.startswith(old + "/")]
            if not rels or not (root / old).is_dir() or (root / new).exists():
                continue
            check_inside(root, old)
            check_inside(root, new)
            os.rename(root / old, root / new)
            for r in rels:
                self.files[new + r[len(old):]] = self.files.pop(r)
            self.save()
            log(f"{root / old} moved to {root / new} (the layout of the README)")


@dataclass
class InstallReport:
    installed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "source: message"
    shown: int = 0  # failures already printed through ``log`` as they happened
    not_tried: int = 0  # sources skipped because their host was found unreachable in this run


def _needed(src: Source, root: Path, man: Manifest, only: set[str] | None) -> set[str] | None:
    """What ``src`` must install: None = everything it holds; an empty set = nothing (skip it)."""
    if only is None:
        if src.provides is not None:
            missing = {rel for rel in src.provides if not (root / rel).exists()}
            return missing or set()
        if man.sources.get(src.name) == "complete":
            return set()
        return None
    if src.provides is not None:
        return src.provides & only
    mine = {rel for rel in only if man.files.get(rel, {}).get("source") == src.name}
    unknown = {rel for rel in only if rel not in man.files and (src.covers is None or src.covers(rel))}
    return mine | unknown


def fetch_source(src: Source, root: Path, man: Manifest, need: set[str] | None, mirror: str | None,
                 keep_archives: bool, quiet: bool, allow_redirects: bool = False, log=None) -> list[Installed]:
    downloads = root / ".marble" / "downloads"
    kw = dict(quiet=quiet, allow_redirects=allow_redirects, log=log)
    if src.kind == "file":
        r = src.parts[0]
        check_inside(root, src.target)
        got = download(mirror_url(r.url, mirror), root / src.target, size=r.size, checksum=r.checksum,
                       reuse_sha256=man.files.get(src.target, {}).get("sha256"), **kw)
        inst = [Installed(src.target, got.size, got.sha256)]
        man.record(src.name, inst)
        return inst
    paths = []
    for r in src.parts:
        got = download(mirror_url(r.url, mirror), downloads / r.filename, size=r.size, checksum=r.checksum,
                       reuse_sha256=man.downloads.get(r.filename, {}).get("sha256"), **kw)
        if r.checksum is None and man.downloads.get(r.filename, {}).get("sha256") != got.sha256:
            man.downloads[r.filename] = {"size": got.size, "sha256": got.sha256, "url": r.url}
            man.save()  # a kept or interrupted-before-extraction download is reused only while it matches this
        paths.append(got.path)
    archive = paths[0] if len(paths) == 1 else join_parts(paths, downloads / src.name)
    keep = (lambda rel: True) if need is None else (lambda rel: rel in need)
    sha = src.member_sha256() if src.member_sha256 else None
    pinned = all(r.checksum is not None for r in src.parts)
    try:  # a pinned checksum proves the official archive: only an unproven one is held to the size ceilings
        inst = extract(archive, src.kind, root, src.mapper, keep=keep, member_sha256=sha,
                       limit=None if pinned else src.limit)
    except ArchiveError as e:
        if pinned:
            raise
        _drop_downloads(man, src, paths, archive)
        raise ArchiveError(f"{e}; no pinned checksum vouches for the download, so it was deleted: a rerun fetches it "
                           "again (if it fails the same way, the host or mirror serves a damaged file)") from None
    man.record(src.name, inst)
    if need is None:
        man.sources[src.name] = "complete"
    if not keep_archives:
        _drop_downloads(man, src, paths, archive)
    return inst


def _drop_downloads(man: Manifest, src: Source, paths: list[Path], archive: Path) -> None:
    for p in set(paths) | {archive}:
        p.unlink(missing_ok=True)
    for r in src.parts:
        man.downloads.pop(r.filename, None)


def _host(src: Source, mirror: str | None) -> str | None:
    return urllib.parse.urlsplit(mirror_url(src.parts[0].url, mirror)).hostname if src.parts else None


def open_root(root: Path, log):
    """Make ``root`` (and its ``.marble``) ready to write and take its lock; a folder this user may not
    write, or a ``.marble`` that is a link out of it, is an error line rather than a traceback."""
    from marble.locks import exclusive

    where = parent_outside(root, ".marble/lock")
    if where is not None:
        raise MarbleError(f"{root / '.marble'}: a link to {where.parent}, outside the dataset folder {root}; marble "
                          "keeps its records inside the folder: remove the link and rerun")
    try:
        root.mkdir(parents=True, exist_ok=True)
        return exclusive(root / ".marble" / "lock",
                         lambda pid: log(f"{root}: another marble download (pid {pid}) is working on this dataset; "
                                         "waiting for it to finish"))
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise MarbleError(str(unwritable(Path(e.filename) if e.filename else root, e))) from None
        raise


def install(recipe: Recipe, data_dir=None, tasks=None, mirror: str | None = None, only: set[str] | None = None,
            keep_archives: bool = False, quiet: bool = False, log=None, allow_redirects: bool = False) -> InstallReport:
    """Fetch what ``tasks`` (default: all of the recipe's) need into ``<data_dir>/<recipe.subdir>``.
    ``only`` restricts the work to those paths (``verify --fix``). Errors of one source are reported
    (the first ``SHOWN`` through ``log`` as they happen) and the others still run; a host found
    unreachable is not tried again in this run. Nothing incomplete is ever installed."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if recipe.access != "download":
        raise ManualDataError(recipe.instructions.format(root=data_root(data_dir) / recipe.subdir, data=data_root(data_dir)))
    root = data_root(data_dir) / recipe.subdir
    lock = open_root(root, log)
    report = InstallReport()
    unreachable: dict[str, str] = {}
    try:
        man = Manifest.load(root)
        man.moved(recipe, root, log)
        try:
            for i, src in enumerate(recipe.sources(tasks)):
                need = _needed(src, root, man, only)
                if need is not None and not need:
                    report.skipped.append(src.name)
                    continue
                host = _host(src, mirror)
                if host in unreachable:
                    report.failed.append(f"{src.name}: not tried: {unreachable[host]}")
                    report.not_tried += 1
                    continue
                try:
                    inst = fetch_source(src, root, man, need, mirror, keep_archives, quiet, allow_redirects, log)
                except DownloadError as e:
                    if isinstance(e, UnreachableError):
                        unreachable[e.host] = f"{e.host} could not be reached"
                    report.failed.append(f"{src.name}: {e}")
                    if report.shown < SHOWN:
                        report.shown += 1
                        log(f"failed: {src.name}: {e}")
                    continue
                report.installed += [x.rel for x in inst]
                if src.kind != "file":
                    log(f"{src.name}: {len(inst)} files installed under {root}")
                if src.kind != "file" or i % 50 == 49:  # an archive's record survives a kill before the next one
                    man.save()
        finally:
            man.save()
    finally:
        lock.close()
    return report


SHOWN = 5  # failures ``install`` reports as they happen; the command summarises the rest


def install_local(recipe: Recipe, archive: str | os.PathLike, data_dir=None, tasks=None, log=None) -> InstallReport:
    """Extract an archive the user already has (downloaded by hand after an access request or a licence
    click, or a copy of an official file) into the official layout, as ``install`` would.

    The recipe source whose file name matches is used, with its pinned size and checksum (a mismatch is
    an error: it is not the official file); another name is accepted when the recipe has one archive
    source or ``local_sources`` lists a matching layout (e.g. the Kaggle GTZAN zip), and is then verified
    by count and decode only (``marble data verify``)."""
    import tarfile
    import zipfile

    log = log or (lambda msg: print(msg, file=sys.stderr))
    path = Path(archive)
    if not path.is_file():
        raise MarbleError(f"{path}: no such file (--archive takes a downloaded zip or tar archive)")
    kind = "zip" if zipfile.is_zipfile(path) else "tar" if tarfile.is_tarfile(path) else None
    if kind is None:
        raise MarbleError(f"{path}: neither a zip nor a tar archive")
    archives_ = [s for s in recipe.sources(tasks) + list(recipe.local_sources) if s.kind in ("zip", "tar")]
    by_name = [s for s in archives_ if path.name in (s.name, *(r.filename for r in s.parts))]
    pinned = False
    if by_name:
        src = by_name[0]
        r = src.parts[0] if len(src.parts) == 1 and src.parts[0].filename == path.name else None
        if r is not None and (r.size is not None and path.stat().st_size != r.size
                              or r.checksum is not None
                              and file_digests(path, (r.checksum.algo,))[r.checksum.algo] != r.checksum.hexdigest):
            raise MarbleError(f"{path}: size or {r.checksum.algo if r.checksum else 'checksum'} differs from the official "
                              f"{r.filename} pinned for {recipe.name}; it is not the official file")
        pinned = r is not None and r.checksum is not None
    elif len({s.mapper for s in archives_}) == 1 and archives_:
        src = archives_[0]
        log(f"{path.name}: no pinned checksum for this file name; check it with `marble data verify {recipe.name}`")
    else:
        names = ", ".join(sorted({s.name for s in archives_})) or "none"
        raise MarbleError(f"{path}: which part of {recipe.name} is this? name it as the official file ({names})")
    root = data_root(data_dir) / recipe.subdir
    lock = open_root(root, log)
    try:
        man = Manifest.load(root)
        man.moved(recipe, root, log)
        inst = extract(path, kind, root, src.mapper, member_sha256=src.member_sha256() if src.member_sha256 else None,
                       limit=None if pinned else src.limit)
        if not inst:
            raise MarbleError(f"{path}: no file of {recipe.name}'s layout inside; is it the right archive?")
        man.record(path.name, inst)
        man.sources[src.name] = "complete"
        man.save()
    finally:
        lock.close()
    log(f"{path.name}: {len(inst)} files installed under {root}")
    return InstallReport(installed=[x.rel for x in inst])


def leaving(root: Path, rels) -> dict[str, str]:
    """The paths among ``rels`` that lead out of ``root`` (a folder on the way is a link elsewhere, or a
    manifest entry climbs out), each with where it leads: ``--fix`` neither deletes nor replaces them."""
    out = {}
    for rel in rels:
        where = parent_outside(root, rel)
        if where is not None:
            out[rel] = f"leads to {where}, outside the dataset folder {root}: neither deleted nor replaced"
    return out


def remove_bad(root: Path, rels: list[str]) -> None:
    """Delete files ``verify`` found truncated or corrupt, so that nothing wrong passes as present;
    never through a link out of ``root`` (:func:`leaving`)."""
    refused = leaving(root, rels)
    for rel in rels:
        p = root / rel
        if rel not in refused and (p.is_file() or p.is_symlink()):
            os.unlink(p)
