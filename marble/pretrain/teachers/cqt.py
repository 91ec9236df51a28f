"""Constant-Q transform target (MERT-v1: 336 bins, 48 per octave from 32.7 Hz, hop 320 at 24 kHz -> 75 Hz).

Same definition as the ``nnAudio.features.cqt.CQT`` (CQT1992v2) call in MERT's code (``filter_scale=1,
norm=1, window='hann', center=True, pad_mode='constant', output_format='Magnitude'``, librosa scaling):
bin ``k`` at ``f_k = fmin * 2**(k/48)`` has a periodic-Hann kernel of ``l_k = ceil(Q sr / f_k)`` samples,
``Q = 1 / (2**(1/48) - 1)``, and frame ``n`` (centred on sample ``n * hop``) is

    X[k, n] = sqrt(l_k) / sum(w) * | sum_j x[n*hop + j - ceil(l_k/2)] w[j] exp(2 pi i f_k (j - ceil(l_k/2)) / sr) |

(zeros outside the signal). Output: the **magnitude**, as MERT regressed it with MSE; we keep MERT's target
rather than a log-magnitude so the recipe is the published one (its scale follows the input level, which
the per-clip input normalisation of the 95M recipe fixes).

Implemented without nnAudio: nnAudio puts all 336 kernels in one 65 536-tap convolution (the lowest
bin is 50 468 samples long). Here the kernels are grouped by octave and each octave is one strided
``conv1d`` only as wide as its longest kernel, which gives the same numbers at about a quarter of the
multiply-adds. ``tests/test_pretrain_teachers.py`` checks it against a float64 evaluation of the formula
above (and against nnAudio itself when it is installed).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def cqt_frequencies(fmin: float, n_bins: int, bins_per_octave: int) -> np.ndarray:
    return fmin * 2.0 ** (np.arange(n_bins) / float(bins_per_octave))


def cqt_lengths(sr: int, fmin: float, n_bins: int, bins_per_octave: int, filter_scale: float = 1.0) -> np.ndarray:
    q = float(filter_scale) / (2.0 ** (1.0 / bins_per_octave) - 1.0)
    return np.ceil(q * sr / cqt_frequencies(fmin, n_bins, bins_per_octave)).astype(np.int64)


def hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


class CQT(nn.Module):
    """``wav [B, T]`` -> magnitude CQT ``[B, n_bins, T // hop + 1]`` (fp32)."""

    def __init__(self, sample_rate: int = 24000, hop_length: int = 320, fmin: float = 32.7, n_bins: int = 336,
                 bins_per_octave: int = 48, filter_scale: float = 1.0):
        super().__init__()
        freqs = cqt_frequencies(fmin, n_bins, bins_per_octave)
        if freqs[-1] > sample_rate / 2:
            raise ValueError(f"top CQT bin {freqs[-1]:.0f} Hz is above the Nyquist frequency {sample_rate / 2:.0f} Hz")
        self.sample_rate, self.hop_length, self.n_bins = int(sample_rate), int(hop_length), int(n_bins)
        self.fmin, self.bins_per_octave = float(fmin), int(bins_per_octave)
        lengths = cqt_lengths(sample_rate, fmin, n_bins, bins_per_octave, filter_scale)
        self.lengths = lengths
        self._groups = []
        for g, start in enumerate(range(0, n_bins, bins_per_octave)):
            bins = range(start, min(start + bins_per_octave, n_bins))
            half = int(math.ceil(max(lengths[b] for b in bins) / 2)) + 1
            width = 2 * half  # tap m is sample offset m - half from the frame centre
            kern = np.zeros((2 * len(bins), width), dtype=np.float64)
            for i, b in enumerate(bins):
                n = int(lengths[b])
                w = hann_periodic(n)
                offs = np.arange(n) - (n + 1) // 2  # j - ceil(l/2)
                phase = 2.0 * np.pi * freqs[b] * offs / sample_rate
                scale = math.sqrt(n) / w.sum()
                kern[i, offs + half] = w * np.cos(phase) * scale
                kern[len(bins) + i, offs + half] = w * np.sin(phase) * scale
            self.register_buffer(f"kernel{g}", torch.tensor(kern, dtype=torch.float32)[:, None, :], persistent=False)
            self._groups.append((len(bins), half))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim == 1:
            wav = wav[None]
        x = wav.float()[:, None, :]
        outs = []
        with torch.autocast(device_type=x.device.type, enabled=False):
            for g, (nb, half) in enumerate(self._groups):
                y = nn.functional.conv1d(nn.functional.pad(x, (half, half)), getattr(self, f"kernel{g}"),
                                         stride=self.hop_length)
                outs.append(torch.sqrt(y[:, :nb].pow(2) + y[:, nb:].pow(2)))
        return torch.cat(outs, dim=1)

    def num_frames(self, num_samples: int) -> int:
        return int(num_samples) // self.hop_length + 1
