"""The encoder contract every model (MERT, HF baselines, handcrafted, user plug-ins) implements.

Modelled on HEAR's ``load_model`` and timm's ``forward_intermediates``: an encoder declares its
sample rate, frame rate, number of hidden states and width, and returns **all** hidden states
for a batch of equal-length mono windows, optionally stopping after the deepest requested state.
Everything model-specific (input normalisation, the pre-LN last-state rule) lives inside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class Encoder(torch.nn.Module):
    #: stable id written into cache manifests (hub id, local path or plug-in name)
    name: str = "encoder"
    #: the feature cache's key, set by ``load_encoder`` from the spelling (``marble.encoders.identity``);
    #: None for an encoder built by hand, whose cache is keyed by ``name``
    cache_key: str | None = None
    sample_rate: int = 24000
    frame_rate: float = 75.0
    num_states: int = 1  # L + 1 (state 0 = the embedding stage output)
    dim: int = 1

    def prepare(self, wav: np.ndarray) -> np.ndarray:
        """Per-clip input processing applied to the whole (cropped, resampled) clip before
        windowing, e.g. MERT's zero-mean/unit-variance normalisation. Default: identity."""
        return wav

    def hidden_states(self, wav: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """``wav``: float ``[B, T]`` at ``sample_rate``. Returns ``[B, S, T', H]`` with
        ``S = num_states`` (or ``upto + 1`` when given: states 0..upto)."""
        raise NotImplementedError

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` input samples."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What makes cached features reproducible: id, revision / weights hash, config."""
        return {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "num_states": self.num_states, "dim": self.dim}

    def forward(self, wav: torch.Tensor) -> torch.Tensor:  # pragma: no cover - alias
        return self.hidden_states(wav)
