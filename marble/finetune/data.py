"""The task's own audio for fine-tuning, read as the card says (no feature cache).

Every clip is decoded by :func:`marble.audio.load`: the card's crop (``crop_offset_seconds``,
``crop_seconds``, the item's excerpt) cut in the file's rate before resampling, z-normalised when the card says
(``audio.zscore``), resampled to the encoder's rate, then ``encoder.prepare`` (its input normalisation) on the
clip.

* **Training** (:class:`TrainCrops`): an epoch visits the training files in the order
  ``numpy default_rng([seed, epoch]).permutation`` (the probes' :func:`marble.probe.sweep.batch_order`);
  every file gives **one crop** per epoch: ``train_crop_seconds`` (default: the card's training chunk, else its
  window, else the whole clip) at an offset drawn from ``default_rng([seed, epoch, file])`` (the augmentation:
  a new position every epoch; a clip no longer than the crop is taken whole), ``prepare``\\ d as a clip of its
  own. A step takes ``batch_size x accumulate x processes`` files (a last partial step is dropped); rank ``r``
  takes files ``[r * A * B, (r + 1) * A * B)`` of the step, ``B`` per micro-batch. All of it is a pure
  function of (seed, step), so a resumed or data-parallel run sees exactly the crops of an uninterrupted one.
  Targets: the file's label (clip tasks) or its beats relative to the crop, at the encoder's frame rate,
  widened by ``training.label_widening`` frames (:func:`marble.beat.beat_targets`).
* **Evaluation** (:class:`EvalClips`): every file whole (the card's crop), ``prepare``\\ d, cut into the
  card's windows as ``marble extract`` cuts them (:func:`marble.audio.windows`).
"""

from __future__ import annotations

import numpy as np
import torch

from marble.audio import AudioError, info, load, windows
from marble.finetune import FinetuneError
from marble.probe.sweep import batch_order


def clip_bounds(card, item) -> tuple[float, float | None]:
    """(offset in seconds, duration or None = to the end) of an item's clip under the card's crop."""
    a = card.audio
    durations = [d for d in (item.duration, a.crop_seconds) if d is not None]
    return item.offset + a.crop_offset_seconds, (min(durations) if durations else None)


def read_clip(card, item, encoder, start: float = 0.0, seconds: float | None = None) -> np.ndarray:
    """The prepared clip of ``item`` (or ``seconds`` of it from ``start`` within the clip)."""
    offset, duration = clip_bounds(card, item)
    if seconds is not None:
        duration = seconds if duration is None else min(seconds, max(duration - start, 0.0))
    wav = load(item.path, encoder.sample_rate, offset=offset + start, duration=duration, zscore=card.audio.zscore)
    return np.asarray(encoder.prepare(wav), dtype=np.float32)


def train_crop_seconds(card, cfg) -> float | None:
    a = card.audio
    return cfg.train_crop_seconds or a.train_chunk_seconds or a.window_seconds


