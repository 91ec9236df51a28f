"""Clip classification metrics: accuracy (multiclass) and macro ROC-AUC / AP (multilabel).

Inputs, per evaluated file (after window logits are averaged, PROTOCOL §2):

* multiclass: ``reference`` int class indices ``[N]``; ``estimate`` scores ``[N, C]`` (argmax is
  the prediction; ties go to the lowest index) or predicted indices ``[N]``.
* multilabel: ``reference`` binary ``[N, C]`` (0/1 or bool); ``estimate`` scores ``[N, C]``
  (logits or probabilities: both metrics depend only on the per-label ranking).

ROC-AUC and AP are computed here in float64 (rank statistic with tied scores counted 1/2; AP as
the step-wise sum ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds), which equals
scikit-learn's ``roc_auc_score`` / ``average_precision_score`` per label; the tests check that.

Labels without a positive or without a negative in the reference have no defined ROC-AUC (and
AP is degenerate): they are **excluded from the macro average** with a ``UserWarning`` that
names how many and which; if no label remains a ``ValueError`` is raised. (scikit-learn would
raise for ROC-AUC and return 0 for AP; excluding keeps the two metrics on the same labels.)
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata

from marble.metrics._common import MetricWarning, as_float_array, as_index_array, check_nonempty


def validate_multiclass(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    """Check a multiclass pair; returns (reference indices [N], predicted indices [N])."""
    est = np.asarray(estimate)
    if est.ndim == 2:
        scores = as_float_array(est, "estimate (class scores [N, C])", 2)
        if scores.shape[1] == 0:
            raise ValueError("estimate has 0 classes (shape [N, 0])")
        ref = as_index_array(reference, "reference", num_classes=scores.shape[1])
        pred = np.argmax(scores, axis=1) if scores.shape[0] else np.zeros(0, np.int64)
    elif est.ndim == 1:
        ref = as_index_array(reference, "reference")
        pred = as_index_array(est, "estimate (predicted class indices [N])")
    else:
        raise ValueError(f"estimate must be class scores [N, C] or class indices [N], got shape {est.shape}")
    if ref.shape[0] != pred.shape[0]:
        raise ValueError(f"reference has {ref.shape[0]} items but estimate has {pred.shape[0]}")
    check_nonempty(ref.shape[0])
    return ref, pred


def accuracy(reference, estimate, *, labels=None) -> float:
    """Fraction of items whose predicted class (argmax of the scores) is the reference class."""
    ref, pred = validate_multiclass(reference, estimate)
    return float(np.mean(ref == pred))


def validate_multilabel(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    """Check a multilabel pair; returns (reference bool [N, C], estimate float64 [N, C])."""
    ref = np.asarray(reference)
    if ref.ndim != 2:
        raise ValueError(f"reference must be binary [N, C], got shape {ref.shape}")
    if ref.dtype.kind not in "biuf":
        raise ValueError(f"reference must be binary (0/1 or bool), got dtype {ref.dtype}")
    if ref.size and not np.all((ref == 0) | (ref == 1)):
        raise ValueError("reference must be binary: found values other than 0 and 1")
    est = as_float_array(estimate, "estimate (label scores [N, C])", 2)
    if est.shape != ref.shape:
        raise ValueError(f"reference shape {ref.shape} and estimate shape {est.shape} differ")
    check_nonempty(ref.shape[0])
    if ref.shape[1] == 0:
        raise ValueError("reference has 0 labels (shape [N, 0])")
    return ref.astype(bool), est


def scorable_labels(reference: np.ndarray, labels=None, metric: str = "metric") -> np.ndarray:
    """Boolean mask of the labels with both a positive and a negative example; warns about the
    others and raises if none is left (see the module docstring)."""
    pos = reference.sum(axis=0)
    keep = (pos > 0) & (pos < reference.shape[0])
    dropped = np.flatnonzero(~keep)
    if dropped.size:
        names = [str(labels[i]) if labels is not None and len(labels) == reference.shape[1] else str(i) for i in dropped]
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        if not keep.any():
            raise ValueError(
                f"{metric}: none of the {reference.shape[1]} labels has both a positive and a negative "
                "example in the reference, so the macro average is undefined"
            )
        warnings.warn(
            f"{metric}: {dropped.size} of {reference.shape[1]} labels have no positive or no negative "
            f"example in the reference and are excluded from the macro average ({shown})",
            MetricWarning,
            stacklevel=3,
        )
    return keep


def _roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney form of the ROC-AUC: P(score of a positive > score of a negative), ties 1/2."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Step-wise AP over distinct score thresholds (no interpolation)."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1]  # end of each threshold group
    tp = np.cumsum(y_sorted)[last_of_tie].astype(np.float64)
    n_pred = last_of_tie + 1.0
    precision = tp / n_pred
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc_macro(reference, estimate, *, labels=None) -> float:
    """Unweighted mean over labels of the per-label ROC-AUC."""
    ref, est = validate_multilabel(reference, estimate)
    keep = scorable_labels(ref, labels, "roc_auc_macro")
    return float(np.mean([_roc_auc(ref[:, j], est[:, j]) for j in np.flatnonzero(keep)]))


def ap_macro(reference, estimate, *, labels=None) -> float:
    """Unweighted mean over labels of the per-label average precision."""
    ref, est = validate_multilabel(reference, estimate)
    keep = scorable_labels(ref, labels, "ap_macro")
    return float(np.mean([_average_precision(ref[:, j], est[:, j]) for j in np.flatnonzero(keep)]))
