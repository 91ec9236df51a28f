"""Bootstrap resamples of the scored items, and every card metric recomputed on each resample.

**Which items a resample draws.** Resample ``b`` of ``n`` items is the ``b``-th call
``rng.integers(0, n, size=n)`` of ``rng = numpy.random.default_rng(seed)`` (:func:`indices`): ``n`` item
positions drawn with replacement. Two models compared on the same items use the same draws (a *paired*
bootstrap), so what the items share (hard songs, easy songs) cancels out of the difference.

**The metric of a resample** is the card's metric of the drawn items: for a ranking metric (ROC-AUC, AP) the
ranking is redone on the resample, for a pooled one (pooled beat F) the counts are pooled over the drawn tracks;
no metric is approximated by a mean of per-item scores unless it *is* one. To be fast over 1,000 resamples the
metrics below are evaluated for a block of resamples at once from item **weights** (how often each item was
drawn), which is the same number:

* ``accuracy``, ``key_weighted_score``, ``beat_f_measure``: the mean of the per-item score (correct / mir_eval's
  weighted key score / mir_eval's beat F of the track) over the draws;
* ``beat_f_measure_pooled``: per track the matched, estimated and reference beats, counted once
  (``marble.metrics.beat.track_counts``); a resample's F is that of the counts summed over its draws (int64), through
  the metric's own formula (``marble.metrics.beat.pooled_f``): bit-identical to the metric on the drawn tracks;
* ``roc_auc_macro``: per label, sort the scores once; a resample's ROC-AUC is the weighted Mann-Whitney
  statistic ``sum_pos w_i (W_neg below s_i + W_neg tied with s_i / 2) / (W_pos W_neg)`` (ties count 1/2, as
  ``marble.metrics.classification``), labels without a positive or a negative *in the resample* left out of the
  macro mean, as the metric leaves them out;
* ``ap_macro``: per label, the step-wise AP over the distinct thresholds with weighted true positives and counts.

Every other metric (R²; MUSDB's SDRs from the per-track scores its results ship) is computed by calling the metric
itself on the gathered items of each resample. The tests check each fast path against the metric (and scikit-learn)
on the gathered arrays.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterator, Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 1234
BLOCK = 100  # resamples evaluated together (memory: BLOCK x n weights per label)


def indices(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
            block: int = BLOCK) -> Iterator[np.ndarray]:
    """Blocks ``[b, n]`` of resampled item positions (see the module docstring for the exact draws)."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, block):
        yield np.stack([rng.integers(0, n, size=n) for _ in range(min(block, resamples - start))])


