"""Shared machinery of the dataset loaders: expected items from the split files, presence check,
the completeness report and the :class:`DataNotFoundError` message."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from marble.datasets.base import DataFormatError, DataNotFoundError, Item, data_root
from marble.paths import outside, relative_inside

N_EXAMPLES = 5


@dataclass
class SplitCheck:
    """Completeness of one split: ``expected`` is None when no list exists (VocalSet)."""

    split: str
    expected: int | None
    found: int
    missing: list[str] = field(default_factory=list)  # missing files (all of them)
    unit: str = "files"
    note: str = ""

    @property
    def complete(self) -> bool:
        if self.expected is None:
            return self.found > 0 and not self.missing
        return self.found >= self.expected and not self.missing

    @property
    def n_missing(self) -> int:
        """How many are missing: the expected count less the found one (``missing`` may list fewer, e.g.
        MUSDB's one ``<N more tracks>`` line for tracks it cannot name)."""
        return len(self.missing) if self.expected is None else max(self.expected - self.found, len(self.missing))


@dataclass
class CheckReport:
    task: str
    root: Path
    source_url: str | None
    splits: list[SplitCheck]

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.splits)

    def __str__(self) -> str:
        lines = [f"{self.task}: data under {self.root}"]
        for s in self.splits:
            exp = "?" if s.expected is None else s.expected
            lines.append(f"  {s.split}: {s.found}/{exp} {s.unit}" + (f", {s.n_missing} missing" if s.n_missing else ""))
        return "\n".join(lines)


