"""docs/api.md is executable: every ```python block runs, in order, in one namespace, in an empty folder,
and the tidy frame it builds has the documented columns and dtypes and agrees with the result files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_api_doc_blocks_run(tmp_path, monkeypatch):
    for var in ("MARBLE_DATA_DIR", "MARBLE_CACHE_DIR", "MARBLE_RESULTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    code = blocks(DOC)
    assert len(code) >= 4
    ns: dict = {}
    for i, block in enumerate(code):
        try:
            exec(compile(block, f"{DOC.name}[block {i}]", "exec"), ns)
        except Exception as e:  # pragma: no cover - the message names the block
            pytest.fail(f"{DOC} block {i} failed: {type(e).__name__}: {e}\n{block}")

    import pandas as pd

    from marble.results import read_result

    df = ns["df"]
    documented = re.search(r"^# (\['model'.*\])$", DOC.read_text(), flags=re.M).group(1)
    assert df.columns.tolist() == eval(documented)
    assert str(df["layer"].dtype) == "Int64" and df["weighted"].dtype == bool
    assert df.loc[df.weighted, "layer"].isna().all() and df.loc[~df.weighted, "layer"].notna().all()
    # every number in the frame is the result file's number
    for task in ("gtzan", "gs"):
        r = read_result(tmp_path / "results" / "handcrafted" / task / "constrained.json")
        sub = df[df.task == task]
        assert len(sub) == sum(len(row["valid"]) + len(row["test"]) for row in r["sweep"])
        for row in r["sweep"]:
            is_w = row["layer"] == "weighted"
            m = sub[(sub.weighted == is_w) & (sub.lr == row["lr"]) & (is_w | (sub.layer == (0 if is_w else row["layer"])))]
            for split in ("valid", "test"):
                got = m[m.split == split].set_index("metric")["value"].to_dict()
                assert got == pytest.approx({k: (float("nan") if v is None else v) for k, v in row[split].items()},
                                            nan_ok=True)
        chosen = sub[sub.selected & (sub.split == "test")].set_index("metric")["value"].to_dict()
        assert chosen == pytest.approx(r["test"])
    assert isinstance(ns["results"], __import__("marble").Results)
    assert isinstance(ns["per_layer"], pd.Series)


def test_import_marble_exposes_the_api():
    import marble

    for name in ("evaluate", "load_results", "Results"):
        assert name in dir(marble) and callable(getattr(marble, name))
