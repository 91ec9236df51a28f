"""``marble data verify``: is a dataset on disk complete and intact?

Per task: the loader's count against the official split (what ``data check`` reports). Per file: a
file recorded in the download manifest and now gone is *deleted*; one shorter than recorded, or a WAV
whose data chunk runs past the end of the file, is *truncated*; one whose published (or, with
``deep``, recorded) checksum differs, or that fails to decode, is *corrupt*. A sample of the present
audio files is decoded in full. Works on a user's own copy too (no manifest): counts, WAV headers,
published checksums and the decode test still apply.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from marble.audio import wav_truncation  # noqa: F401  (one reader of WAV headers; re-exported)
from marble.datasets import get_dataset
from marble.datasets.base import data_root
from marble.datasets.common import CheckReport
from marble.fetch.install import Manifest
from marble.fetch.recipes import Recipe
from marble.io import file_digests

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".au", ".jams")  # a JAMS annotation is "decoded" as JSON


@dataclass
class Problem:
    rel: str
    kind: str  # missing | deleted | truncated | corrupt
    detail: str = ""


@dataclass
class VerifyReport:
    recipe: Recipe
    root: Path
    checks: list[CheckReport] = field(default_factory=list)
    problems: dict[str, Problem] = field(default_factory=dict)
    present: int = 0
    hashed: int = 0
    decoded: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(c.complete for c in self.checks) and not self.problems

    def by_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems.values() if p.kind == kind]


def _rel(path, root: Path) -> str | None:
    rel = os.path.relpath(path, root)
    return None if rel.startswith("..") else rel.replace(os.sep, "/")


def _expected_paths(ds) -> set[Path]:
    """Every file the splits scanned by ``ds.check()`` expect (audio and annotations), without
    listing the splits again."""
    out: set[Path] = set()
    for items in ds.expected_items.values():
        for it in items:
            out.add(Path(it.path))
            for v in (it.extra or {}).values():
                if isinstance(v, Path):
                    out.add(v)
                elif isinstance(v, dict):
                    out.update(x for x in v.values() if isinstance(x, Path))
    return out


def decode_error(path: Path) -> str | None:
    """Why ``path`` cannot be read in full (audio through libsndfile, a JAMS file as JSON), or None."""
    import soundfile as sf

    if path.suffix == ".jams":
        import json

        try:
            json.loads(path.read_text())
            return None
        except (ValueError, UnicodeDecodeError) as e:
            return f"not valid JSON ({e})"
    try:
        with sf.SoundFile(str(path)) as f:
            n = 0
            while True:
                block = f.read(1 << 16, dtype="float32")
                if not len(block):
                    break
                n += len(block)
        return None if n > 0 else "decodes to no samples"
    except Exception as e:  # libsndfile's errors are RuntimeError/LibsndfileError with a reason
        return f"does not decode ({e})"


def verify(recipe: Recipe, data_dir=None, tasks=None, sample: int = 10, deep: bool = False, seed: int = 0,
           cards=None) -> VerifyReport:
    """Check ``recipe``'s data under ``data_dir`` for ``tasks`` (default: all the recipe's tasks)."""
    from marble.registry import get_card

    root = data_root(data_dir) / recipe.subdir
    report = VerifyReport(recipe, root)
    man = Manifest.load(root) if root.is_dir() else Manifest(root / ".marble" / "manifest.json")
    expected: set[Path] = set()
    for task in tasks or recipe.tasks:
        card = get_card(task) if cards is None else cards[task]
        ds = get_dataset(card, data_dir)
        check = ds.check()
        report.checks.append(check)
        for s in check.splits:
            for m in s.missing:
                rel = _rel(m, root)
                if rel is not None and rel not in report.problems:
                    kind = "deleted" if rel in man.files else "missing"
                    report.problems[rel] = Problem(rel, kind, "recorded at download, now gone" if kind == "deleted" else "")
        expected |= _expected_paths(ds)
    for rel in man.files:
        if rel not in report.problems and not (root / rel).exists():
            report.problems[rel] = Problem(rel, "deleted", "recorded at download, now gone")
    present = sorted({p for p in expected if p.exists()} | {root / r for r in man.files if (root / r).exists()})
    report.present = len(present)
    published = recipe.file_checksums()
    candidates = []
    for path in present:
        rel = _rel(path, root)
        if rel is None:
            continue
        rec = man.files.get(rel)
        size = path.stat().st_size
        if rec is not None and size != rec["size"]:
            kind = "truncated" if size < rec["size"] else "corrupt"
            report.problems[rel] = Problem(rel, kind, f"{size} bytes, {rec['size']} when downloaded")
            continue
        if path.suffix.lower() == ".wav":
            why = wav_truncation(path)
            if why:
                report.problems[rel] = Problem(rel, "truncated", why)
                continue
        if deep:
            want = published.get(rel)
            if want is None and rec is not None:
                from marble.fetch.http import Checksum

                want = Checksum("sha256", rec["sha256"])
            if want is not None:
                report.hashed += 1
                got = file_digests(path, (want.algo,))[want.algo]
                if got != want.hexdigest:
                    report.problems[rel] = Problem(rel, "corrupt", f"{want.algo} {got}, expected {want.hexdigest}")
                    continue
        if path.suffix.lower() in AUDIO_SUFFIXES:
            candidates.append((rel, path))
    rng = random.Random(seed)
    for rel, path in rng.sample(candidates, min(sample, len(candidates))):
        report.decoded.append(rel)
        want = published.get(rel)
        if want is not None and not deep:
            report.hashed += 1
            got = file_digests(path, (want.algo,))[want.algo]
            if got != want.hexdigest:
                report.problems[rel] = Problem(rel, "corrupt", f"{want.algo} {got}, expected {want.hexdigest}")
                continue
        why = decode_error(path)
        if why:
            report.problems[rel] = Problem(rel, "corrupt", why)
    return report