class SplitDataset:
    """Base loader. Subclasses implement :meth:`expected` (every item a split should have, with the
    path where it is looked for) and set ``layout`` (a human description of the official layout).

    ``allow_partial`` lets tests and demos run on a subset of the data; by default a split that is
    not complete raises :class:`DataNotFoundError`.
    """

    layout: str = ""
    unit: str = "files"

    def __init__(self, card, data_dir: str | os.PathLike | None = None, allow_partial: bool = False):
        self.card = card
        self.data_dir = data_root(data_dir)
        self.root = self.data_dir / card.source.subdir
        self.allow_partial = allow_partial
        self.checks: dict[str, SplitCheck] = {}
        self.expected_items: dict[str, list[Item]] = {}  # per split, from the last scan (``verify`` reuses them)
        self.vocabulary = card.vocabulary()
        self.index = {name: i for i, name in enumerate(self.vocabulary)}

    # -- to implement ---------------------------------------------------------------------
    def expected(self, split: str) -> list[Item]:
        raise NotImplementedError

    def expected_count(self, split: str, expected: list[Item]) -> int | None:
        """Number of units the complete split has (default: every expected item)."""
        return len({it.path for it in expected})

    def finalize(self, split: str, found: list[Item]) -> list[Item]:
        """Turn present items into the task's items (VocalSet: recordings -> 3 s chunks)."""
        return found

    # -- shared ---------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        return list(self.card.splits.names)

    def _scan(self, split: str) -> tuple[list[Item], SplitCheck]:
        if split not in self.splits:
            raise KeyError(f"task {self.card.id!r} has no split {split!r} (splits: {', '.join(self.splits)})")
        expected = self.expected_items[split] = self.expected(split)
        exists: dict[Path, bool] = {}
        for it in expected:
            if it.path not in exists:
                exists[it.path] = os.path.exists(it.path)
        found = [it for it in expected if exists[it.path]]
        missing = sorted(str(p) for p, ok in exists.items() if not ok)
        n_found = len({it.path for it in found})
        check = SplitCheck(split, self.expected_count(split, expected), n_found, missing, self.unit)
        return found, check

    def check(self) -> CheckReport:
        """Per split: expected and found counts, the missing files. Never raises for absent data."""
        rows = []
        for split in self.splits:
            try:
                rows.append(self._scan(split)[1])
            except DataNotFoundError as e:
                rows.append(SplitCheck(split, self.official_count(split), 0, [], self.unit, note=str(e).splitlines()[0]))
        return CheckReport(self.card.id, self.root, self.card.source.url, rows)

    def official_count(self, split: str) -> int | None:
        """Expected count when the on-disk list itself is missing (NSynth, MUSDB); else None."""
        return None

    def items(self, split: str) -> list[Item]:
        """The split's items; raises :class:`DataNotFoundError` if the split is incomplete
        (unless ``allow_partial``) or if nothing at all is found."""
        found, check = self._scan(split)
        if not check.complete and not (self.allow_partial and check.found > 0):
            raise DataNotFoundError(self.missing_message(check))
        self.checks[split] = check
        return self.finalize(split, found)

    def listed(self, split: str) -> dict:
        """For the cache manifest (after :meth:`items`): how many files the official split (or user
        table) lists and which of them are not on disk (``--allow-partial``)."""
        check = self.checks[split]
        return {"n_listed": check.expected if check.expected is not None else check.found + len(check.missing),
                "unit": check.unit, "missing": list(check.missing)}

    def missing_message(self, check: SplitCheck) -> str:
        exp = "an unknown number of" if check.expected is None else str(check.expected)
        examples = ", ".join(check.missing[:1 if not check.found else N_EXAMPLES])
        if not check.found:  # "found 0 of 86 tracks, 86 missing" says it twice
            counts = f"none of the {exp} {check.unit} found" if check.expected is not None else f"no {check.unit} found"
        else:
            counts = f"found {check.found} of {exp} {check.unit}" + (f", {check.n_missing} missing" if check.n_missing else "")
        msg = [
            f"task {self.card.id!r}, split {check.split!r}: data incomplete under {self.root}: {counts}"
            + (f", e.g. {examples}" if examples and not examples.startswith("<") and "/<" not in examples else "")
            + (f" ({check.note})" if check.note else ""),
            f"expected layout: {self.root}/{self.layout}" if self.layout else "",
            f"data source: {self.card.source.url or 'see the task card'}",
            "Set --data-dir (or $MARBLE_DATA_DIR) to the folder holding "
            f"'{self.card.source.subdir}/'; use --allow-partial to run on the files that are present.",
        ]
        return "\n".join(m for m in msg if m)

    def not_found(self, what: Path, detail: str = "") -> DataNotFoundError:
        """An error for a missing index/metadata file (NSynth examples.json, a user CSV...)."""
        return DataNotFoundError(
            f"task {self.card.id!r}: {what} not found{': ' + detail if detail else ''}\n"
            f"expected layout: {self.root}/{self.layout}\n"
            f"data source: {self.card.source.url or 'see the task card'}"
        )

    def label_index(self, name: str, where: str) -> int:
        try:
            return self.index[name]
        except KeyError:
            raise DataFormatError(f"{where}: label {name!r} is not in the vocabulary of task {self.card.id!r}") from None

    def inside(self, rel: str, where: str) -> Path:
        """``root / rel`` for a path read from a metadata file; one that leaves the dataset folder
        (absolute, ``..``, or a link out of it) is refused."""
        if "\x00" in rel:
            raise DataFormatError(f"{where}: path {rel!r} holds a NUL byte, which no file name can; fix the metadata "
                                  "file")
        p = Path(rel)
        if relative_inside(rel, empty=True) is None:
            raise DataFormatError(f"{where}: path {rel!r} points outside the dataset folder {self.root}; metadata paths "
                                  "must be relative to it")
        full = outside(self.root, p)
        if full is not None:
            raise DataFormatError(f"{where}: path {rel!r} is a link to {full}, outside the dataset folder {self.root}; "
                                  "links out of the dataset folder are refused: copy (or hard-link) the file in, or "
                                  "point --data-dir at the folder that holds it")
        return self.root / p


def first_existing(candidates: list[Path]) -> Path:
    """The first candidate that exists, else the first (the preferred, official location)."""
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]
