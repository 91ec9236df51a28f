"""Audio decoding: soundfile decode, channel mean to mono, crop *before* resampling, soxr resample.

Unreadable, empty or truncated files raise :class:`AudioError` naming the file and the reason:
they are never turned into silence. A file is held to a length only where it states one
(:mod:`marble.audioheaders` says what each format promises). Decoder chatter (libmpg123 writes its
warnings straight to the process's stderr, through any progress bar) is collected, not printed.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from marble.audioheaders import Mp3Layout, id3v2_overrun, mp3_layout, ogg_truncation, wav_truncation
from marble.errors import MarbleError

__all__ = ["AudioError", "info", "load", "wav_truncation", "windows", "zscore_normalise"]

_UNKNOWN = 1 << 62  # libsndfile reports SF_COUNT_MAX frames for a stream that does not say its length
_BLOCK = 1 << 16
_log = logging.getLogger(__name__)


class AudioError(MarbleError, RuntimeError):
    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _regular_file(path: Path) -> None:
    """A missing, empty or non-regular file is named as such (libsndfile calls all three "File does not exist or
    is not a regular file")."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except OSError as e:
        raise AudioError(path, f"cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(path, "not a regular file")
    if st.st_size == 0:
        raise AudioError(path, "empty file (0 bytes; an interrupted copy or download?); replace the file")


def _open_error(path: Path, e: Exception) -> AudioError:
    """The reason a file libsndfile cannot open is refused: a cut ID3v2 tag is named, the rest quoted."""
    cut = id3v2_overrun(path)
    if cut:
        return AudioError(path, f"truncated: {cut} (an interrupted copy or download?); replace the file")
    return AudioError(path, f"cannot decode ({type(e).__name__}: {e})")


def info(path: str | Path) -> tuple[int, int]:
    """(sample rate, number of frames) of a file without decoding it. For an MP3 the count is the one its
    Xing/Info/VBRI frame states, else an estimate from its audio bytes (ID3 tags left out)."""
    path = Path(path)
    _regular_file(path)
    try:
        with decoder_output([]):
            i = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioError(path, f"cannot read audio header ({e})") from None
    frames = int(i.frames) if 0 < i.frames < _UNKNOWN else 0
    if i.format == "MP3":
        mp3 = mp3_layout(path)
        if mp3 is not None:
            stated = _promised(mp3, frames)
            frames = stated if stated is not None else _mp3_estimate(path, mp3, frames)
    return int(i.samplerate), frames


def _promised(mp3: Mp3Layout, declared: int) -> int | None:
    """The samples an MP3 states (None: it states none). Where libsndfile's count lies within three frames below
    the stated count, libmpg123 read the same frame and also took off the encoder delay and padding that only a
    LAME-style tag gives (ffmpeg's, which mutagen does not read): that count is the exact one."""
    if mp3.stated is None:
        return None
    return declared if mp3.stated - 3 * mp3.samples_per_frame <= declared <= mp3.stated else mp3.stated


def _mp3_estimate(path: Path, mp3: Mp3Layout, fallback: int) -> int:
    from mutagen.mp3 import MPEGInfo

    try:
        with open(path, "rb") as fh:
            return int(round(MPEGInfo(fh).length * mp3.sample_rate))  # audio bytes at the first frame's bitrate
    except Exception:
        return fallback


# ----------------------------------------------------------------------------------------------
# decoder chatter

_capture: dict = {"pid": None, "fd": None}
_capture_lock = threading.Lock()


@contextmanager
def decoder_output(sink: list[str]):
    """Collect what C decoders write to the process's stderr (fd 2) while the block runs into ``sink``, one
    entry per non-empty line. libmpg123 prints "Note: Illegal Audio-MPEG-Header ...", "Warning: Xing stream size
    off by more than 1% ..." there, which breaks progress bars on MP3 tasks. One capture file per process (a
    DataLoader worker is a forked process and gets its own); a lock keeps threads from swapping fd 2 crosswise."""
    with _capture_lock:
        try:
            if _capture["pid"] != os.getpid():
                with tempfile.TemporaryFile() as tmp:  # unlinked; the dup keeps it open
                    _capture.update(pid=os.getpid(), fd=os.dup(tmp.fileno()))
            fd = _capture["fd"]
            try:
                sys.stderr.flush()
            except Exception:  # pragma: no cover - a closed or odd sys.stderr
                pass
            saved = os.dup(2)
        except OSError:  # no fd 2 (a daemon) or no temp space: decode without capturing
            yield
            return
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            n = os.lseek(fd, 0, os.SEEK_CUR)
            if n:
                os.lseek(fd, 0, os.SEEK_SET)
                text = os.read(fd, min(n, 1 << 16)).decode("utf-8", "replace")
                sink.extend(line.strip() for line in text.splitlines() if line.strip())


# ----------------------------------------------------------------------------------------------
# decoding


def load(
    path: str | Path,
    sample_rate: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
    mono: bool = True,
    zscore: bool = False,
    messages: list[str] | None = None,
) -> np.ndarray:
    """Decode ``[offset, offset + duration)`` seconds of ``path``, mix to mono (channel mean),
    then resample to ``sample_rate`` with soxr (high quality). Returns float32 ``[T]`` (mono) or
    ``[C, T]``. The crop happens in the file's own rate, before resampling (PROTOCOL §2).
    ``zscore`` (a task's preprocessing, e.g. VocalSet) z-normalises the cropped audio in the file's
    rate, before resampling: ``(x - mean) / std`` with the sample std (N - 1), as ``torch.std``.
    What the decoder writes to stderr goes to ``messages`` (else to the ``marble.audio`` debug log)."""
    path = Path(path)
    _regular_file(path)
    said: list[str] = []
    try:
        with decoder_output(said):
            data, sr = _decode(path, offset, duration)
    finally:
        if messages is not None:
            messages.extend(said)
        for line in said:
            _log.debug("%s: %s", path, line)
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


def _decode(path: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    """``[frames, channels]`` float32 of the crop and the file's rate; a file cut short of what it states raises."""
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:
        raise _open_error(path, e) from None
    try:
        with f:
            sr, fmt = f.samplerate, f.format
            declared = f.frames if 0 < f.frames < _UNKNOWN else 0
            start = int(round(offset * sr))
            wanted = -1 if duration is None else int(round(duration * sr))
            if fmt == "FLAC" and not declared:
                raise AudioError(path, "cannot decode: its STREAMINFO gives no sample count (a FLAC written to a "
                                 "stream), which soundfile cannot read (it seeks after every read); rewrite it to a "
                                 "file, e.g. `ffmpeg -i in.flac out.flac`")
            if declared and f.seekable():
                if start > 0:
                    f.seek(min(start, declared))
                data = f.read(frames=wanted, dtype="float32", always_2d=True)
            else:  # no length: read to the end of the data
                data = _read_blocks(f, start, wanted)
        mp3 = mp3_layout(path) if fmt == "MP3" else None
        if mp3 is not None and _stopped_at_estimate(mp3, declared, start, wanted, len(data)):
            data = _decode_mp3_stream(path, mp3, start, wanted)
        _check_complete(path, fmt, declared, start, wanted, len(data), sr, mp3)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(path, f"cannot decode ({type(e).__name__}: {e})") from None
    return data, sr


def _read_blocks(f: sf.SoundFile, start: int, wanted: int, block: int = _BLOCK, stop_on_error: bool = False) -> np.ndarray:
    """Read ``wanted`` frames (all: -1) after skipping ``start``, block by block, from a file or stream of unknown
    length. ``stop_on_error``: a decoder error after some audio ends the data instead of raising (libmpg123 on a
    stream reports an incomplete last frame so; read from a file, the same frame is dropped without a word)."""
    parts, skip, left = [], start, wanted
    while left != 0:
        n = block if left < 0 else min(block, left + skip)
        try:
            got = f.read(n, dtype="float32", always_2d=True)
        except Exception:
            if stop_on_error and (parts or skip < start):
                break
            raise
        if not len(got):
            break
        if skip:
            drop = min(skip, len(got))
            got, skip = got[drop:], skip - drop
        if left > 0:
            got = got[:left]
            left -= len(got)
        parts.append(got)
    return np.concatenate(parts) if parts else np.zeros((0, f.channels), np.float32)


def _stopped_at_estimate(mp3: Mp3Layout, declared: int, start: int, wanted: int, got: int) -> bool:
    """Did libsndfile stop at its own frame count, where the file goes on? It never reads past that count, and for
    an MP3 that states no length (or only in a VBRI frame, which libmpg123 does not read) the count is libmpg123's
    estimate at the first frame's bitrate: a VBR file's can be half the file."""
    reached_count = declared > 0 and start + got >= declared and (wanted < 0 or got < wanted)
    return reached_count and (mp3.stated is None or declared + 3 * mp3.samples_per_frame < mp3.stated)


def _decode_mp3_stream(path: Path, mp3: Mp3Layout, start: int, wanted: int) -> np.ndarray:
    """Decode the MPEG frames of ``path`` as a stream: libsndfile reading a pipe has no frame count to stop at and
    decodes to the last complete frame. The pipe is fed from the first frame on (libsndfile cannot skip a large
    ID3v2 tag on a pipe)."""
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as dst:
            try:
                with open(path, "rb") as src:
                    src.seek(mp3.audio_offset)
                    while chunk := src.read(_BLOCK):
                        dst.write(chunk)
            except OSError:  # the reader stopped early (a crop) or the file went away
                pass

    writer = threading.Thread(target=feed, name="marble-mp3-feed", daemon=True)
    writer.start()
    try:
        with sf.SoundFile(r, closefd=False) as f:
            return _read_blocks(f, start, wanted, block=mp3.samples_per_frame * 8, stop_on_error=True)
    finally:
        os.close(r)
        writer.join()


def zscore_normalise(wav: np.ndarray, path: str | Path = "audio") -> np.ndarray:
    """Zero mean, unit sample standard deviation (N - 1) over the whole array, computed in float64."""
    w = np.asarray(wav, dtype=np.float64)
    std = w.std(ddof=1) if w.size > 1 else 0.0
    if not std > 0:
        raise AudioError(path, "constant (e.g. digitally silent) audio cannot be z-normalised")
    return ((w - w.mean()) / std).astype(np.float32)


def _check_complete(path: Path, fmt: str, declared: int, start: int, wanted: int, got: int, sr: int,
                    mp3: Mp3Layout | None = None) -> None:
    """Raise :class:`AudioError` for a file cut short of the length it states (:mod:`marble.audioheaders`),
    instead of returning its shorter audio."""
    def refuse(why: str):
        raise AudioError(path, f"truncated: {why} (an interrupted copy or download?); replace the file")

    if fmt == "WAV":
        why = wav_truncation(path)
        if why and not why.startswith("not a RIFF"):  # RIFX/RF64: libsndfile reads those itself
            refuse(why)
    elif fmt == "OGG":
        why = ogg_truncation(path)
        if why:
            refuse(why)
    if fmt == "MP3":
        stated = None if mp3 is None else _promised(mp3, declared)
        if stated is None:
            return  # no length stated: libsndfile's count is an estimate (ID3 tags included), never a promise
        expect = max(0, stated - start) if wanted < 0 else min(wanted, max(0, stated - start))
        if got + 2 * mp3.samples_per_frame < expect:  # a decoder may stop a couple of frames short
            refuse(f"decoded {got / sr:.2f} s but its {mp3.header} frame states {expect / sr:.2f} s")
        return
    if declared <= 0:
        return
    expect = max(0, declared - start) if wanted < 0 else min(wanted, max(0, declared - start))
    # Ogg: the count is the last page's granule position, the stream's end position, and a complete file may decode a
    # little less (Debian's wesnoth-1.16-music northerners.ogg: 9135516 declared, 9129710 decoded, 0.13 s). A cut
    # file is caught above (no end-of-stream page); this only guards against a decode that stops early (1 %).
    slack = max(8192, declared // 100) if fmt == "OGG" else 0
    if got + slack < expect:
        refuse(f"decoded {got / sr:.2f} s but the header declares {expect / sr:.2f} s")


FRAME_PIECE_SECONDS = 90.0  # PROTOCOL §4: whole tracks reach the encoder in pieces of 90 s


def encoder_pieces(clip: np.ndarray, sample_rate: int, piece_seconds: float | None = None, tail_samples: int = 0,
                   num_frames=None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The one piece rule of frame tasks (PROTOCOL §4), for cached and on-the-fly features alike:
    ``tail_samples`` zeros appended once to the prepared whole input, then consecutive pieces of
    ``piece_seconds`` (default 90 s) from the start, the last one the remainder. Returns the padded
    input and the ``(start, stop)`` of each piece; the encoder's frames of the pieces, concatenated,
    are the item's frames. With ``num_frames`` (the encoder's), a last piece too short for one frame
    is dropped (the probe zero-fills frames an item lacks); no piece left means the item is too short."""
    clip = np.asarray(clip, dtype=np.float32)
    if tail_samples:
        clip = np.concatenate([clip, np.zeros(int(tail_samples), np.float32)])
    n = len(clip)
    step = max(1, int(round((piece_seconds or FRAME_PIECE_SECONDS) * sample_rate)))
    pieces = [(a, min(a + step, n)) for a in range(0, n, step)]
    if num_frames is not None:
        pieces = [(a, b) for a, b in pieces if num_frames(b - a) >= 1]
    return clip, pieces


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
