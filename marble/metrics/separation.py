"""Source separation metrics (MUSDB18): MDX-2021 global SDR and museval (BSSEval v4) SDR.

``reference`` and ``estimate`` are sequences with one entry per track, each an array
``[S, T, channels]`` (or ``[S, T]``) of time-domain sources in the order of ``labels``
(default, the MUSDB card's ``["vocals", "drums", "bass", "other"]``). Reference and estimate of a
track must have the same shape: resample/trim before scoring.

* ``sdr_<source>``: MDX-2021 global SDR per track,
  ``10 log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7))`` over all samples and channels
  (float64), mean over tracks. ``sdr_mean``: mean of the four per-source values.
* ``museval_sdr_<source>``: ``museval.evaluate`` (BSSEval v4, images, no permutation), median
  over frames per track ignoring NaN frames (frames where some source is silent, as museval's
  aggregation does), then median over tracks (tracks with no valid frame ignored). A track with a
  source silent all along (reference or estimate) makes museval raise; it is left out (NaN) with a
  warning, consistent with museval's NaN for frames with a silent source. Frames are 1 s
  windows with 1 s hop at ``MUSEVAL_RATE`` = 44.1 kHz, museval's defaults, so score audio at
  MUSDB's native 44.1 kHz; ``museval_sdr(..., rate=, window_seconds=, hop_seconds=)`` takes others.
  museval is slow: one call evaluates every source together and the per-track result is cached
  (keyed by a hash of the arrays), so the four ``museval_sdr_*`` calls on the same inputs share
  one evaluation.

museval's package ``__init__`` imports ``musdb`` -> ``stempeg``, which refuses to import without an
ffmpeg binary. The metric needs only ``museval.metrics``; when ``import museval`` fails for that
reason, that module is loaded from museval's installed files and called exactly as
``museval.evaluate`` calls it (``bss_eval(..., compute_permutation=False, window, hop,
framewise_filters=False, bsseval_sources_version=False)``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

from marble.metrics._common import per_track

SOURCES = ("vocals", "drums", "bass", "other")
MUSEVAL_RATE = 44100
EPS = 1e-7


def validate(reference, estimate, labels=None) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Check two per-track lists of ``[S, T(, C)]`` arrays; returns them (as ``[S, T, C]`` views) and labels."""
    labels = list(SOURCES) if labels is None else [str(x) for x in labels]

    def check(x, where: str) -> np.ndarray:
        a = np.asarray(x)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3 or a.dtype.kind not in "iuf":
            raise ValueError(f"{where} must be a numeric array [S, T] or [S, T, channels], got shape {a.shape}")
        if a.shape[0] != len(labels):
            raise ValueError(
                f"{where} has {a.shape[0]} sources but labels lists {len(labels)} ({labels}); "
                "sources go on the first axis, in label order"
            )
        if a.shape[1] == 0:
            raise ValueError(f"{where} has no samples")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{where} contains NaN or infinite samples")
        return a

    ref, est = per_track(reference, estimate, check, "[S, T, channels] array", "sources")
    for i, (r, e) in enumerate(zip(ref, est)):
        if r.shape != e.shape:
            raise ValueError(
                f"track {i}: reference shape {r.shape} and estimate shape {e.shape} differ "
                "(same sources, length and channels are needed: resample/trim the estimate first)"
            )
    return ref, est, labels


def _source_index(labels: list[str], source: str) -> int:
    if labels.count(source) != 1:
        raise ValueError(f"labels {labels} must name exactly one source {source!r}")
    return labels.index(source)


# ---------------------------------------------------------------------------------------------
# cache of per-track results, keyed by the arrays' content

_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_CACHE_SIZE = 4


