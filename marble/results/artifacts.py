"""The files a result carries beside its JSON: the selected probe's per-item test outputs and the probe itself.

``<results>/<model>/<task>/<track>.json`` is accompanied by

* ``<track>.test-outputs.safetensors`` (:class:`TestOutputs`): per scored item (file; song for GS; track for a
  frame task) its key, the reference and what the metrics consume (class probabilities, tag scores, regression
  values; beat times per track), or for MUSDB, whose waveforms are too large to ship, the per-track scores its
  metrics average, so anyone can recompute the reported test metrics and compare two models item by item
  (``marble compare``); the layout is in ``docs/leaderboard.md``;
* ``<track>.probe.safetensors``: the selected probe (head weights, layer or weighted-sum weights, vocabulary,
  card version; :mod:`marble.probe.shipped`), which ``marble predict`` applies to new audio.

The result records each file's name and sha256 under ``artifacts`` and the writer's seal covers them, so a
sidecar swapped after writing shows. :func:`artifact_errors` is the check behind ``marble leaderboard check``:
every recorded file exists with its hash, and the reported test metrics recompute **exactly** (the same metric
function on the same arrays) from the test outputs.

safetensors, not ``.npz``: no pickle and no zip, a fixed byte layout (the same outputs give the same sha256), and
the format the probe uses too. Keys and the vocabulary live in the header's metadata (strings).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OUTPUTS_FORMAT = "marble-test-outputs/1"
#: artifact kind -> file name suffix after ``<track>``
SUFFIXES = {"test_outputs": ".test-outputs.safetensors", "probe": ".probe.safetensors"}
#: unit of a scored item, by how the card scores: per file, per song (group rules), per track (frame tasks)
UNITS = ("file", "song", "track")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact_name(track: str, kind: str) -> str:
    return f"{track}{SUFFIXES[kind]}"


def entry(track: str, kind: str, data: bytes, **extra) -> dict:
    """The ``artifacts.<kind>`` record of a sidecar: its file name beside the result and its sha256."""
    return {"file": artifact_name(track, kind), "sha256": sha256_bytes(data), **extra}


def sidecars(track: str, outputs: "TestOutputs", probe=None) -> tuple[dict[str, bytes], dict[str, dict]]:
    """``(blobs, artifacts)`` of a result's sidecars: the test outputs and the shipped probe (a
    :class:`marble.probe.shipped.ShippedProbe`, when there is one) as bytes, and their ``artifacts`` records (name,
    sha256; the test outputs' unit and item count). Every trainer records them here, so they read alike."""
    blobs = {"test_outputs": outputs.to_bytes(), **({} if probe is None else {"probe": probe.to_bytes()})}
    artifacts = {k: entry(track, k, b) for k, b in blobs.items()}
    artifacts["test_outputs"].update(unit=outputs.unit, n=len(outputs))
    return blobs, artifacts


def artifact_path(result_path: str | os.PathLike, result: dict, kind: str) -> Path | None:
    """Where ``result``'s sidecar of ``kind`` lies (beside the JSON); None when the result records none."""
    rec = (result.get("artifacts") or {}).get(kind)
    return None if rec is None else Path(result_path).parent / rec["file"]


def write_artifacts(result_path: str | os.PathLike, result: dict, blobs: dict[str, bytes]) -> list[Path]:
    """Write the sidecars ``blobs`` (kind -> bytes) beside ``result_path`` atomically, each under the name and
    with the hash ``result['artifacts']`` records (written before the JSON, so a result never names a file
    that is not there)."""
    from marble.io import atomic_write_bytes

    out = []
    for kind, data in blobs.items():
        rec = (result.get("artifacts") or {}).get(kind)
        if rec is None or rec["sha256"] != sha256_bytes(data):
            raise ValueError(f"artifact {kind!r}: the result does not record these bytes (artifacts.{kind})")
        p = Path(result_path).parent / rec["file"]
        atomic_write_bytes(p, data)
        out.append(p)
    return out


def read_artifact(result_path: str | os.PathLike, result: dict, kind: str) -> bytes:
    """The bytes of a recorded sidecar, checked against the sha256 the (sealed) result records."""
    from marble.results import ResultError

    rec = (result.get("artifacts") or {}).get(kind)
    if rec is None:
        raise ResultError(result_path, [f"field 'artifacts.{kind}': the result records no {kind.replace('_', ' ')} "
                                        "file (a published number, or a result of an older marble: re-run `marble "
                                        "probe`)"])
    p = Path(result_path).parent / rec["file"]
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ResultError(result_path, [f"field 'artifacts.{kind}': {p} is missing; a result travels with the files "
                                        "it records (copy them beside it)"]) from None
    actual = sha256_bytes(data)
    if actual != rec["sha256"]:
        raise ResultError(result_path, [f"field 'artifacts.{kind}.sha256': {p} has sha256 {actual[:12]}..., the "
                                        f"result records {rec['sha256'][:12]}...; the file was changed or replaced "
                                        "after marble wrote it"])
    return data


#: the one metadata key marble writes: safetensors keeps metadata in a hash map whose order changes from call to
#: call, so several keys would give the same content different bytes (and sha256s); one JSON string does not
META_KEY = "marble"


def to_safetensors(arrays: dict, meta: dict) -> bytes:
    """numpy arrays or torch tensors + a JSON-able ``meta`` -> safetensors bytes, the same bytes for the same content."""
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    if any(hasattr(v, "detach") for v in arrays.values()):
        from safetensors.torch import save
    else:
        from safetensors.numpy import save
    return save(arrays, metadata={META_KEY: text})


def from_safetensors(data: bytes, fmt: str, where: str, *, torch: bool = False) -> tuple[dict, dict]:
    """``(arrays, meta)`` of safetensors bytes written by :func:`to_safetensors` in format ``fmt`` (numpy arrays,
    or torch tensors with ``torch``); ValueError naming ``where`` otherwise."""
    if torch:
        from safetensors.torch import load
    else:
        from safetensors.numpy import load
    try:
        arrays, meta = load(data), safetensors_metadata(data)
    except Exception as e:
        raise ValueError(f"{where}: not a safetensors file written by marble ({type(e).__name__}: {e})") from None
    if meta.get("format") != fmt:
        raise ValueError(f"{where}: format {meta.get('format')!r}, expected {fmt!r}")
    return arrays, meta


def safetensors_metadata(data: bytes) -> dict:
    """marble's metadata of safetensors bytes (the format: an 8-byte little-endian header length, then the JSON
    header; safetensors' own readers want a file for the metadata)."""
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 + n:
        raise ValueError("truncated safetensors header")
    raw = json.loads(data[8:8 + n]).get("__metadata__") or {}
    return json.loads(raw[META_KEY]) if META_KEY in raw else {}


# ------------------------------------------------------------------------------------------------
# Per-item test outputs


@dataclass
class TestOutputs:
    """The selected probe's test outputs: ``keys[i]`` (a file uid, or a song for GS), ``reference[i]`` (class
    index / multi-hot row / target values) and ``estimate[i]`` (class probabilities or song scores / tag
    scores / regression values, float32): exactly what the card's metrics consume.

    **Scores** (``reference`` None; MUSDB, whose metrics consume waveforms): ``estimate[i, j]`` is item ``i``'s
    score of ``vocabulary[j]`` (each test track's global SDR per source, float64) and ``extra`` holds further
    per-item score arrays (``museval``); the card's metrics are those of
    ``marble.metrics.separation.FROM_TRACK_SCORES`` on them."""

    __test__ = False  # not a pytest class

    keys: list[str]
    reference: np.ndarray
    estimate: np.ndarray
    unit: str = "file"
    vocabulary: tuple[str, ...] = ()
    group_rule: str | None = None
    #: frame tasks: the feature frame rate that metrics scored at frame resolution round the references to
    frame_rate: float | None = None
    #: scores: further per-item score arrays, name -> [items, ...] (MUSDB: ``museval``, absent when not computed)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.keys = [str(k) for k in self.keys]
        self.estimate = _items(self.estimate)
        self.reference = None if self.reference is None else _items(self.reference)
        self.extra = {str(k): np.asarray(v) for k, v in sorted((self.extra or {}).items())}
        if self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r} is not one of {', '.join(UNITS)}")
        if self.extra and self.reference is not None:
            raise ValueError("extra per-item arrays go with per-item scores (reference None)")
        if self.reference is None and (self.estimate.dtype == object or self.estimate.ndim != 2):
            raise ValueError(f"per-item scores are a dense [items, {len(self.vocabulary)}] array, got "
                             f"{'ragged items' if self.estimate.dtype == object else self.estimate.shape}")
        n_ref = len(self.keys) if self.reference is None else len(self.reference)
        short = any(len(v) != len(self.keys) for v in self.extra.values())
        if short or not len(self.keys) == n_ref == len(self.estimate):
            raise ValueError(f"{len(self.keys)} keys, {n_ref} references, {len(self.estimate)} estimates"
                             + "".join(f", {len(v)} {k}" for k, v in self.extra.items()))
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("keys repeat: each scored item appears once")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def ragged(self) -> bool:
        """One 1-D array of its own length per item (beat times per track), held in an object array."""
        return self.reference is not None and self.reference.dtype == object

    @property
    def scores(self) -> bool:
        """Per-item scores rather than predictions (no reference; the class docstring)."""
        return self.reference is None

    def metric_fn(self, name: str, metrics: dict | None = None):
        """Metric ``name`` as a function of :meth:`metric_inputs` (``marble.metrics.METRICS`` unless ``metrics``;
        of per-item scores, ``marble.metrics.separation.FROM_TRACK_SCORES``)."""
        if self.scores:
            from marble.metrics.separation import FROM_TRACK_SCORES

            return FROM_TRACK_SCORES[name][1]
        from marble.metrics import METRICS

        return (metrics or METRICS)[name]

    def metric_inputs(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(reference, estimate)`` as metric ``name`` consumes them: a metric scored at frame resolution
        (``marble.metrics.beat.FRAME_RESOLUTION_METRICS``) gets the references rounded to ``frame_rate``; of
        per-item scores, ``(None, the score array the metric reads)`` (None when the file has none: museval not
        computed)."""
        from marble.metrics.beat import FRAME_RESOLUTION_METRICS, at_frame_resolution

        if self.scores:
            from marble.metrics.separation import FROM_TRACK_SCORES

            which = FROM_TRACK_SCORES[name][0]
            return None, self.estimate if which == "estimate" else self.extra.get(which)
        if self.frame_rate is not None and name in FRAME_RESOLUTION_METRICS:
            return _items(at_frame_resolution(self.reference, self.frame_rate)), self.estimate
        return self.reference, self.estimate

    def metrics(self, names, metrics: dict | None = None) -> dict[str, float | None]:
        """The card's metrics recomputed from the stored arrays (:meth:`metric_fn`); NaN comes back as None, as
        results store it, and so does a metric whose scores the file does not hold (museval not computed)."""
        import warnings

        out = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the run already warned (labels without positives, ...)
            for n in names:
                ref, est = self.metric_inputs(n)
                fn = self.metric_fn(n, metrics)
                v = math.nan if est is None else float(fn(ref, est, labels=list(self.vocabulary)))
                out[n] = v if math.isfinite(v) else None
        return out

    def to_bytes(self) -> bytes:
        meta = {"format": OUTPUTS_FORMAT, "unit": self.unit, "keys": self.keys, "vocabulary": list(self.vocabulary),
                "group_rule": self.group_rule}
        if self.frame_rate is not None:
            meta["frame_rate"] = float(self.frame_rate)
        if self.scores:  # tensors estimate [items, vocabulary] and each extra array, no reference
            meta["layout"] = "scores"
            return to_safetensors({"estimate": np.ascontiguousarray(self.estimate),
                                   **{k: np.ascontiguousarray(v) for k, v in self.extra.items()}}, meta)
        if self.ragged:  # each array flat, item i at values[offsets[i]:offsets[i + 1]]
            meta.update(layout="ragged", reference_dtype=_dtype(self.reference), estimate_dtype=_dtype(self.estimate))
            arrays = {}
            for name, x in (("reference", self.reference), ("estimate", self.estimate)):
                arrays[name], arrays[f"{name}_offsets"] = _flatten(x, meta[f"{name}_dtype"])
            return to_safetensors(arrays, meta)
        ref = self.reference
        if ref.dtype == bool:
            ref = ref.astype(np.uint8)
        meta["reference_dtype"] = str(self.reference.dtype)
        return to_safetensors({"reference": np.ascontiguousarray(ref), "estimate": np.ascontiguousarray(self.estimate)},
                              meta)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "test outputs") -> "TestOutputs":
        arrays, meta = from_safetensors(data, OUTPUTS_FORMAT, where)
        extra = {}
        if meta.get("layout") == "scores":
            ref, est = None, arrays.pop("estimate")
            extra = arrays
        elif meta.get("layout") == "ragged":
            ref, est = (_unflatten(arrays[n], arrays[f"{n}_offsets"], len(meta["keys"]), where)
                        for n in ("reference", "estimate"))
        else:
            ref, est = arrays["reference"], arrays["estimate"]
            if meta.get("reference_dtype") == "bool":
                ref = ref.astype(bool)
        return cls(meta["keys"], ref, est, meta["unit"], tuple(meta.get("vocabulary") or ()), meta.get("group_rule"),
                   meta.get("frame_rate"), extra)


def _items(x) -> np.ndarray:
    """One entry per item: a numeric array stays as it is (dense: item ``i`` is row ``i``); a list of 1-D arrays
    (beat times per track; lengths differ) becomes an object array of 1-D arrays (ragged), so item ``i`` is
    ``x[i]`` and fancy indexing works either way. A list of scalars is dense."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        return x
    parts = [np.asarray(a) for a in x]
    if parts and all(a.ndim == 0 for a in parts):
        return np.asarray(parts)
    out = np.empty(len(parts), dtype=object)
    for i, a in enumerate(parts):
        if a.ndim != 1:
            raise ValueError(f"item {i}: a ragged item is a 1-D array, got shape {a.shape}")
        out[i] = a
    return out


def _dtype(x: np.ndarray) -> str:
    kinds = {str(a.dtype) for a in x} or {"float64"}
    if len(kinds) != 1:
        raise ValueError(f"ragged items of mixed dtypes {sorted(kinds)}")
    return kinds.pop()


def _flatten(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(x) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in x])
    flat = np.concatenate([np.asarray(a, dtype=dtype) for a in x]) if len(x) else np.zeros(0, dtype=dtype)
    return np.ascontiguousarray(flat), offsets


