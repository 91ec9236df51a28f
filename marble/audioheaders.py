"""What an audio file's own headers promise about its length, read without decoding.

A decoded file is held to a length only where the file states one (README, "Errors and guarantees"):

- WAV: the ``data`` chunk's size, unless it is the 0xFFFFFFFF "size unknown" of a file written to a stream;
- FLAC: STREAMINFO's total sample count, unless it is 0 (unknown); libsndfile refuses a cut file itself;
- Ogg: the end-of-stream flag on its last page (every complete Ogg stream ends with one; a cut file ends on a
  page without it, or inside a page). The last page's granule position is *not* a length promise: it is the
  stream's end position, which a cut file simply restates for its last complete page;
- MP3: the frame count of a Xing/Info frame (LAME, ffmpeg, libsndfile) or a VBRI frame (Fraunhofer). An MP3
  without one states no length: libsndfile's frame count is then libmpg123's estimate from the byte count at
  the first frame's bitrate, ID3 tags and cover art included, and is no promise at all; a cut at a frame
  boundary cannot be told from a shorter complete file.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

_UNKNOWN_SIZE = 0xFFFFFFFF  # a WAV written to a pipe (ffmpeg, sox) cannot go back to fill in its sizes
_OGG_MAX_PAGE = 27 + 255 + 255 * 255


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
                if clen == _UNKNOWN_SIZE:  # a streamed file: the length is not stated
                    return None
                end = pos + 8 + clen
                return None if size >= end else f"{size} bytes, its header announces {end}"
            pos += 8 + clen + (clen & 1)
            f.seek(pos)


def ogg_truncation(path: Path) -> str | None:
    """Why an Ogg file is cut short, or None: its last complete page (CRC-checked, so an ``OggS`` inside packet
    data is not taken for a page) must carry the end-of-stream flag and end the file. Read with mutagen."""
    from mutagen.ogg import OggPage, error as OggError

    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 2 * _OGG_MAX_PAGE))  # the last complete page starts within two maximal pages
        tail = f.read()
    at = len(tail)
    while True:
        at = tail.rfind(b"OggS", 0, at)
        if at < 0:
            return f"no complete Ogg page in its last {len(tail)} bytes"
        buf = io.BytesIO(tail[at:])
        try:
            page = OggPage(buf)
        except (OggError, EOFError, ValueError):
            continue  # a page cut off by the end of the file, or "OggS" inside packet data
        end = buf.tell()
        if page.write() != tail[at:at + end]:  # CRC mismatch: not a real page
            continue
        cut = len(tail) - (at + end)
        if not page.last:
            return ("its last complete Ogg page does not end the stream (no end-of-stream flag)"
                    + (f", {cut} bytes of a cut page follow" if cut else ""))
        return None


@dataclass(frozen=True)
class Mp3Layout:
    """Where an MP3's audio starts and what length its first frame states."""

    audio_offset: int  # byte offset of the first MPEG frame (after any ID3v2 tags)
    sample_rate: int
    samples_per_frame: int
    stated: int | None  # samples a Xing/Info/VBRI frame states (after LAME's delay and padding); None: unstated
    header: str  # "Xing", "Info" or "VBRI" where stated, else ""


def mp3_layout(path: Path) -> Mp3Layout | None:
    """The MP3's layout as mutagen reads it, or None where mutagen finds no MPEG audio (libsndfile decides then).

    mutagen skips ID3v2 tags (however many and however large: cover art), syncs on consecutive frames, and parses a
    Xing/Info frame (with LAME's encoder delay and padding) or a VBRI frame in the first frame; it sets the frame's
    ``length`` only from such a frame (``MPEGInfo.length`` falls back to an estimate from the file size, which is
    exactly what must not be taken for a promise), so the first frame is read again with ``MPEGFrame``."""
    import mutagen
    from mutagen.mp3 import MPEGFrame, MPEGInfo

    try:
        with open(path, "rb") as fh:
            info = MPEGInfo(fh)
            fh.seek(info.frame_offset)
            first = MPEGFrame(fh)
    except (mutagen.MutagenError, OSError, AttributeError):
        return None
    spf = 384 if info.layer == 1 else 576 if info.layer == 3 and info.version >= 2 else 1152
    length = vars(first).get("length")
    stated = None if length is None else int(round(length * info.sample_rate))
    header = ""
    if stated is not None:
        with open(path, "rb") as fh:
            fh.seek(info.frame_offset)
            frame = fh.read(64)
        header = next((h for h in ("Xing", "Info", "VBRI") if h.encode() in frame), "Xing")
    return Mp3Layout(int(info.frame_offset), int(info.sample_rate), spf, stated, header)


def id3v2_overrun(path: Path) -> str | None:
    """Why a file that starts with an ID3v2 tag is cut inside it (the tag's size runs past the end), or None."""
    from mutagen.id3 import BitPaddedInt

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(10)
    if len(head) < 10 or head[:3] != b"ID3":
        return None
    end = 10 + int(BitPaddedInt(head[6:10])) + (10 if head[5] & 0x10 else 0)  # flag 0x10: a footer follows
    return f"{size} bytes, but its ID3v2 tag alone declares {end}" if end >= size else None
