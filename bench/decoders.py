"""Decoder and resampler differences on a real recording (figures for docs/fidelity.md).

marble decodes with libsndfile (``soundfile``; mp3 through libmpg123) and resamples with soxr (HQ); the
MARBLE reference code used ``torchaudio.load`` (FFmpeg or SoX underneath) and ``torchaudio.transforms.Resample``
(Hann-windowed sinc, width 6, rolloff 0.99). This script measures, on one real recording:

* mp3 decoding: the file is encoded to mp3 with ffmpeg/libmp3lame when it is not an mp3 already, then decoded by
  libsndfile and by ffmpeg (``-f f32le``); printed: the sample counts, the lag that aligns them best, and the
  sample difference (max abs, RMS, SNR in dB) before and after that alignment;
* resampling 44.1 kHz -> 24 kHz of the decoded (mono) signal: soxr HQ vs torchaudio's ``resample`` when torchaudio
  is importable (it is an optional extra), else that part is skipped and said so.

    python bench/decoders.py /usr/share/games/wesnoth/1.16/data/core/music/battle.ogg --seconds 30

Needs ffmpeg on PATH. Real music ships in Debian packages (e.g. ``wesnoth-1.16-music``: Ogg Vorbis).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


def ffmpeg_decode(path: Path, channels: int) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-acodec", "pcm_f32le",
                          "-ac", str(channels), "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<f4").reshape(-1, channels)


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 4096) -> int:
    """Lag L maximising the correlation of a[t] with b[t + L] (mono signals)."""
    n = min(len(a), len(b)) - 2 * max_lag
    seg = a[max_lag:max_lag + n]
    scores = [float(np.dot(seg, b[max_lag + lag:max_lag + lag + n])) for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


def diff(a: np.ndarray, b: np.ndarray) -> dict:
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    e = a - b
    snr = 10 * np.log10(np.sum(a ** 2) / max(np.sum(e ** 2), 1e-30))
    return {"n": n, "max_abs": float(np.abs(e).max()), "rms": float(np.sqrt(np.mean(e ** 2))),
            "signal_rms": float(np.sqrt(np.mean(a ** 2))), "snr_db": round(float(snr), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", type=Path, help="a real recording (mp3, or anything ffmpeg reads: encoded to mp3 first)")
    ap.add_argument("--seconds", type=float, default=30.0, help="excerpt length encoded to mp3")
    ap.add_argument("--bitrate", default="192k")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("error: ffmpeg is not on PATH (apt-get install ffmpeg)")
    out = {"source": str(a.audio), "soundfile": sf.__version__, "libsndfile": sf.__libsndfile_version__,
           "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]}
    with tempfile.TemporaryDirectory() as tmp:
        # mp3s with and without the LAME/Xing header (encoder delay and padding for gapless decoding): older
        # collections (MTT, Emomusic) may lack it, and decoders then disagree on where the audio starts
        variants = {"as_given": (a.audio, [])} if a.audio.suffix.lower() == ".mp3" else {
            "lame_header": (Path(tmp) / "lame.mp3", []), "no_xing_header": (Path(tmp) / "noxing.mp3", ["-write_xing", "0"])}
        for name, (mp3, extra) in variants.items():
            if mp3 != a.audio:
                subprocess.run(["ffmpeg", "-v", "error", "-i", str(a.audio), "-t", str(a.seconds), "-ar", "44100",
                                "-c:a", "libmp3lame", "-b:a", a.bitrate, *extra, str(mp3)], check=True)
                out["encoded"] = f"first {a.seconds:g} s -> mp3 44.1 kHz, libmp3lame {a.bitrate}"
            x_sf, sr = sf.read(str(mp3), dtype="float32", always_2d=True)
            x_ff = ffmpeg_decode(mp3, x_sf.shape[1])
            m_sf, m_ff = x_sf.mean(1), x_ff.mean(1)
            lag = best_lag(m_sf, m_ff)
            aligned = (m_sf[max(0, -lag):], m_ff[max(0, lag):])
            out[f"mp3_{name}"] = {"sample_rate": sr, "channels": x_sf.shape[1], "frames_libsndfile": len(x_sf),
                                  "frames_ffmpeg": len(x_ff), "lag_ffmpeg_minus_libsndfile": lag,
                                  "as_decoded": diff(m_sf, m_ff), "aligned": diff(*aligned)}
        try:
            import torch
            import torchaudio.functional as taf

            y_sox = soxr.resample(m_sf, sr, 24000, quality="HQ")
            y_ta = taf.resample(torch.from_numpy(m_sf)[None], sr, 24000)[0].numpy()
            out["resample_44100_to_24000"] = {"soxr_hq_vs_torchaudio": diff(y_sox, y_ta),
                                              "lengths": [len(y_sox), len(y_ta)]}
        except Exception as e:  # torchaudio is optional
            out["resample_44100_to_24000"] = f"skipped: torchaudio not importable ({type(e).__name__}: {e})"
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
