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


def beat_f_measure(reference, estimate, *, labels=None) -> float:
    """Mean over tracks of mir_eval's beat F-measure (70 ms, first 5 s trimmed)."""
    ref, est = validate(reference, estimate)
    scores, empty = [], 0
    for r, e in zip(ref, est):
        r, e = mir_eval.beat.trim_beats(r, TRIM_SECONDS), mir_eval.beat.trim_beats(e, TRIM_SECONDS)
        if r.size == 0 or e.size == 0:
            empty += 1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(Reference|Estimated) beats are empty")
            scores.append(mir_eval.beat.f_measure(r, e, f_measure_threshold=WINDOW_SECONDS))
    if empty:
        warnings.warn(
            f"beat_f_measure: {empty} of {len(ref)} tracks have no reference or no estimated beat after "
            f"{TRIM_SECONDS:g} s; they score 0 (as mir_eval)",
            MetricWarning,
            stacklevel=2,
        )
    return float(np.mean(scores))


def beat_f_measure_pooled(reference, estimate, *, labels=None) -> float:
    """F-measure of matches pooled over all tracks (70 ms, no trimming): the MARBLE reference variant."""
    ref, est = validate(reference, estimate)
    matches = n_est = n_ref = 0
    for r, e in zip(ref, est):
        n_ref += r.size
        n_est += e.size
        if r.size and e.size:
            matches += len(mir_eval.util.match_events(r, e, WINDOW_SECONDS))
    if matches == 0:
        return 0.0
    precision, recall = matches / n_est, matches / n_ref
    return float(2 * precision * recall / (precision + recall))
