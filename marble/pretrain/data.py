"""Training audio: random fixed-length crops from every audio file below a folder.

* Files: any extension libsndfile decodes (wav, flac, ogg, mp3, aiff, ...), found recursively, sorted.
* Crops: ``crop_seconds`` (5 s in MERT-v1) taken at a random offset, decoded in the file's own rate and
  resampled with soxr (:func:`marble.audio.load`), mono. Files **shorter than the crop are skipped**, not
  padded: padding would need attention masks in the backbone and silent targets, and MERT's data loader also
  only used clips long enough for its crop.
* Unreadable files are reported (once) and skipped; another file is drawn in their place.
* Step ``s`` takes ``batch_size x accumulate x world`` crops; crop ``g`` of the step (``g`` counts over ranks,
  then micro-batches, then clips: rank ``r`` holds ``g`` in ``[r * A * B, (r + 1) * A * B)``) is a pure function
  of ``(seed, s, g)``. A resumed run sees exactly the crops it would have seen, ``__getitem__(step)`` can run in
  DataLoader workers, each rank decodes only its own crops, and the step's crops are the same however they are
  split into ranks and micro-batches (4 x 2 micro-batches = 8 x 1 = 2 ranks x 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from marble import audio
from marble.pretrain import PretrainError

EXTRA_EXTENSIONS = {".mp3", ".opus", ".aif", ".oga"}
MAX_DRAWS_PER_CLIP = 50


def audio_extensions() -> set[str]:
    return {"." + k.lower() for k in sf.available_formats()} | EXTRA_EXTENSIONS


def list_audio_files(audio_dir: str | Path) -> list[Path]:
    d = Path(audio_dir).expanduser()
    if not d.is_dir():
        raise PretrainError(f"{d}: audio folder not found; pass an existing folder of training audio with --audio-dir")
    exts = audio_extensions()
    files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))
    if not files:
        raise PretrainError(f"{d}: no audio files found (looked recursively for {', '.join(sorted(exts)[:8])}, ...); "
                            "put training audio there or point --audio-dir at the right folder")
    return files


class CropBatches(torch.utils.data.Dataset):
    """``dataset[step]`` -> ``{"wav": float32 [accumulate * B, crop], "skipped": [(path, reason), ...], "step": s}``:
    this rank's crops of the step, micro-batch after micro-batch."""

    def __init__(self, files: list[Path], sample_rate: int, crop_seconds: float, batch_size: int, seed: int,
                 num_steps: int, accumulate: int = 1, world: int = 1, rank: int = 0):
        self.files = [Path(f) for f in files]
        self.sample_rate = int(sample_rate)
        self.crop_seconds = float(crop_seconds)
        self.crop = int(round(crop_seconds * sample_rate))
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_steps = int(num_steps)
        self.accumulate, self.world, self.rank = int(accumulate), int(world), int(rank)
        self._info: dict[int, tuple[int, int] | str] = {}

    def __len__(self) -> int:
        return self.num_steps

    def _file_info(self, i: int) -> tuple[int, int] | str:
        if i not in self._info:
            try:
                sr, n = audio.info(self.files[i])
                self._info[i] = (sr, n) if n > 0 else "no audio samples"
            except audio.AudioError as e:
                self._info[i] = e.reason
        return self._info[i]

    def __getitem__(self, step: int) -> dict:
        per_rank = self.batch_size * self.accumulate
        clips, skipped = [], []
        for g in range(self.rank * per_rank, (self.rank + 1) * per_rank):
            clips.append(self._crop(int(step), g, skipped))
        return {"wav": torch.from_numpy(np.stack(clips)), "skipped": skipped, "step": int(step)}

    def _crop(self, step: int, g: int, skipped: list) -> np.ndarray:
        """Crop ``g`` of step ``step``: files are drawn from ``(seed, step, g)`` until one is long enough."""
        rng = np.random.default_rng([self.seed, step, g])
        for _ in range(MAX_DRAWS_PER_CLIP):
            i = int(rng.integers(len(self.files)))
            info = self._file_info(i)
            if isinstance(info, str):
                skipped.append((str(self.files[i]), info))
                continue
            sr, n = info
            need = int(np.ceil(self.crop_seconds * sr))
            if n < need:
                skipped.append((str(self.files[i]), f"shorter than the {self.crop_seconds:g} s crop"))
                continue
            start = int(rng.integers(0, n - need + 1))
            try:
                wav = audio.load(self.files[i], self.sample_rate, offset=start / sr, duration=need / sr)
            except audio.AudioError as e:
                self._info[i] = e.reason
                skipped.append((str(self.files[i]), e.reason))
                continue
            if len(wav) < self.crop:  # resampling rounding: at most a few samples
                wav = np.pad(wav, (0, self.crop - len(wav)))
            return wav[: self.crop]
        raise PretrainError(
            f"could not fill a batch of {self.batch_size} crops of {self.crop_seconds:g} s from {len(self.files)} "
            f"files ({MAX_DRAWS_PER_CLIP} draws for one crop; last problems: {skipped[-3:]}); add audio files at "
            f"least {self.crop_seconds:g} s long or lower --crop-seconds")
