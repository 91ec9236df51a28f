"""Decoding, in DataLoader workers: each item's audio decoded, cropped and resampled (a failure comes back as a
reason, never as silence); the workers die with the extract process."""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

from marble.audio import AudioError, load


def _identity(x):
    return x


class _die_with_parent:
    """DataLoader ``worker_init_fn``: on Linux the kernel kills a decode worker when the extract process
    dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``), so no orphaned worker keeps its memory."""

    def __init__(self, parent: int):
        self.parent = parent

    def __call__(self, worker_id: int) -> None:
        if not sys.platform.startswith("linux"):
            return
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl (non-glibc)
            return
        if os.getppid() != self.parent:  # the parent died before the call
            os._exit(1)


class _Decode(torch.utils.data.Dataset):
    """Decodes, crops and resamples one item; failures come back as a reason, never as silence."""

    def __init__(self, jobs: list[tuple[int, Any]], sample_rate: int, crop_offset: float, crop_seconds: float | None,
                 zscore: bool = False):
        self.jobs, self.sr, self.crop_offset, self.crop_seconds = jobs, sample_rate, crop_offset, crop_seconds
        self.zscore = zscore

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        idx, item = self.jobs[i]
        durations = [d for d in (item.duration, self.crop_seconds) if d is not None]
        said: list[str] = []  # what the decoder wrote to stderr (libmpg123's warnings), for the manifest
        try:
            wav = load(item.path, self.sr, offset=item.offset + self.crop_offset, duration=min(durations) if durations else None,
                       zscore=self.zscore, messages=said)
            return idx, wav, None, said
        except AudioError as e:
            return idx, None, e.reason, said
        except Exception as e:  # anything a broken file can throw at a decoder
            return idx, None, f"{type(e).__name__}: {e}", said


def decoded(jobs: list[tuple[int, Any]], sample_rate: int, audio, num_workers: int) -> torch.utils.data.DataLoader:
    """``(index, wav or None, failure reason or None, decoder messages)`` of each ``(index, item)`` job, in order:
    cropped as the card's ``audio`` says, decoded by ``num_workers`` worker processes (0: in this process)."""
    return torch.utils.data.DataLoader(
        _Decode(jobs, sample_rate, audio.crop_offset_seconds, audio.crop_seconds, audio.zscore), batch_size=None,
        shuffle=False, num_workers=num_workers, collate_fn=_identity, worker_init_fn=_die_with_parent(os.getpid()),
        prefetch_factor=4 if num_workers else None)
