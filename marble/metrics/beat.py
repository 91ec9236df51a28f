"""Beat tracking metrics (GTZAN beat): F-measure with a 70 ms tolerance window.

``reference`` and ``estimate`` are sequences with one entry per track, each a 1-D array of beat
times in seconds (increasing). Two variants (PROTOCOL §4):

* ``beat_f_measure`` (main): per track ``mir_eval.beat.f_measure`` (70 ms) of the beats at or
  after 5 s (``mir_eval.beat.trim_beats``), mean over tracks. A track whose reference or estimate
  is empty (after trimming) scores 0, as in mir_eval; one warning counts such tracks.
* ``beat_f_measure_pooled``: the variant behind the published MARBLE numbers: per track the
  maximum matching of ``mir_eval.util.match_events`` (70 ms, no trimming); matches, estimated and
  reference beats are summed over all tracks, then ``P = M / sum E``, ``R = M / sum R`` and
  ``F = 2PR / (P + R)`` (0 when no beat matches). Empty tracks just add nothing to the sums.
"""

from __future__ import annotations

import warnings

import mir_eval
import numpy as np

from marble.metrics._common import MetricWarning, per_track

WINDOW_SECONDS = 0.07
TRIM_SECONDS = 5.0
#: metrics scored against references rounded to the feature frames (the reference's pooled F: its references are
#: frame labels); the caller passes them through :func:`at_frame_resolution`
FRAME_RESOLUTION_METRICS = ("beat_f_measure_pooled",)


def at_frame_resolution(references, fps: float) -> list[np.ndarray]:
    """Reference beats rounded to the frame grid of ``fps`` frames/s (beats in one frame merged): what the
    reference implementation's frame labels hold."""
    return [np.unique(np.round(np.asarray(r, dtype=np.float64) * fps)) / fps for r in references]


def _check_beats(beats, where: str) -> np.ndarray:
    b = np.asarray(beats, dtype=np.float64)
    if b.ndim != 1:
        raise ValueError(f"{where} must be a 1-D array of beat times, got shape {b.shape}")
    if not np.all(np.isfinite(b)) or (b.size and b.min() < 0):
        raise ValueError(f"{where} holds negative, NaN or infinite beat times")
    if b.size > 1 and np.any(np.diff(b) < 0):
        raise ValueError(f"{where}: beat times must be in increasing order (sort them)")
    if b.size and b.max() > mir_eval.beat.MAX_TIME:
        raise ValueError(f"{where}: beat time {b.max()} s is implausibly large (seconds expected)")
    return b


def validate(reference, estimate) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check two per-track lists of beat times; returns float64 arrays."""
    return per_track(reference, estimate, _check_beats, "1-D array of beat times", "beats")


def track_scores(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, empty)`` per track: mir_eval's beat F-measure (70 ms) of the beats at or after 5 s, and whether
    the track has no reference or no estimated beat there (it scores 0, as in mir_eval). ``beat_f_measure`` is
    their mean; the bootstrap (:mod:`marble.metrics.resample`) takes means of the same scores."""
    ref, est = validate(reference, estimate)
    scores, empty = np.empty(len(ref)), np.zeros(len(ref), bool)
    for i, (r, e) in enumerate(zip(ref, est)):
        r, e = mir_eval.beat.trim_beats(r, TRIM_SECONDS), mir_eval.beat.trim_beats(e, TRIM_SECONDS)
        empty[i] = r.size == 0 or e.size == 0
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(Reference|Estimated) beats are empty")
            scores[i] = mir_eval.beat.f_measure(r, e, f_measure_threshold=WINDOW_SECONDS)
    return scores, empty


def beat_f_measure(reference, estimate, *, labels=None) -> float:
    """Mean over tracks of mir_eval's beat F-measure (70 ms, first 5 s trimmed)."""
    scores, empty = track_scores(reference, estimate)
    if empty.any():
        warnings.warn(
            f"beat_f_measure: {int(empty.sum())} of {len(scores)} tracks have no reference or no estimated beat "
            f"after {TRIM_SECONDS:g} s; they score 0 (as mir_eval)",
            MetricWarning,
            stacklevel=2,
        )
    return float(np.mean(scores))


def track_counts(reference, estimate) -> np.ndarray:
    """int64 ``[tracks, 3]``: per track the matched beats (``mir_eval.util.match_events``, 70 ms, no trimming), the
    estimated and the reference beats: what ``beat_f_measure_pooled`` sums over tracks (and the bootstrap sums over
    the drawn tracks, :mod:`marble.metrics.resample`)."""
    ref, est = validate(reference, estimate)
    counts = np.zeros((len(ref), 3), np.int64)
    for i, (r, e) in enumerate(zip(ref, est)):
        matches = len(mir_eval.util.match_events(r, e, WINDOW_SECONDS)) if r.size and e.size else 0
        counts[i] = matches, e.size, r.size
    return counts


def pooled_f(counts: np.ndarray) -> np.ndarray:
    """F of pooled counts ``counts[..., :3]`` = (matches, estimated, reference) (integer sums over tracks, one
    row per resample or a single row): ``P = M / E``, ``R = M / R``, ``F = 2PR / (P + R)``, 0 where no beat
    matches. The metric and its bootstrap both go through here, so a resample's F is the metric's to the bit."""
    m, n_est, n_ref = (np.asarray(counts, np.int64)[..., j] for j in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision, recall = m / n_est, m / n_ref
        f = 2 * precision * recall / (precision + recall)
    return np.where(m == 0, 0.0, f)


def beat_f_measure_pooled(reference, estimate, *, labels=None) -> float:
    """F-measure of matches pooled over all tracks (70 ms, no trimming): the MARBLE reference variant."""
    return float(pooled_f(track_counts(reference, estimate).sum(axis=0)))