def weights(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of the ``n`` items is drawn in each resample of ``idx`` [b, n] -> float64 [b, n]."""
    b = idx.shape[0]
    flat = (idx + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


# ------------------------------------------------------------------------------------------------
# fast paths


def _per_item_mean(per_item: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda idx: per_item[idx].mean(axis=1)


def _accuracy(reference, estimate, labels) -> Callable:
    from marble.metrics.classification import validate_multiclass

    ref, pred = validate_multiclass(reference, estimate)
    return _per_item_mean((ref == pred).astype(np.float64))


def _key_score(reference, estimate, labels) -> Callable:
    from marble.metrics.key import item_scores

    return _per_item_mean(item_scores(reference, estimate, labels=labels))


def _beat_f(reference, estimate, labels) -> Callable:
    from marble.metrics.beat import track_scores

    return _per_item_mean(track_scores(reference, estimate)[0])


def _beat_f_pooled(reference, estimate, labels) -> Callable:
    from marble.metrics.beat import pooled_f, track_counts

    counts = track_counts(reference, estimate)
    return lambda idx: pooled_f(counts[idx].sum(axis=1))


class _Ranked:
    """Weighted ROC-AUC and AP of every label of a multilabel set, for a block of resamples at once.

    Per label the scores are sorted once: for each positive item, the negatives strictly below its score
    (``ln``), at or below it (``rn``) and the positives strictly below it (``lp``). For a resample with item
    weights ``w`` and ``Cn`` / ``Cp`` the cumulative weights of the sorted negatives / positives:

    * ROC-AUC = ``sum_pos w_i (Cn[ln_i] + (Cn[rn_i] - Cn[ln_i]) / 2) / (W_pos W_neg)`` (ties count 1/2);
    * AP = ``sum_pos w_i TP(>= s_i) / N(>= s_i) / W_pos`` with ``TP(>= s) = W_pos - Cp[lp_i]`` and
      ``N(>= s) = TP(>= s) + W_neg - Cn[ln_i]``: the step-wise AP, whose precision at a threshold counts every
      item scored at least as high.

    A label whose resample holds no positive or no negative is NaN there (left out of the macro mean)."""

    def __init__(self, reference: np.ndarray, estimate: np.ndarray):
        self.n = reference.shape[0]
        self.labels = []
        for j in range(reference.shape[1]):
            y, s = reference[:, j].astype(bool), estimate[:, j]
            pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
            neg_sorted = neg[np.argsort(s[neg], kind="mergesort")]
            pos_sorted = pos[np.argsort(s[pos], kind="mergesort")]
            sn, sp = s[neg_sorted], s[pos_sorted]
            self.labels.append((pos, neg_sorted, pos_sorted, np.searchsorted(sn, s[pos], "left"),
                                np.searchsorted(sn, s[pos], "right"), np.searchsorted(sp, s[pos], "left")))
        self._last: tuple | None = None

    def block(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(roc [b, C], ap [b, C])`` of the resamples ``idx`` (the last block is kept: both metrics share it)."""
        if self._last is not None and self._last[0] is idx:
            return self._last[1]
        # counts (and their running sums, at most n) in int32: half the memory traffic of int64; the products
        # over the positives in int64
        W = weights(idx, self.n).astype(np.int32)
        b = W.shape[0]
        roc = np.full((b, len(self.labels)), np.nan)
        ap = np.full((b, len(self.labels)), np.nan)
        zero = np.zeros((b, 1), np.int32)
        for j, (pos, neg_sorted, pos_sorted, ln, rn, lp) in enumerate(self.labels):
            if not len(pos) or not len(neg_sorted):
                continue
            Cn = np.concatenate([zero, np.cumsum(W[:, neg_sorted], axis=1, dtype=np.int32)], axis=1)
            Cp = np.concatenate([zero, np.cumsum(W[:, pos_sorted], axis=1, dtype=np.int32)], axis=1)
            wp = W[:, pos].astype(np.int64)
            P, N = Cp[:, -1].astype(np.int64), Cn[:, -1].astype(np.int64)
            below = Cn[:, ln].astype(np.int64)
            ok = (P > 0) & (N > 0)
            twice = (wp * (below + Cn[:, rn])).sum(axis=1)  # 2 x (below + tied / 2), exact in integers
            tp_ge = P[:, None] - Cp[:, lp]
            with np.errstate(invalid="ignore", divide="ignore"):
                roc[:, j] = np.where(ok, twice / (2.0 * P * N), np.nan)
                prec = np.where(wp > 0, tp_ge / (tp_ge + N[:, None] - below), 0.0)
                ap[:, j] = np.where(ok, (wp * prec).sum(axis=1) / P, np.nan)
        self._last = (idx, (roc, ap))
        return roc, ap


_RANKED: dict[int, tuple] = {}


def _macro(which: int) -> Callable:
    def make(reference, estimate, labels) -> Callable:
        from marble.metrics.classification import validate_multilabel

        ref, est = validate_multilabel(reference, estimate)
        key = (id(reference), id(estimate))  # ROC-AUC and AP of the same arrays share one ranking
        if key not in _RANKED or _RANKED[key][0] is not reference or _RANKED[key][1] is not estimate:
            _RANKED.clear()
            _RANKED[key] = (reference, estimate, _Ranked(ref, est))
        ranked = _RANKED[key][2]

        def on(idx: np.ndarray) -> np.ndarray:
            vals = ranked.block(idx)[which]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any scorable label: NaN
                return np.nanmean(vals, axis=1)
        return on
    return make


FAST = {"accuracy": _accuracy, "key_weighted_score": _key_score,
        "roc_auc_macro": _macro(0), "ap_macro": _macro(1),
        "beat_f_measure": _beat_f, "beat_f_measure_pooled": _beat_f_pooled}


def _gathered(metric: Callable, reference, estimate, labels) -> Callable:
    """Any metric: called on the drawn items of each resample (lists of per-track arrays are gathered too)."""
    def take(x, rows):
        if x is None:  # per-item scores carry no reference (MUSDB)
            return None
        return x[rows] if isinstance(x, np.ndarray) and x.dtype != object else [x[i] for i in rows]

    def on(idx: np.ndarray) -> np.ndarray:
        out = np.empty(idx.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for b, rows in enumerate(idx):
                try:
                    out[b] = metric(take(reference, rows), take(estimate, rows), labels=labels)
                except ValueError:  # e.g. R² of a resample whose reference is one repeated item
                    out[b] = np.nan
        return out
    return on


def on_resamples(name: str, reference, estimate, labels: Sequence[str] | None = None,
                 metric: Callable | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``f(idx [b, n]) -> [b]``: metric ``name`` of each resample (a fast path of :data:`FAST`, else ``metric`` /
    ``marble.metrics.METRICS[name]`` on the gathered items)."""
    labels = list(labels) if labels is not None else None
    if name in FAST:
        return FAST[name](reference, estimate, labels)
    from marble.metrics import METRICS

    return _gathered(metric or METRICS[name], reference, estimate, labels)
