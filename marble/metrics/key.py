"""Key estimation metric (GS): mean over items of ``mir_eval.key.weighted_score``.

``reference`` int class indices ``[N]``; ``estimate`` class scores ``[N, C]`` (argmax) or
predicted indices ``[N]``; ``labels`` is the key vocabulary in mir_eval spelling (``"C major"``,
``"Db minor"``, ...), class ``i`` being ``labels[i]``. Per item: 1 for the same key, 0.5 for the
estimate a perfect fifth above in the same mode, 0.3 for the relative key, 0.2 for the parallel
key, else 0 (mir_eval's scoring; the relation is not symmetric for fifths).
"""

from __future__ import annotations

import mir_eval
import numpy as np

from marble.metrics.classification import validate_multiclass


def validate(reference, estimate, labels) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check the pair and the key vocabulary; returns (ref indices, predicted indices, labels)."""
    if labels is None:
        raise ValueError("key_weighted_score needs labels: the key vocabulary, e.g. ['C major', 'Db major', ...]")
    labels = [str(k) for k in labels]
    for k in labels:
        try:
            mir_eval.key.validate_key(k)
        except ValueError as e:
            raise ValueError(f"key_weighted_score: label {k!r} is not a mir_eval key: {e}") from None
    ref, pred = validate_multiclass(reference, estimate)
    est = np.asarray(estimate)
    if est.ndim == 2 and est.shape[1] != len(labels):
        raise ValueError(f"estimate has {est.shape[1]} class scores but labels lists {len(labels)} keys")
    top = max(ref.max(), pred.max())
    if top >= len(labels):
        raise ValueError(f"class index {top} is outside the {len(labels)}-key vocabulary")
    return ref, pred, labels


def item_scores(reference, estimate, *, labels=None) -> np.ndarray:
    """mir_eval's weighted key score of each item, float64 [N] (the bootstrap resamples these)."""
    ref, pred, labels = validate(reference, estimate, labels)
    pairs = {}
    out = np.empty(len(ref))
    for i, (r, p) in enumerate(zip(ref.tolist(), pred.tolist())):
        if (r, p) not in pairs:
            pairs[(r, p)] = mir_eval.key.weighted_score(labels[r], labels[p])
        out[i] = pairs[(r, p)]
    return out


def key_weighted_score(reference, estimate, *, labels=None) -> float:
    """Mean mir_eval weighted key score over items."""
    total = 0.0
    for v in item_scores(reference, estimate, labels=labels).tolist():  # summed in item order, as always
        total += v
    return float(total / len(np.asarray(reference)))
