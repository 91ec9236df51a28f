"""The open-unmix-style separation head of the constrained track (PROTOCOL §4), one per source:

input shift and scale (learnable, init 0 and 1, one per feature dimension: ``(x + shift) * scale``,
the reference's ``input_mean``/``input_scale``) -> fc1 (no bias) -> BatchNorm -> tanh -> LSTM
(``layers`` deep, ``hidden`` units, unidirectional, dropout) -> skip concatenation -> fc2 -> BatchNorm
-> ReLU -> fc3 -> BatchNorm -> output scale/mean -> ReLU, multiplied by the mixture magnitude. Input: encoder frames ``[B, T, H]``
aligned to the STFT frames; output: the source magnitude ``[B, F, T]``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class OpenUnmixHead(nn.Module):
    def __init__(self, in_dim: int, num_bins: int, hidden: int = 512, layers: int = 3, dropout: float = 0.4,
                 bidirectional: bool = False):
        super().__init__()
        self.input_mean = nn.Parameter(torch.zeros(in_dim))  # the shift, added before the scale
        self.input_scale = nn.Parameter(torch.ones(in_dim))
        self.fc1 = nn.Linear(in_dim, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.lstm = nn.LSTM(hidden, hidden // 2 if bidirectional else hidden, num_layers=layers, batch_first=True,
                            bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)
        self.fc2 = nn.Linear(hidden * 2, hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, num_bins, bias=False)
        self.bn3 = nn.BatchNorm1d(num_bins)
        self.output_scale = nn.Parameter(torch.ones(num_bins))
        self.output_mean = nn.Parameter(torch.ones(num_bins))
        self.config = {"in_dim": int(in_dim), "num_bins": int(num_bins), "hidden": int(hidden), "layers": int(layers),
                       "dropout": float(dropout), "bidirectional": bool(bidirectional)}  # rebuilds it: cls(**config)

    @staticmethod
    def _bn(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return bn(x.reshape(B * T, D)).reshape(B, T, D)

    def forward(self, x: torch.Tensor, mix_mag: torch.Tensor) -> torch.Tensor:
        return self.step(x, mix_mag)[0]

    def step(self, x: torch.Tensor, mix_mag: torch.Tensor, state=None):
        """``forward`` on consecutive frames, carrying the LSTM state: a track fed block by block
        (eval mode) gives the same output as in one piece, for the card's unidirectional LSTM only (a
        bidirectional one reads the future, so it must see the whole track at once). Returns (magnitudes, state)."""
        y, state = self.frames(x, mix_mag.transpose(1, 2), state)
        return y.transpose(1, 2), state  # [B, F, T]

    def frames(self, x: torch.Tensor, mix_frames: torch.Tensor, state=None, draws=None):
        """:meth:`step` in the head's own frames-major layout: the mixture magnitude ``[B, T, F]`` in, the source
        magnitude ``[B, T, F]`` out (the same numbers; the trainer compares it with frames-major targets, so no
        pass over the bins runs strided). ``draws``: a context manager factory the LSTM runs in, the one module that
        draws random numbers (dropout between its layers): the trainer seeds a model's draws there, holding
        torch's global generator for that call only, while other models run beside it."""
        if self.lstm.bidirectional and state is not None:
            raise ValueError("a bidirectional LSTM head cannot be streamed block by block; feed the whole track")
        h = torch.tanh(self._bn(self.bn1, self.fc1((x + self.input_mean) * self.input_scale)))
        with draws() if draws is not None else contextlib.nullcontext():
            out, state = self.lstm(h, state)
        h = torch.relu(self._bn(self.bn2, self.fc2(torch.cat([h, out], -1))))
        h = self._bn(self.bn3, self.fc3(h)) * self.output_scale + self.output_mean
        return torch.relu(h) * mix_frames, state
