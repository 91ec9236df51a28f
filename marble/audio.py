"""Audio decoding: soundfile decode, channel mean to mono, crop *before* resampling, soxr resample.

Unreadable, empty or truncated files raise :class:`AudioError` naming the file and the reason:
they are never turned into silence.
"""

from __future__ import annotations

import struct
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
            declared, fmt = f.frames, f.format
        _check_complete(path, fmt, declared, start, frames, len(data), sr)
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


# an MP3 decoder may stop up to a couple of MPEG frames (1152 samples each) short of the header count
_MP3_SLACK = 2 * 1152
# libsndfile's Ogg frame count comes from the last page's granule position, which can run past what decodes
# (Debian's wesnoth-1.16-music northerners.ogg: 9135516 declared, 9129710 decoded, 0.13 s): a complete file,
# and a crop ending near its end, must not read as truncated; the excess sits at the file's end, so the slack is
# 1 % of the whole file (MP3's estimate errs along the file: 1 % of the part read)
_OGG_SLACK = 8192


def wav_truncation(path: Path) -> str | None:
    """Why a RIFF/WAVE file is cut short (its data chunk runs past the end), or None if it is not.
    libsndfile silently shortens such a file to what is there, so ``load`` asks this first."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None if head[:4] == b"RF64" else f"not a RIFF/WAVE file ({size} bytes)"
        pos = 12
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return f"{size} bytes and no complete 'data' chunk"
            cid, clen = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                end = pos + 8 + clen
                return None if size >= end else f"{size} bytes, its header announces {end}"
            pos += 8 + clen + (clen & 1)
            f.seek(pos)


def _check_complete(path: Path, fmt: str, declared: int, start: int, wanted: int, got: int, sr: int) -> None:
    """Raise :class:`AudioError` for a truncated file instead of returning its shorter audio."""
    if fmt == "WAV":
        why = wav_truncation(path)
        if why and not why.startswith("not a RIFF"):  # RIFX/RF64: libsndfile reads those itself
            raise AudioError(path, f"truncated: {why} (an interrupted copy or download?); replace the file")
    if declared <= 0:
        return
    expect = max(0, declared - start) if wanted < 0 else min(wanted, max(0, declared - start))
    # MP3 without a Xing/LAME header: the count is estimated from the bitrate, so allow 1 % (a cut-off file
    # lacks far more)
    slack = max(_MP3_SLACK, expect // 100) if fmt == "MP3" else max(_OGG_SLACK, declared // 100) if fmt == "OGG" else 0
    if got + slack < expect:
        raise AudioError(path, f"truncated: decoded {got / sr:.2f} s but the header declares {expect / sr:.2f} s "
                         "(an interrupted copy or download?); replace the file")


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
