"""The head registry: a card's ``head.kind`` names one entry, as an encoder spec names an encoder.

* ``mlp`` — the constrained-track probe (PROTOCOL §1): Linear(H, hidden) -> ReLU -> Dropout ->
  Linear(hidden, C), ``head.layers`` hidden layers; trained as stacked batched heads by
  ``marble.probe.sweep`` (clip tasks and frame-binary tasks alike).
* ``openunmix`` — the separation head (PROTOCOL §4, ``marble.separation.head``), one module per
  source, reading ``hidden``, ``layers``, ``dropout`` and ``bidirectional``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class HeadKind:
    kind: str
    predictions: tuple[str, ...]  # the card prediction types this head serves
    batched: bool  # trained as stacked weights by marble.probe.sweep
    build: Callable | None = None  # (card, in_dim, out_dim) -> nn.Module, for module heads
    rebuild: Callable | None = None  # (the module's recorded ``config``) -> nn.Module, for a shipped module head


def _openunmix(card, in_dim: int, out_dim: int):
    from marble.separation.head import OpenUnmixHead

    h = card.head
    return OpenUnmixHead(in_dim, out_dim, h.hidden, h.layers, h.dropout, h.bidirectional)


def _openunmix_rebuild(config: dict):
    from marble.separation.head import OpenUnmixHead

    return OpenUnmixHead(**config)


HEADS: dict[str, HeadKind] = {
    "mlp": HeadKind("mlp", ("multiclass", "multilabel", "regression", "frame-binary"), True),
    "openunmix": HeadKind("openunmix", ("separation",), False, _openunmix, _openunmix_rebuild),
}


def head_kind(card) -> HeadKind:
    """The registry entry of ``card.head.kind``; ValueError when unknown or not for its prediction."""
    entry = HEADS.get(card.head.kind)
    if entry is None:
        raise ValueError(f"head kind {card.head.kind!r} is not one of {', '.join(HEADS)}")
    if card.prediction not in entry.predictions:
        raise ValueError(f"head kind {card.head.kind!r} serves {', '.join(entry.predictions)}, not {card.prediction}")
    return entry
