"""Run a recipe: download its sources (resumably), extract what the requested tasks need, and record
every installed file (size, sha256, source) in ``<root>/.marble/manifest.json``.

The manifest is what lets ``verify`` tell a truncated or deleted file from one never downloaded, and
``--fix`` fetch only the sources that hold the wrong files. Downloads live in ``<root>/.marble/downloads``
and are deleted once extracted (``keep_archives`` keeps them: a later ``--fix`` then needs no network).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from marble.cache.store import write_json
from marble.datasets.base import data_root
from marble.errors import MarbleError
from marble.fetch.archives import Installed, extract, join_parts
from marble.fetch.http import DownloadError, download, file_digest, mirror_url
from marble.fetch.recipes import Recipe, Source

MANIFEST = Path(".marble") / "manifest.json"


class ManualDataError(MarbleError):
    pass


@dataclass
class Manifest:
    path: Path
    files: dict[str, dict] = field(default_factory=dict)  # rel -> {size, sha256, source}
    sources: dict[str, str] = field(default_factory=dict)  # source name -> "complete"

    @classmethod
    def load(cls, root: Path) -> "Manifest":
        path = root / MANIFEST
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
            return cls(path, dict(data.get("files", {})), dict(data.get("sources", {})))
        except (json.JSONDecodeError, AttributeError) as e:
            raise MarbleError(f"{path}: unreadable download manifest ({e}); delete it and run `marble data verify --fix`") from None

    def record(self, source: str, installed: list[Installed]) -> None:
        for inst in installed:
            self.files[inst.rel] = {"size": inst.size, "sha256": inst.sha256, "source": source}

    def save(self) -> None:
        write_json(self.path, {"files": self.files, "sources": self.sources})


@dataclass
class InstallReport:
    installed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "source: message"


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
                 keep_archives: bool, quiet: bool) -> list[Installed]:
    downloads = root / ".marble" / "downloads"
    if src.kind == "file":
        r = src.parts[0]
        dest = download(mirror_url(r.url, mirror), root / src.target, size=r.size, checksum=r.checksum, quiet=quiet)
        inst = [Installed(src.target, dest.stat().st_size, file_digest(dest, "sha256"))]
        man.record(src.name, inst)
        return inst
    paths = [download(mirror_url(r.url, mirror), downloads / r.filename, size=r.size, checksum=r.checksum, quiet=quiet)
             for r in src.parts]
    archive = paths[0] if len(paths) == 1 else join_parts(paths, downloads / src.name)
    keep = (lambda rel: True) if need is None else (lambda rel: rel in need)
    sha = src.member_sha256() if src.member_sha256 else None
    inst = extract(archive, src.kind, root, src.mapper, keep=keep, member_sha256=sha)
    man.record(src.name, inst)
    if need is None:
        man.sources[src.name] = "complete"
    if not keep_archives:
        for p in set(paths) | {archive}:
            p.unlink(missing_ok=True)
    return inst


def install(recipe: Recipe, data_dir=None, tasks=None, mirror: str | None = None, only: set[str] | None = None,
            keep_archives: bool = False, quiet: bool = False, log=None) -> InstallReport:
    """Fetch what ``tasks`` (default: all of the recipe's) need into ``<data_dir>/<recipe.subdir>``.
    ``only`` restricts the work to those paths (``verify --fix``). Errors of one source are reported
    and the others still run; nothing incomplete is ever installed."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if recipe.access != "download":
        raise ManualDataError(recipe.instructions.format(root=data_root(data_dir) / recipe.subdir, data=data_root(data_dir)))
    root = data_root(data_dir) / recipe.subdir
    root.mkdir(parents=True, exist_ok=True)
    man = Manifest.load(root)
    report = InstallReport()
    try:
        for i, src in enumerate(recipe.sources(tasks)):
            need = _needed(src, root, man, only)
            if need is not None and not need:
                report.skipped.append(src.name)
                continue
            try:
                inst = fetch_source(src, root, man, need, mirror, keep_archives, quiet)
            except DownloadError as e:
                report.failed.append(f"{src.name}: {e}")
                if len(report.failed) <= 5:
                    log(f"failed: {src.name}: {e}")
                continue
            report.installed += [x.rel for x in inst]
            if src.kind != "file":
                log(f"{src.name}: {len(inst)} files installed under {root}")
            if src.kind != "file" or i % 50 == 49:  # an archive's record survives a kill before the next one
                man.save()
    finally:
        man.save()
    return report


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
    if by_name:
        src = by_name[0]
        r = src.parts[0] if len(src.parts) == 1 and src.parts[0].filename == path.name else None
        if r is not None and (r.size is not None and path.stat().st_size != r.size
                              or r.checksum is not None and file_digest(path, r.checksum.algo) != r.checksum.hexdigest):
            raise MarbleError(f"{path}: size or {r.checksum.algo if r.checksum else 'checksum'} differs from the official "
                              f"{r.filename} pinned for {recipe.name}; it is not the official file")
    elif len({s.mapper for s in archives_}) == 1 and archives_:
        src = archives_[0]
        log(f"{path.name}: no pinned checksum for this file name; check it with `marble data verify {recipe.name}`")
    else:
        names = ", ".join(sorted({s.name for s in archives_})) or "none"
        raise MarbleError(f"{path}: which part of {recipe.name} is this? name it as the official file ({names})")
    root = data_root(data_dir) / recipe.subdir
    man = Manifest.load(root) if root.is_dir() else Manifest(root / MANIFEST)
    inst = extract(path, kind, root, src.mapper, member_sha256=src.member_sha256() if src.member_sha256 else None)
    if not inst:
        raise MarbleError(f"{path}: no file of {recipe.name}'s layout inside; is it the right archive?")
    man.record(path.name, inst)
    man.sources[src.name] = "complete"
    man.save()
    log(f"{path.name}: {len(inst)} files installed under {root}")
    return InstallReport(installed=[x.rel for x in inst])


def remove_bad(root: Path, rels: list[str]) -> None:
    """Delete files ``verify`` found truncated or corrupt, so that nothing wrong passes as present."""
    for rel in rels:
        p = root / rel
        if p.is_file():
            os.unlink(p)
