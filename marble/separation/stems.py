"""Reading MUSDB18 tracks (items of ``marble.datasets.musdb``) and drawing augmented training chunks.

Wav layout (MUSDB18-HQ): chunks are read lazily with soundfile seeks, so training never holds the
dataset in memory; the mixture is ``mixture.wav``. Stems layout (``.stem.mp4``): each track is
decoded once with ``stempeg`` (needs ffmpeg) and kept at the encoder rate in float16; the mixture is
stem 0, as the musdb package reads it (the shipped mixture, not the sum of the four stems).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from marble.audio import AudioError


MIXTURE = "mixture"
MIXTURE_STEM = 0  # musdb's mus.yaml stem_ids: the mixture is stem 0 of a .stem.mp4


class TrackStems:
    """Stereo sources of one track, read at ``sample_rate`` (float32 ``[C, T]``); with ``mixture``,
    :meth:`read` also gives ``"mixture"`` (``mixture.wav``, or stem 0 of a ``.stem.mp4``)."""

    def __init__(self, item, sources: list[str], sample_rate: int, mixture: bool = False):
        self.item, self.sources, self.sample_rate = item, list(sources), int(sample_rate)
        extra = item.extra or {}
        self.is_wav = bool(extra.get("is_wav", True))
        self.paths = dict(extra.get("sources") or {s: Path(item.path).parent / f"{s}.wav" for s in sources})
        self.names = self.sources + ([MIXTURE] if mixture else [])
        if mixture:
            self.paths[MIXTURE] = Path(item.path) if self.is_wav else MIXTURE_STEM
        self._decoded: dict[str, np.ndarray] | None = None
        if self.is_wav:
            missing = [str(self.paths[s]) for s in self.names if not Path(self.paths[s]).exists()]
            if missing:
                raise AudioError(item.path, f"MUSDB track {item.uid!r} lacks source files {missing}")
            infos = {s: sf.info(str(self.paths[s])) for s in self.names}
            rates = {s: int(i.samplerate) for s, i in infos.items()}
            if len(set(rates.values())) > 1:
                raise AudioError(item.path, f"MUSDB track {item.uid!r}: its files differ in sample rate ({rates}); "
                                 "re-export the track with one rate")
            self.native_rate, self.native_frames = rates[self.sources[0]], int(infos[self.sources[0]].frames)
        else:
            self._decode()

    @property
    def duration(self) -> float:
        return self.native_frames / self.native_rate

    def _decode(self) -> None:
        try:
            import stempeg
        except Exception as e:  # stempeg refuses to import without ffmpeg
            raise AudioError(self.item.path, f"reading .stem.mp4 needs stempeg and ffmpeg ({e}); "
                             "or convert MUSDB18 to wav with `musdbconvert`") from None
        ids = [self.paths[s] for s in self.names]
        stems, rate = stempeg.read_stems(str(self.item.path), stem_id=ids)
        self.native_rate, self.native_frames = int(rate), int(stems.shape[1])
        self._decoded = {}
        for s, x in zip(self.names, stems):
            self._decoded[s] = self._resample(x.T.astype(np.float32)).astype(np.float16)  # x: [n, C]

    def _resample(self, x: np.ndarray) -> np.ndarray:
        return resample(x, self.native_rate, self.sample_rate)

    def native(self, source: str, start: float = 0.0, duration: float | None = None) -> np.ndarray:
        """``[C, n]`` float32 at the file's own rate (wav layout), for scoring."""
        if not self.is_wav:
            raise AudioError(self.item.path, "native-rate stems are only read from the wav layout")
        a = int(round(start * self.native_rate))
        n = -1 if duration is None else int(round(duration * self.native_rate))
        x, _ = sf.read(str(self.paths[source]), start=a, frames=n, dtype="float32", always_2d=True)
        if x.shape[1] == 1:
            x = np.repeat(x, 2, axis=1)
        return np.ascontiguousarray(x.T)

    def read(self, source: str, start: float = 0.0, duration: float | None = None) -> np.ndarray:
        """``[C, n]`` float32 at ``sample_rate``."""
        if self._decoded is not None:
            a = int(round(start * self.sample_rate))
            b = None if duration is None else a + int(round(duration * self.sample_rate))
            return self._decoded[source][:, a:b].astype(np.float32)
        x = self.native(source, start, duration)
        return self._resample(x)


def resample(x: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """``[C, n]`` at ``rate`` -> float32 ``[C, m]`` at ``sample_rate`` (soxr HQ, channels independent)."""
    if rate == sample_rate:
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(soxr.resample(x.T, rate, sample_rate, quality="HQ").T, dtype=np.float32)


def read_mixture(path, sample_rate: int) -> tuple[np.ndarray, int]:
    """A whole mixture file as the separation reads it: float32 ``[2, T]`` at ``sample_rate`` and the file's own
    channel count. A mono file's channel is duplicated (before resampling, as :meth:`TrackStems.native` does); more
    than two channels are refused. The trainer's wav mixtures and ``marble predict``'s inputs are read here."""
    from marble.audio import info, load

    x, rate = load(path, None, mono=False), info(path)[0]
    if x.shape[0] > 2:
        raise AudioError(path, f"{x.shape[0]} channels; a MUSDB probe separates a stereo (or mono) mixture")
    return resample(np.repeat(x, 2, axis=0) if x.shape[0] == 1 else x, rate, sample_rate), int(x.shape[0])


def chunk_schedule(n_tracks: int, n_chunks: int, n_sources: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_chunks, n_sources]``: the track each source of each chunk of an epoch comes from. Every
    track serves every source equally often (``n_chunks / n_tracks`` times: the reference's dataset
    gives each training track 64 chunks an epoch as the target's track), in an order shuffled
    independently per source (random track mixing)."""
    reps = -(-n_chunks // max(1, n_tracks))
    return np.stack([rng.permutation(np.tile(np.arange(n_tracks), reps))[:n_chunks] for _ in range(n_sources)], axis=1)


def chunk_samples(tracks: list[TrackStems], seconds: float) -> int:
    """Samples in a training chunk of ``seconds`` at the stems' sample rate."""
    return int(round(seconds * tracks[0].sample_rate))


def training_chunk(tracks: list[TrackStems], seconds: float, rng: np.random.Generator, track_ids,
                   gain: tuple[float, float] = (0.25, 1.25), swap: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """One augmented chunk ``[K, C, n]``: source ``k`` from ``tracks[track_ids[k]]`` at a random
    offset, scaled by a uniform random gain, channels swapped with probability 1/2. The training
    mixture is their sum (PROTOCOL §4). ``out``: a float32 ``[K, C, n]`` array to write it into (the trainer
    reuses one buffer for a step's chunks instead of allocating and stacking ~150 MB a step)."""
    K, n = len(tracks[0].sources), chunk_samples(tracks, seconds)
    if out is None:
        out = np.zeros((K, 2, n), dtype=np.float32)
    elif out.shape != (K, 2, n):
        raise ValueError(f"training_chunk: out has shape {out.shape}, a chunk is {(K, 2, n)}")
    for k, source in enumerate(tracks[0].sources):
        tr = tracks[int(track_ids[k])]
        start = float(rng.uniform(0, max(tr.duration - seconds, 0.0)))
        x = tr.read(source, start, seconds)[:, :n]
        x = x * float(rng.uniform(*gain))
        if swap and rng.random() < 0.5:
            x = x[::-1]
        out[k, :, : x.shape[1]] = x
        out[k, :, x.shape[1]:] = 0
    return out