def _fingerprint(ref: list[np.ndarray], est: list[np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for a in ref + [None] + est:
        if a is None:
            h.update(b"|")
            continue
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


def _cached(key: tuple, compute) -> np.ndarray:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key].copy()
    value = compute()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value.copy()


# ---------------------------------------------------------------------------------------------
# MDX-2021 global SDR


def sdr_per_track(reference, estimate, *, labels=None) -> np.ndarray:
    """MDX-2021 global SDR in dB, float64 ``[n_tracks, S]``."""
    ref, est, labels = validate(reference, estimate, labels)
    rows = []
    for r, e in zip(ref, est):
        r64 = r.astype(np.float64)
        num = np.sum(r64**2, axis=(1, 2))
        den = np.sum((r64 - e.astype(np.float64)) ** 2, axis=(1, 2))
        rows.append(10.0 * np.log10((num + EPS) / (den + EPS)))
    return np.array(rows)


def _sdr(source: str, reference, estimate, labels) -> float:
    labels_ = list(SOURCES) if labels is None else [str(x) for x in labels]
    j = _source_index(labels_, source)
    return float(np.mean(sdr_per_track(reference, estimate, labels=labels)[:, j]))


def sdr_vocals(reference, estimate, *, labels=None) -> float:
    """MDX-2021 SDR of the vocals, mean over tracks (dB)."""
    return _sdr("vocals", reference, estimate, labels)


def sdr_drums(reference, estimate, *, labels=None) -> float:
    """MDX-2021 SDR of the drums, mean over tracks (dB)."""
    return _sdr("drums", reference, estimate, labels)


def sdr_bass(reference, estimate, *, labels=None) -> float:
    """MDX-2021 SDR of the bass, mean over tracks (dB)."""
    return _sdr("bass", reference, estimate, labels)


def sdr_other(reference, estimate, *, labels=None) -> float:
    """MDX-2021 SDR of "other", mean over tracks (dB)."""
    return _sdr("other", reference, estimate, labels)


def sdr_mean(reference, estimate, *, labels=None) -> float:
    """Mean over sources of the per-source mean-over-tracks MDX SDR (dB)."""
    return float(np.mean(sdr_per_track(reference, estimate, labels=labels)))


# ---------------------------------------------------------------------------------------------
# museval (BSSEval v4)


@lru_cache(maxsize=1)
def _museval_bss_eval():
    """museval's ``metrics.bss_eval``, importing around museval's ffmpeg check (module docstring)."""
    try:
        import museval.metrics

        return museval.metrics.bss_eval
    except ImportError:
        raise ImportError(
            "museval_sdr_* need museval: pip install 'marble-benchmark[separation]' (or pip install museval)"
        ) from None
    except RuntimeError as e:  # stempeg: "ffmpeg or ffprobe could not be found!"
        spec = importlib.util.find_spec("museval")
        if spec is None or not spec.submodule_search_locations:  # pragma: no cover
            raise ImportError(f"museval could not be imported: {e}") from None
        path = Path(list(spec.submodule_search_locations)[0]) / "metrics.py"
        mspec = importlib.util.spec_from_file_location("_marble_museval_metrics", path)
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        return module.bss_eval


def _any_source_silent(x: np.ndarray) -> bool:
    """museval's test (``metrics._any_source_silent``) on one track ``[S, T, C]``: a source whose
    channel sum is 0 at every sample makes ``bss_eval`` raise."""
    return bool(np.any(np.all(np.sum(x, axis=2) == 0, axis=1)))


def museval_sdr_per_track(
    reference, estimate, *, labels=None, rate: int = MUSEVAL_RATE, window_seconds: float = 1.0, hop_seconds: float = 1.0
) -> np.ndarray:
    """museval SDR per track and source: median over frames (NaN frames ignored), ``[n_tracks, S]``;
    NaN where a track has no valid frame. Cached by content (see the module docstring)."""
    ref, est, labels = validate(reference, estimate, labels)
    win = int(round(window_seconds * rate))
    hop = int(round(hop_seconds * rate))
    if win <= 0 or hop <= 0:
        raise ValueError(f"museval window and hop must be positive, got {window_seconds} s and {hop_seconds} s at {rate} Hz")

    def compute() -> np.ndarray:
        bss_eval = _museval_bss_eval()
        rows, skipped = [], []
        for i, (r, e) in enumerate(zip(ref, est)):
            if _any_source_silent(r) or _any_source_silent(e):
                skipped.append(i)
                rows.append(np.full(r.shape[0], np.nan))
                continue
            sdr, _isr, _sir, _sar, _perm = bss_eval(
                r.astype(np.float64),
                e.astype(np.float64),
                compute_permutation=False,
                window=win,
                hop=hop,
                framewise_filters=False,
                bsseval_sources_version=False,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN track -> NaN
                rows.append(np.nanmedian(np.asarray(sdr, dtype=np.float64), axis=1))
        if skipped:
            shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
            warnings.warn(
                f"museval_sdr: {len(skipped)} of {len(ref)} tracks have a source that is silent all along in the "
                f"reference or the estimate (tracks {shown}); museval cannot score them, so they count as "
                "NaN (left out of the median over tracks)",
                UserWarning,
                stacklevel=3,
            )
        return np.array(rows)

    return _cached(("museval", _fingerprint(ref, est), win, hop), compute)


def museval_sdr(
    reference, estimate, labels=None, *, rate: int = MUSEVAL_RATE, window_seconds: float = 1.0, hop_seconds: float = 1.0
) -> dict[str, float]:
    """museval SDR of every source: median over tracks of the per-track frame medians (dB).
    A source with no valid frame in any track is NaN (with a warning)."""
    per_track = museval_sdr_per_track(
        reference, estimate, labels=labels, rate=rate, window_seconds=window_seconds, hop_seconds=hop_seconds
    )
    labels = list(SOURCES) if labels is None else [str(x) for x in labels]
    out = {}
    for j, name in enumerate(labels):
        col = per_track[:, j]
        if np.all(np.isnan(col)):
            warnings.warn(f"museval_sdr: {name!r} has no non-silent frame in any track; its SDR is NaN", UserWarning, stacklevel=2)
            out[name] = float("nan")
        else:
            out[name] = float(np.nanmedian(col))
    return out


def _museval_one(source: str, reference, estimate, labels) -> float:
    labels_ = list(SOURCES) if labels is None else [str(x) for x in labels]
    _source_index(labels_, source)
    return museval_sdr(reference, estimate, labels)[source]


def museval_sdr_vocals(reference, estimate, *, labels=None) -> float:
    """museval (BSSEval v4) median SDR of the vocals (dB)."""
    return _museval_one("vocals", reference, estimate, labels)


def museval_sdr_drums(reference, estimate, *, labels=None) -> float:
    """museval (BSSEval v4) median SDR of the drums (dB)."""
    return _museval_one("drums", reference, estimate, labels)


def museval_sdr_bass(reference, estimate, *, labels=None) -> float:
    """museval (BSSEval v4) median SDR of the bass (dB)."""
    return _museval_one("bass", reference, estimate, labels)


def museval_sdr_other(reference, estimate, *, labels=None) -> float:
    """museval (BSSEval v4) median SDR of "other" (dB)."""
    return _museval_one("other", reference, estimate, labels)


# ---------------------------------------------------------------------------------------------
# the card's metrics from per-track scores (a MUSDB result's test outputs: the waveforms are too large to ship)


def _track_column(scores, labels, source: str) -> np.ndarray:
    """Source ``source``'s per-track scores: column ``labels.index(source)`` of ``scores`` [tracks, S], float64
    and contiguous (numpy sums a contiguous 1-D array in one fixed order, so the same values give the same mean)."""
    labels_ = list(SOURCES) if labels is None else [str(x) for x in labels]
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != len(labels_):
        raise ValueError(f"per-track scores must be [tracks, {len(labels_)} sources] ({labels_}), got shape {a.shape}")
    return np.ascontiguousarray(a[:, _source_index(labels_, source)])


def _from_track_sdr(source: str | None):
    def metric(reference, estimate, *, labels=None) -> float:
        if source is not None:  # sdr_<source>: mean over tracks
            return float(np.mean(_track_column(estimate, labels, source)))
        labels_ = list(SOURCES) if labels is None else [str(x) for x in labels]
        return float(np.mean([float(np.mean(_track_column(estimate, labels, s))) for s in labels_]))  # sdr_mean

    metric.__doc__ = (f"``sdr_{source}`` from per-track global SDRs [tracks, S]: the mean over tracks" if source else
                      "``sdr_mean`` from per-track global SDRs [tracks, S]: the mean over sources of the per-source "
                      "means over tracks")
    return metric


def _from_track_museval(source: str):
    def metric(reference, estimate, *, labels=None) -> float:
        col = _track_column(estimate, labels, source)
        if np.all(np.isnan(col)):
            return float("nan")
        return float(np.nanmedian(col))

    metric.__doc__ = f"``museval_sdr_{source}`` from per-track museval medians [tracks, S] (NaN: unscored): median"
    return metric


#: metric -> (the array of a MUSDB test-outputs file it reads: ``estimate`` = per-track global SDR [tracks, S],
#: ``museval`` = per-track museval median SDR [tracks, S]; metric(reference (unused), scores, labels=) -> float).
#: The trainer computes its reported test metrics with these same functions from the same float64 arrays.
FROM_TRACK_SCORES = {"sdr_mean": ("estimate", _from_track_sdr(None)),
                     **{f"sdr_{s}": ("estimate", _from_track_sdr(s)) for s in SOURCES},
                     **{f"museval_sdr_{s}": ("museval", _from_track_museval(s)) for s in SOURCES}}
