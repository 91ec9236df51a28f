"""The unconstrained track (PROTOCOL §1): fine-tune an encoder on a task's own audio.

Three methods, one loop (:mod:`marble.finetune.trainer`), compared on equal terms:

* ``lora``: Hugging Face ``peft`` LoRA adapters (rank 8, alpha 16 on the attention q/v projections by
  default, as MARBLE v2) train with the head; the base weights stay frozen and byte-identical;
* ``full``: every encoder weight trains (its own learning rate, optional layer-wise decay), the conv feature
  encoder frozen by default as in HuBERT fine-tuning;
* ``head``: the encoder frozen but run on the fly on the same augmented crops (the baseline).

The encoder reads the task's audio as the card says (crop, z-scoring, resampling, the encoder's input
normalisation, windows); the card's head sits on a learned weighted sum of the hidden states (or one layer);
a small declared grid of learning rates is trained, selected on validation and tested once. The result is an
ordinary marble result of track ``unconstrained`` (schema, seal, accounting, leaderboard, submit, reproduce).
Entry point: :func:`marble.finetune.run.run_finetune`; the command: ``marble finetune``.
"""

from __future__ import annotations

from marble.errors import MarbleError

METHODS = ("lora", "full", "head")
TRACK = "unconstrained"


class FinetuneError(MarbleError, ValueError):
    """Bad fine-tuning input (option, config table, encoder that cannot be fine-tuned); names the fix."""


__all__ = ["METHODS", "TRACK", "FinetuneError"]
