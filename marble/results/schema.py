"""The result JSON schema (``leaderboard/result.schema.json``) and readable validation errors.

The schema file lives at the repository's ``leaderboard/`` folder in a source tree and is shipped
in the wheel as ``marble/reported/``; :func:`data_dir` resolves it the way
``marble.registry.builtin_cards_dir`` resolves the task cards.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_FILE = "result.schema.json"
REFERENCE_CSV = "reference_results.csv"


def data_dir() -> Path:
    """``leaderboard/`` in a source tree, else the installed package data ``marble/reported``."""
    here = Path(__file__).resolve().parent.parent  # .../marble
    source_tree = here.parent / "leaderboard"
    if (source_tree / SCHEMA_FILE).is_file() and (here.parent / "pyproject.toml").exists():
        return source_tree
    try:
        return Path(str(resources.files("marble") / "reported"))
    except Exception:  # pragma: no cover
        return here / "reported"


@functools.lru_cache(maxsize=1)
def result_schema() -> dict:
    path = data_dir() / SCHEMA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: result schema missing from this installation; reinstall marble-benchmark")
    return json.loads(path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(result_schema())


@functools.lru_cache(maxsize=1)
def _compiled():
    """The schema compiled once into a Python function (``fastjsonschema``): ~40x faster than the interpretive
    ``jsonschema`` walk, which took ~40 ms per result (90 % of reading one). It only says valid or not; the
    readable messages of an invalid result come from ``jsonschema`` (:func:`schema_errors`)."""
    import fastjsonschema

    return fastjsonschema.compile(result_schema())


def compiled_valid(result: Any) -> bool:
    """True when the compiled validator accepts ``result``. It is the fast path only: a rejection falls back to
    ``jsonschema``, whose verdict and messages count (``tests/test_results_read.py`` checks that the two agree on
    valid and broken results)."""
    import fastjsonschema

    try:
        _compiled()(result)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def field_path(parts) -> str:
    """``['sweep', 3, 'valid', 'accuracy']`` -> ``sweep[3].valid.accuracy``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def _describe(error) -> tuple[str, str]:
    """(field path, message) for one jsonschema error, naming the missing/extra field itself."""
    path = list(error.absolute_path)
    if error.validator == "required":
        # message: "'x' is a required property"
        name = error.message.split("'")[1] if "'" in error.message else "?"
        return field_path(path + [name]), "missing required field"
    if error.validator == "additionalProperties" and error.validator_value is False:
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return field_path(path + [extra[0]] if extra else path), f"unexpected field (allowed here: {allowed})"
    if error.validator in ("anyOf", "oneOf") and error.context:
        # report the most specific branch that failed (a null alternative is rarely the intent)
        best = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
        if best.validator != "type" or len(best.absolute_path) > len(error.absolute_path):
            return _describe(best)
        kinds = [e.schema.get("type") or e.schema.get("const") for e in error.context]
        return field_path(path), f"{error.instance!r} is not valid here (expected {' or '.join(map(str, kinds))})"
    return field_path(path), error.message


def schema_errors(result: Any) -> list[str]:
    """``["field 'test.accuracy': 'abc' is not of type 'number'", ...]`` (empty when valid)."""
    if compiled_valid(result):
        return []
    errors = sorted(_validator().iter_errors(result), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    out = []
    for e in errors:
        where, msg = _describe(e)
        line = f"field '{where}': {msg}"
        if line not in out:
            out.append(line)
    return out
