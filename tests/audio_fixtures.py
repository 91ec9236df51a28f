"""MP3s as real encoders write them, tagged as real collections tag them, and cut as interrupted copies are.

Encoders: ffmpeg's libmp3lame (with its Info/Xing frame, and without: ``-write_xing 0``, as when ffmpeg writes to a
pipe), the ``lame`` CLI (with its LAME Info/Xing frame, and without: ``-t``), and libsndfile's own writer (through
soundfile). Tags (written with mutagen): a small ID3v2 tag (~2 kB, as the orchestral-note collection of issue 22
carried), an ID3v2 tag with ~150 kB of cover art, and an APEv2 tag at the end. ffmpeg and lame come from Debian
(``.ci/run`` installs them); a test needing a missing one is skipped, naming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 22050
ENCODERS = {  # name: (tool, argv before the output path, states its length in a Xing/Info frame)
    "ffmpeg-cbr": ("ffmpeg", ["-c:a", "libmp3lame", "-b:a", "64k"], True),
    "ffmpeg-cbr-noxing": ("ffmpeg", ["-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0"], False),
    "ffmpeg-vbr": ("ffmpeg", ["-c:a", "libmp3lame", "-q:a", "4"], True),
    "ffmpeg-vbr-noxing": ("ffmpeg", ["-c:a", "libmp3lame", "-q:a", "4", "-write_xing", "0"], False),
    "lame-cbr": ("lame", ["-b", "64"], True),
    "lame-cbr-noxing": ("lame", ["-t", "-b", "64"], False),
    "lame-vbr": ("lame", ["-V", "4"], True),
    "lame-vbr-noxing": ("lame", ["-t", "-V", "4"], False),
    "soundfile": (None, [], True),
}
TAGS = ("none", "id3", "cover-art", "ape")


def music(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A few seconds of something music-like (a melody of decaying plucked notes over noise), float32 mono: VBR
    encoders vary their bitrate on it as on music."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    x = 0.02 * rng.standard_normal(n)
    step = max(1, int(0.125 * sr))
    for start in range(0, n, step):
        f = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        t = np.arange(min(n - start, 2 * step)) / sr
        x[start:start + len(t)] += 0.3 * np.exp(-6 * t) * np.sin(2 * np.pi * f * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * f * t))
    return (x / max(1.0, np.abs(x).max() / 0.9)).astype(np.float32)


def need(tool: str | None) -> None:
    if tool is not None and shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install {tool}; .ci/run installs it)")


def encode(encoder: str, x: np.ndarray, out: Path, sr: int = SR) -> Path:
    """``x`` written as MP3 by ``encoder`` (a key of :data:`ENCODERS`)."""
    tool, args, _ = ENCODERS[encoder]
    need(tool)
    if tool is None:
        sf.write(str(out), x, sr, format="MP3")
        return out
    wav = out.with_suffix(".src.wav")
    sf.write(str(wav), x, sr, subtype="PCM_16")
    if tool == "ffmpeg":
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), *args, str(out)]
    else:
        cmd = ["lame", "--quiet", *args, str(wav), str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    wav.unlink()
    return out


def tag(path: Path, kind: str) -> Path:
    """Add a tag of ``kind`` (:data:`TAGS`) in place, as taggers do (mutagen)."""
    from mutagen.apev2 import APEv2
    from mutagen.id3 import APIC, ID3, TIT2, TPE1

    if kind == "id3":  # a title and artist in a ~2 kB tag (the padding taggers leave)
        t = ID3()
        t.add(TIT2(encoding=3, text="violin A4 forte arco"))
        t.add(TPE1(encoding=3, text="an orchestra"))
        t.save(path, padding=lambda info: 2000)
    elif kind == "cover-art":
        t = ID3()
        t.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=os.urandom(150_000)))
        t.save(path)
    elif kind == "ape":
        t = APEv2()
        t["Title"] = "violin A4 forte arco"
        t.save(path)
    elif kind != "none":
        raise ValueError(kind)
    return path


def mp3(tmp: Path, encoder: str, tag_kind: str, seconds: float, seed: int = 0) -> tuple[Path, np.ndarray]:
    """(path, source samples) of one tagged MP3 of ``seconds`` of :func:`music`."""
    x = music(seconds, seed=seed)
    p = encode(encoder, x, tmp / f"{encoder}-{tag_kind}-{seconds:g}s.mp3")
    return tag(p, tag_kind), x


def cut(path: Path, keep: float, name: str | None = None) -> Path:
    """A copy of ``path`` holding only its first ``keep`` (fraction) of the bytes: an interrupted copy."""
    data = path.read_bytes()
    out = path.with_name(name or f"cut-{path.name}")
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def cut_audio(path: Path, keep: float) -> Path:
    """Cut inside the audio frames (after any leading ID3v2 tag), keeping ``keep`` of the audio bytes."""
    from marble.audioheaders import mp3_layout

    layout = mp3_layout(path)
    data = path.read_bytes()
    start = layout.audio_offset
    out = path.with_name(f"cut-{path.name}")
    out.write_bytes(data[: start + int((len(data) - start) * keep)])
    return out
