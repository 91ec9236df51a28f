"""MERT's attention relaxation as a transformers attention function (``attn_implementation="mert_relaxed"``).

MERT-v1-330M trained in fp16 with ``attention_relax = c = 32``: the logits ``w = (q k^T) / sqrt(d)`` are
formed as ``(w / c - max_j(w / c)) * c`` before the softmax. The subtraction is a per-row shift, so the
softmax and the whole layer are the same function as standard attention; what changes is where the large
numbers live. Here ``q`` is divided by ``sqrt(d) * c`` *before* the matrix product (MERT divided after it,
which does not stop the product itself from overflowing), so every fp16 intermediate is ``c`` times
smaller, the row maximum is subtracted while small, and only then is the (now <= 0) logit scaled back by
``c``: the largest logit of each row is exactly 0, so the softmax never sees ``inf - inf``. The softmax
runs in fp32.

Only the training model uses this function. Exported checkpoints are plain ``HubertModel`` weights, loaded
by ``marble extract`` with SDPA, which computes the same function (``tests/test_pretrain_model.py``).
"""

from __future__ import annotations

import torch

NAME = "mert_relaxed"
DEFAULT_RELAX = 32.0


def relaxed_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, scaling: float | None = None,
                              dropout: float = 0.0, relax: float | None = None, **kwargs):
    """Same signature and return as transformers' ``eager_attention_forward``: ``query/key/value``
    ``[B, heads, T, d]`` -> (output ``[B, T, heads, d]``, attention weights)."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if relax is None:
        relax = float(getattr(getattr(module, "config", None), "attention_relax", DEFAULT_RELAX) or DEFAULT_RELAX)
        if relax <= 0:
            relax = DEFAULT_RELAX
    w = torch.matmul(query * (scaling / relax), key.transpose(-1, -2))  # logits / c: small in fp16
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            w = w.masked_fill(~attention_mask, float("-inf"))
        else:
            w = w + attention_mask / relax
    w = w - w.amax(dim=-1, keepdim=True).detach()
    probs = torch.softmax(w.float() * relax, dim=-1)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training if module is not None else False)
    out = torch.matmul(probs.to(value.dtype), value)
    return out.transpose(1, 2).contiguous(), probs


def register() -> str:
    """Register ``mert_relaxed`` with transformers' attention interface (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, relaxed_attention_forward)
    return NAME
