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


#: what a plug-in must provide (the rest has defaults); ``marble models check`` names any that is missing
REQUIRED_METHODS = ("hidden_states", "num_frames")
REQUIRED_ATTRIBUTES = ("sample_rate", "frame_rate", "num_states", "dim")


class Encoder(torch.nn.Module):
    """A frozen audio encoder as marble sees it (the contract; docs/encoders.md has a worked example).

    Subclass it, set the four class attributes, implement :meth:`hidden_states` and :meth:`num_frames`;
    override :meth:`prepare` when the model normalises its input and :meth:`identity` to add what makes
    its features reproducible (a weights hash, a revision). ``marble models check file.py:Class`` runs
    any encoder through this contract and names what is missing or wrong.

    Attributes:
        name: the model's display name in results (default: the class or entry point name).
        sample_rate: input rate in Hz; marble resamples audio to it.
        frame_rate: output frames per second of ``hidden_states``.
        num_states: hidden states returned, ``L + 1`` for an L-layer model (state 0: the embedding stage).
        dim: width ``H`` of every hidden state.
    """

    #: the model's display name in results (a hub id, a folder name, the class name); never a temp path
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
        windowing, e.g. MERT's zero-mean/unit-variance normalisation. Must keep the shape.
        Default: identity."""
        return wav

    def hidden_states(self, wav: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Every hidden state for a batch of equal-length mono windows (required).

        ``wav``: float ``[B, T]`` at ``sample_rate``. Returns ``[B, S, T', H]`` with ``S = num_states``
        (or ``upto + 1`` when ``upto`` is given: states ``0..upto``, and the model may stop early),
        ``T' = num_frames(T)``, ``H = dim``. Runs under ``torch.inference_mode`` on the encoder's device;
        each item must not depend on the others in the batch."""
        raise NotImplementedError(f"{type(self).__name__} does not implement Encoder.hidden_states(wav, upto=None) "
                                  "-> [B, S, T', H] (see docs/encoders.md)")

    def num_frames(self, num_samples: int) -> int:
        """Frames ``hidden_states`` produces for ``num_samples`` input samples (required)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement Encoder.num_frames(num_samples) -> int "
                                  "(see docs/encoders.md)")

    def identity(self) -> dict[str, Any]:
        """What makes cached features reproducible (recorded in the cache manifest): id, revision /
        weights hash, config. Extend the default dict; a change of identity invalidates a cache."""
        return {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "num_states": self.num_states, "dim": self.dim}

    def forward(self, wav: torch.Tensor) -> torch.Tensor:  # pragma: no cover - alias
        return self.hidden_states(wav)


def missing_methods(enc: Any) -> list[str]:
    """The required methods ``enc`` leaves to the base class (or lacks altogether)."""
    out = []
    for m in REQUIRED_METHODS:
        fn = getattr(type(enc), m, None)
        if fn is None or fn is getattr(Encoder, m):
            out.append(m)
    return out
