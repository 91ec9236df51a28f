"""Shared input checks of the metrics: every check raises ``ValueError`` naming the metric input."""

from __future__ import annotations

import numpy as np


class MetricWarning(UserWarning):
    """A metric computed with a caveat (labels left out of a macro average, a constant R² target, tracks without
    beats). A probe sums these up in one line per task (:func:`marble.metrics.notes.summarised`)."""


def as_float_array(x, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``x`` as a finite float64 array of the given number of dimensions."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric array: {e}") from None
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def as_index_array(x, name: str, num_classes: int | None = None) -> np.ndarray:
    """``x`` as a 1-D int64 array of class indices (integral floats are accepted)."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices [N], got shape {arr.shape}")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer class indices, got non-integral values")
    arr = arr.astype(np.int64)
    if num_classes is not None and arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name} holds class indices outside 0..{num_classes - 1} "
            f"(min {arr.min()}, max {arr.max()})"
        )
    elif arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds negative class indices (min {arr.min()})")
    return arr


def check_nonempty(n: int, what: str = "reference") -> None:
    if n == 0:
        raise ValueError(f"{what} is empty: a metric needs at least one item")


def per_track(reference, estimate, check, what: str, single: str) -> tuple[list, list]:
    """Two per-track lists, each track checked by ``check(track, where)``. A bare array (one track
    passed without its list) is an error that says how to wrap it; the lists must be equally long
    and non-empty."""
    out = []
    for name, seq in (("reference", reference), ("estimate", estimate)):
        if isinstance(seq, np.ndarray) and seq.dtype != object:
            raise ValueError(f"{name} must be a list with one {what} per track, got an array of shape "
                             f"{seq.shape} (wrap a single track as [{single}])")
        out.append([check(x, f"{name}[{i}]") for i, x in enumerate(seq)])
    ref, est = out
    if len(ref) != len(est):
        raise ValueError(f"reference has {len(ref)} tracks but estimate has {len(est)}")
    if not ref:
        raise ValueError("reference is empty: a metric needs at least one track")
    return ref, est
