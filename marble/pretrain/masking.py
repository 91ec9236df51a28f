"""Span masking of the 75 Hz frames (MERT-v1: p = 0.8, span 5, at least 2 spans per clip).

Reuses transformers' ``_compute_mask_indices`` (fairseq's ``compute_mask_indices`` with static spans):
``int(p * T / span + u)`` span starts (``u ~ U[0, 1)``, probabilistic rounding) drawn without replacement,
each span covering ``span`` frames; spans may overlap, so the masked fraction is below ``p`` (about
``1 - exp(-p)`` ~ 0.55 for long sequences). That function draws from numpy's *global* RNG; we run it under a
seed derived from our own generator and restore the global state, so masks are reproducible per step
without touching anyone else's randomness.
"""

from __future__ import annotations

import numpy as np
import torch

MASK_PROB = 0.8
MASK_LENGTH = 5
MIN_MASKS = 2


def span_mask(batch: int, frames: int, seed: int, prob: float = MASK_PROB, length: int = MASK_LENGTH,
              min_masks: int = MIN_MASKS, device: str | torch.device = "cpu") -> torch.Tensor:
    """Bool ``[batch, frames]``: True where the frame is replaced by the learned mask embedding."""
    from transformers.models.hubert.modeling_hubert import _compute_mask_indices

    state = np.random.get_state()
    try:
        np.random.seed(int(seed) % (2**32))
        m = _compute_mask_indices((batch, frames), mask_prob=prob, mask_length=length, min_masks=min_masks)
    finally:
        np.random.set_state(state)
    return torch.as_tensor(m, dtype=torch.bool, device=device)


def clip_span_masks(seeds: list[int], frames: int, prob: float = MASK_PROB, length: int = MASK_LENGTH,
                    min_masks: int = MIN_MASKS, device: str | torch.device = "cpu") -> torch.Tensor:
    """Bool ``[len(seeds), frames]``: row ``i`` is ``span_mask(1, frames, seeds[i])``. One seed per clip makes a
    clip's mask independent of the batch it lands in (micro-batches, ranks)."""
    if not seeds:
        return torch.zeros(0, frames, dtype=torch.bool, device=device)
    return torch.cat([span_mask(1, frames, s, prob, length, min_masks, device=device) for s in seeds])