def _unflatten(flat: np.ndarray, offsets: np.ndarray, n: int, where: str) -> np.ndarray:
    if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{where}: offsets do not index {n} items of the flat array of {len(flat)} values")
    return _items([flat[offsets[i]:offsets[i + 1]] for i in range(n)])


def read_test_outputs(result_path: str | os.PathLike, result: dict) -> TestOutputs:
    """A result's test outputs, hash-checked (:class:`marble.results.ResultError` naming the file otherwise)."""
    from marble.results import ResultError

    data = read_artifact(result_path, result, "test_outputs")
    try:
        return TestOutputs.from_bytes(data, str(artifact_path(result_path, result, "test_outputs")))
    except (ValueError, KeyError) as e:
        raise ResultError(result_path, [f"field 'artifacts.test_outputs': {e}"]) from None


def artifact_errors(result_path: str | os.PathLike, result: dict, card) -> list[str]:
    """Problems with the sidecars a result records (empty when there are none or all hold): each file present
    with its recorded sha256; the test metrics recomputed from the test outputs equal ``result['test']``
    exactly; the outputs hold one item per scored file (song) of the test split."""
    from marble.results import ResultError

    recs = result.get("artifacts") or {}
    errors: list[str] = []
    for kind in recs:
        if kind == "test_outputs":
            continue
        try:
            read_artifact(result_path, result, kind)
        except ResultError as e:
            errors += e.errors
    if "test_outputs" not in recs:
        return errors
    try:
        outs = read_test_outputs(result_path, result)
    except ResultError as e:
        return errors + e.errors
    rec = recs["test_outputs"]
    if rec.get("n") is not None and rec["n"] != len(outs):
        errors.append(f"field 'artifacts.test_outputs.n': {rec['n']} but the file holds {len(outs)} items")
    scored = (((result.get("data") or {}).get("splits") or {}).get("test") or {}).get("scored")
    if outs.unit in ("file", "track") and isinstance(scored, int) and scored != len(outs):
        errors.append(f"field 'artifacts.test_outputs': {len(outs)} items but data.splits.test.scored is {scored}")
    names = [n for n in card.metrics.names if n in result["test"]]
    try:
        recomputed = outs.metrics(names)
    except (ValueError, KeyError, TypeError) as e:
        return errors + [f"field 'artifacts.test_outputs': the metrics cannot be computed from it ({e})"]
    for n in names:
        want, got = result["test"][n], recomputed[n]
        if not (want is None and got is None) and (want is None or got is None or float(want) != got):
            errors.append(f"field 'test.{n}': {want} but the test outputs ({rec['file']}) give {got}; the reported "
                          "score does not recompute from the per-item outputs")
    return errors
