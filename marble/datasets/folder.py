"""A user dataset: audio files + one metadata table (CSV, or TSV when the name ends in .tsv).

Metadata file: ``card.source.metadata`` (else ``card.splits.source``), relative to the dataset root
``<data_dir>/<card.source.subdir>``. Columns (names from ``[source]``): ``path`` (audio path
relative to the root), ``label``, ``split`` (train/valid/test; ``val``, ``validation`` and ``dev``
mean valid). Labels by ``prediction``:

* multiclass: the label column holds one vocabulary name;
* multilabel: names joined by ``label_separator`` (an empty cell = no label);
* regression: if every vocabulary name is a column, those columns (one float each); otherwise the
  label column holds ``len(vocabulary)`` floats joined by ``label_separator``, in vocabulary order.

Every problem (missing column, unknown label, bad number, unknown split) names the file and row.
"""

from __future__ import annotations

import pandas as pd

from marble.datasets.base import DataFormatError, Item
from marble.datasets.common import SplitDataset

SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid", "test": "test"}


class Folder(SplitDataset):
    @property
    def metadata_path(self):
        return self.root / (self.card.source.metadata or self.card.splits.source)

    @property
    def layout(self) -> str:
        s = self.card.source
        return f"{self.metadata_path.name} (columns {s.path_column}, {s.label_column}, {s.split_column}) + the audio files it names"

    def table(self) -> pd.DataFrame:
        path = self.metadata_path
        if not path.exists():
            raise self.not_found(path, "the dataset's metadata table")
        sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        try:
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the table as UTF-8") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise DataFormatError(f"{path}: malformed table ({str(e).strip()}); every row needs exactly the header's "
                                  f"{'tab' if sep == chr(9) else 'comma'}-separated fields") from None
        df.columns = [str(c).strip() for c in df.columns]
        if df.empty:
            raise DataFormatError(f"{path}: the table has a header but no rows; list one audio file per row "
                                  f"({self.card.source.path_column},{self.card.source.label_column},"
                                  f"{self.card.source.split_column})")
        import csv

        with open(path, newline="", encoding="utf-8") as f:  # pandas pads a short row silently
            for line, row in enumerate(csv.reader(f, delimiter=sep), start=1):
                if row and len(row) < len(df.columns):
                    raise DataFormatError(f"{path}: row {line}: missing field(s) ({len(row)} values, the header has "
                                          f"{len(df.columns)} columns)")
        s = self.card.source
        needed = [s.path_column, s.split_column]
        regression_cols = self.card.prediction == "regression" and all(v in df.columns for v in self.vocabulary)
        if not regression_cols:
            needed.append(s.label_column)
        lacking = [c for c in needed if c not in df.columns]
        if lacking:
            raise DataFormatError(f"{path}: missing column(s) {lacking} (columns: {list(df.columns)}); set [source] path_column/label_column/split_column in {self.card.path}")
        return df

    def parse_label(self, row, line: int):
        s, where = self.card.source, f"{self.metadata_path}: row {line}"
        kind = self.card.prediction
        if kind == "multiclass":
            return self.label_index(row[s.label_column].strip(), where)
        if kind == "multilabel":
            names = [t.strip() for t in row[s.label_column].split(s.label_separator) if t.strip()]
            return sorted({self.label_index(t, where) for t in names})
        if kind == "regression":
            if all(v in row.index for v in self.vocabulary):
                raw = [row[v] for v in self.vocabulary]
            else:
                raw = [t for t in row[s.label_column].split(s.label_separator)]
                if len(raw) != len(self.vocabulary):
                    raise DataFormatError(f"{where}: {len(raw)} values in {row[s.label_column]!r}, expected {len(self.vocabulary)} ({', '.join(self.vocabulary)}) joined by {s.label_separator!r}")
            try:
                return [float(v) for v in raw]
            except ValueError:
                raise DataFormatError(f"{where}: regression targets {raw!r} are not numbers") from None
        raise ValueError(f"{self.card.path}: a folder dataset supports multiclass, multilabel or regression, not {kind!r}")

    def expected(self, split: str) -> list[Item]:
        s = self.card.source
        out = []
        for i, (_, row) in enumerate(self.table().iterrows()):
            line = i + 2  # header is line 1
            raw = row[s.split_column].strip().lower()
            if raw not in SPLIT_ALIASES:
                raise DataFormatError(f"{self.metadata_path}: row {line}: split {row[s.split_column]!r} is not train/valid/test")
            if SPLIT_ALIASES[raw] != split:
                continue
            rel = row[s.path_column].strip()
            out.append(Item(uid=rel, path=self.inside(rel, f"{self.metadata_path}: row {line}"),
                            label=self.parse_label(row, line)))
        return out
