"""Audio decoding: soundfile decode, channel mean to mono, crop *before* resampling, soxr resample.

Unreadable, empty or truncated files raise :class:`AudioError` naming the file and the reason:
they are never turned into silence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from marble.errors import MarbleError


class AudioError(MarbleError, RuntimeError):
    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def info(path: str | Path) -> tuple[int, int]:
    """(sample rate, number of frames) of a file without decoding it."""
    try:
        i = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioError(path, f"cannot read audio header ({e})") from None
    return int(i.samplerate), int(i.frames)


def load(
    path: str | Path,
    sample_rate: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
    mono: bool = True,
    zscore: bool = False,
) -> np.ndarray:
    """Decode ``[offset, offset + duration)`` seconds of ``path``, mix to mono (channel mean),
    then resample to ``sample_rate`` with soxr (high quality). Returns float32 ``[T]`` (mono) or
    ``[C, T]``. The crop happens in the file's own rate, before resampling (PROTOCOL §2).
    ``zscore`` (a task's preprocessing, e.g. VocalSet) z-normalises the cropped audio in the file's
    rate, before resampling: ``(x - mean) / std`` with the sample std (N - 1), as ``torch.std``."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            start = int(round(offset * sr))
            if start > 0:
                if f.seekable():
                    f.seek(min(start, f.frames) if f.frames > 0 else start)
                else:  # pragma: no cover - all libsndfile formats we use are seekable
                    f.read(start)
            frames = -1 if duration is None else int(round(duration * sr))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(path, f"cannot decode ({type(e).__name__}: {e})") from None
    if data.size == 0:
        raise AudioError(path, f"no audio samples (offset {offset:.2f} s)")
    if not np.isfinite(data).all():
        raise AudioError(path, "decoded samples contain NaN or inf")
    wav = data.mean(axis=1) if mono else data.T
    if zscore:
        wav = zscore_normalise(wav, path)
    if sample_rate is not None and sr != sample_rate:
        wav = soxr.resample(wav.T if not mono else wav, sr, sample_rate, quality="HQ")
        wav = wav.T if not mono else wav
    return np.ascontiguousarray(wav, dtype=np.float32)


def zscore_normalise(wav: np.ndarray, path: str | Path = "audio") -> np.ndarray:
    """Zero mean, unit sample standard deviation (N - 1) over the whole array, computed in float64."""
    w = np.asarray(wav, dtype=np.float64)
    std = w.std(ddof=1) if w.size > 1 else 0.0
    if not std > 0:
        raise AudioError(path, "constant (e.g. digitally silent) audio cannot be z-normalised")
    return ((w - w.mean()) / std).astype(np.float32)


def windows(num_samples: int, sample_rate: int, window_seconds: float | None, min_window_seconds: float = 1.0):
    """Non-overlapping ``(start, stop)`` sample ranges (PROTOCOL §2): a last window shorter than
    the window is kept only if at least ``min_window_seconds`` long, never padded."""
    if window_seconds is None:
        return [(0, num_samples)]
    win = int(round(window_seconds * sample_rate))
    min_len = int(round(min_window_seconds * sample_rate))
    out = []
    for start in range(0, num_samples, win):
        stop = min(start + win, num_samples)
        if stop - start == win or stop - start >= min_len:
            out.append((start, stop))
    return out