class TrainCrops(torch.utils.data.Dataset):
    """``dataset[step]`` -> this rank's micro-batches of global step ``step``: ``{"step", "micro": [[(wav,
    target), ...] per micro-batch]}``. Runs in DataLoader workers."""

    def __init__(self, card, items, encoder, crop_seconds: float | None, seed: int, batch_size: int,
                 accumulate: int = 1, world: int = 1, rank: int = 0):
        from marble.datasets.base import label_array

        self.card, self.items, self.encoder = card, list(items), encoder
        self.crop, self.seed = crop_seconds, int(seed)
        self.batch_size, self.accumulate, self.world, self.rank = int(batch_size), int(accumulate), int(world), int(rank)
        self.frames = not card.is_clip_level
        self.labels = None if self.frames else label_array(card, self.items)
        self.durations = []
        for it in self.items:  # what each clip holds after the card's crop (headers only)
            sr, n = info(it.path)
            offset, duration = clip_bounds(card, it)
            room = max(n / sr - offset, 0.0)
            self.durations.append(room if duration is None else min(duration, room))
        if self.frames:
            from marble.beat.train import _beats

            self.beats = [_beats(it) for it in self.items]

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.accumulate * self.world

    def steps_per_epoch(self) -> int:
        return len(self.items) // self.effective_batch

    def files(self, step: int) -> np.ndarray:
        """The training files (indices) of global step ``step``, the whole step over every rank."""
        epoch, s = divmod(int(step), self.steps_per_epoch())
        e = self.effective_batch
        return batch_order(self.seed, epoch, len(self.items))[s * e:(s + 1) * e]

    def crop_start(self, epoch: int, f: int) -> float:
        room = self.durations[f] - (self.crop or self.durations[f])
        if room <= 0:
            return 0.0
        return float(np.random.default_rng([self.seed, epoch, int(f)]).random() * room)

    def example(self, f: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        it = self.items[f]
        start = self.crop_start(epoch, f)
        try:
            wav = read_clip(self.card, it, self.encoder, start, self.crop)
        except AudioError as e:
            raise FinetuneError(f"{e}; check the dataset with `marble data verify {self.card.id}` (training stopped; "
                                "the last checkpoint is kept: rerun to resume)") from None
        if self.encoder.num_frames(len(wav)) < 1:
            raise FinetuneError(f"{it.path}: {len(wav) / self.encoder.sample_rate:.3f} s of audio gives no encoder "
                                "frame; raise train_crop_seconds or fix the file")
        if not self.frames:
            return wav, np.asarray(self.labels[f])
        from marble.beat import beat_targets

        a = self.card.audio
        shift = a.crop_offset_seconds + start
        n = self.encoder.num_frames(len(wav))
        return wav, beat_targets(self.beats[f] - shift, n, self.encoder.frame_rate, self.card.training.label_widening)

    def __len__(self) -> int:  # pragma: no cover - indexed by step, the sampler sets the range
        return 1 << 62

    def __getitem__(self, step: int) -> dict:
        epoch = int(step) // self.steps_per_epoch()
        files = self.files(step)
        b, a = self.batch_size, self.accumulate
        micro = []
        for j in range(a):
            m = self.rank * a + j
            micro.append([self.example(int(f), epoch) for f in files[m * b:(m + 1) * b]])
        return {"step": int(step), "micro": micro}


def equal_length_groups(examples: list) -> list[list[int]]:
    """Indices of ``examples`` ((wav, target) pairs) grouped by wav length, in first-appearance order."""
    by_len: dict[int, list[int]] = {}
    for i, (w, _) in enumerate(examples):
        by_len.setdefault(len(w), []).append(i)
    return list(by_len.values())


class EvalClips:
    """Prepared clips of a validation/test split, decoded once and kept in memory up to ``memory_gb``; a file
    that cannot be decoded, or is too short for a window, is skipped with its reason (the result records it)."""

    def __init__(self, card, items, encoder, memory_gb: float = 2.0):
        self.card, self.items, self.encoder = card, list(items), encoder
        self.memory_gb = float(memory_gb)
        self._memo: dict[int, np.ndarray] = {}
        self.skipped: dict[int, str] = {}

    def clip(self, i: int) -> np.ndarray | None:
        if i in self._memo:
            return self._memo[i]
        if i in self.skipped:
            return None
        try:
            wav = read_clip(self.card, self.items[i], self.encoder)
        except AudioError as e:
            self.skipped[i] = e.reason
            return None
        a, sr = self.card.audio, self.encoder.sample_rate
        # clip tasks score the card's windows; frame tasks the whole clip
        wins = windows(len(wav), sr, a.window_seconds, a.min_window_seconds) if self.card.is_clip_level else [(0, len(wav))]
        if not wins or any(self.encoder.num_frames(b - s) < 1 for s, b in wins):
            self.skipped[i] = (f"too short: {len(wav) / sr:.2f} s, shorter than the minimum window of "
                               f"{a.min_window_seconds:g} s")
            return None
        if sum(v.nbytes for v in self._memo.values()) + wav.nbytes <= self.memory_gb * 1e9:
            self._memo[i] = wav
        return wav

    def windows(self, i: int) -> list[np.ndarray]:
        wav = self.clip(i)
        if wav is None:
            return []
        a = self.card.audio
        return [wav[s:b] for s, b in windows(len(wav), self.encoder.sample_rate, a.window_seconds, a.min_window_seconds)]

    def skipped_entries(self) -> list[dict]:
        return [{"file": str(self.items[i].path), "uid": self.items[i].uid, "reason": r} for i, r in sorted(self.skipped.items())]
