"""Regression metrics (EMO): coefficient of determination per target dimension.

``reference`` and ``estimate`` are float ``[N, D]`` (``[N]`` is read as ``D = 1``); ``labels``
names the columns (the EMO card's vocabulary is ``["arousal", "valence"]``) and is how
``r2_valence`` / ``r2_arousal`` find their column, so a card may order its targets freely.

R2 of one dimension is ``1 - sum (y - y_hat)^2 / sum (y - mean y)^2`` in float64, as
``sklearn.metrics.r2_score``; ``r2_mean`` is the unweighted mean over dimensions
(``multioutput="uniform_average"``). A constant reference dimension has no defined R2: like
scikit-learn (``force_finite=True``) it scores 1.0 when predicted exactly and 0.0 otherwise, with a
``UserWarning``.
"""

from __future__ import annotations

import warnings

import numpy as np

from marble.metrics._common import MetricWarning, as_float_array


def validate(reference, estimate, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Check a regression pair; returns float64 ``[N, D]`` arrays."""
    ref = as_float_array(reference, "reference (targets [N, D])", (1, 2))
    est = as_float_array(estimate, "estimate (predictions [N, D])", (1, 2))
    ref = ref[:, None] if ref.ndim == 1 else ref
    est = est[:, None] if est.ndim == 1 else est
    if ref.shape != est.shape:
        raise ValueError(f"reference shape {ref.shape} and estimate shape {est.shape} differ")
    if ref.shape[0] < 2:
        raise ValueError(f"R2 needs at least 2 items, got {ref.shape[0]}")
    if ref.shape[1] == 0:
        raise ValueError("reference has 0 target dimensions (shape [N, 0])")
    if labels is not None and len(labels) != ref.shape[1]:
        raise ValueError(f"labels names {len(labels)} dimensions ({list(labels)}) but the arrays have {ref.shape[1]}")
    return ref, est


def r2_per_dimension(reference, estimate, *, labels=None) -> np.ndarray:
    """R2 of each target dimension, float64 ``[D]``."""
    ref, est = validate(reference, estimate, labels)
    ss_res = np.sum((ref - est) ** 2, axis=0)
    ss_tot = np.sum((ref - ref.mean(axis=0)) ** 2, axis=0)
    out = np.empty(ref.shape[1])
    const = ss_tot == 0
    if const.any():
        names = [str(labels[i]) if labels is not None else str(i) for i in np.flatnonzero(const)]
        warnings.warn(
            f"R2: reference dimension(s) {', '.join(names)} are constant; R2 is undefined there and "
            "scored 1.0 if predicted exactly, else 0.0 (as scikit-learn)",
            MetricWarning,
            stacklevel=2,
        )
        out[const] = np.where(ss_res[const] == 0, 1.0, 0.0)
    out[~const] = 1.0 - ss_res[~const] / ss_tot[~const]
    return out


def r2_mean(reference, estimate, *, labels=None) -> float:
    """Mean over target dimensions of the per-dimension R2."""
    return float(np.mean(r2_per_dimension(reference, estimate, labels=labels)))


def _r2_of(name: str, reference, estimate, labels) -> float:
    if labels is None:
        raise ValueError(f"r2_{name} needs labels naming the target columns, e.g. labels=['arousal', 'valence']")
    names = [str(x).lower() for x in labels]
    if names.count(name) != 1:
        raise ValueError(f"r2_{name}: labels {list(labels)} must name exactly one column {name!r}")
    return float(r2_per_dimension(reference, estimate, labels=labels)[names.index(name)])


def r2_valence(reference, estimate, *, labels=None) -> float:
    """R2 of the column named "valence" in ``labels``."""
    return _r2_of("valence", reference, estimate, labels)


def r2_arousal(reference, estimate, *, labels=None) -> float:
    """R2 of the column named "arousal" in ``labels``."""
    return _r2_of("arousal", reference, estimate, labels)
