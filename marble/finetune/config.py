"""The hyper-parameters of a fine-tuning run: built-in defaults < the card's ``[finetune]`` table < a
``--config`` file's ``[finetune]`` table < command-line options. A table may hold a sub-table per method
(``[finetune.lora]``, ``[finetune.full]``, ``[finetune.head]``) whose keys win for that method.

Every key, its type and its default are in :data:`KEYS`; an unknown key or a value of the wrong type is an
error naming the file and the key. The resolved :class:`FinetuneConfig` is recorded whole in the result
(``training.finetune``) and written back as a ``--config`` file by ``marble reproduce`` (:func:`to_toml`).
This module imports no other marble module but :mod:`marble.finetune`: the card registry checks a card's
``[finetune]`` table with :func:`table_errors`.

Nothing here is protocol: the unconstrained track lets a submitter choose; these defaults are marble's
choices (MARBLE v2's LoRA: rank 8, alpha 16 on q/v), declared so that every result says what it ran.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from marble.finetune import METHODS, FinetuneError

WEIGHTED = "weighted"

#: the learning-rate grid of each method when neither card nor config declares one: the encoder's LR for
#: ``lora`` (adapters) and ``full``, the head's for ``head``
DEFAULT_LRS = {"head": [5e-4, 1e-3, 5e-3], "lora": [1e-4, 5e-4, 1e-3], "full": [1e-5, 5e-5, 1e-4]}
#: the head's LR under ``full`` (``lora``: the row's LR; ``head``: the row's LR is the head's)
FULL_HEAD_LR = 1e-3

#: key -> (kind, default, what it sets); kind names the TOML type checked by :func:`check_table`
KEYS: dict[str, tuple[str, Any, str]] = {
    "learning_rates": ("floats", None, "the grid: encoder LR (lora: adapters; full: encoder), head LR for head"),
    "head_lr": ("float?", None, "the head's LR under lora and full (default: lora the row's LR, full 1e-3)"),
    "layer_decay": ("float", 1.0, "full: layer-wise LR decay, layer i of L gets lr x decay^(L - i)"),
    "max_epochs": ("int", 10, "epochs at most (the LR schedule spans them)"),
    "warmup_ratio": ("float", 0.1, "linear warm-up over this fraction of the steps, then linear decay to 0"),
    "early_stop_patience": ("int", 3, "stop after this many epochs without a better validation score"),
    "batch_size": ("int", 8, "training crops (one per file) per micro-batch and process; a step takes batch_size x "
                                "accumulate x processes"),
    "accumulate": ("int", 1, "micro-batches per optimiser step and process (gradient accumulation)"),
    "weight_decay": ("float", 0.01, "AdamW weight decay"),
    "clip_norm": ("float", 1.0, "gradient-norm clipping (0: off)"),
    "layer": ("layer", WEIGHTED, "the head's input: 'weighted' (learned sum of states 1..L) or a state index"),
    "train_crop_seconds": ("float?", None, "training crop length (default: the card's training chunk, else its "
                                           "window, else the whole clip)"),
    "lora_rank": ("int", 8, "LoRA rank r"),
    "lora_alpha": ("float", 16.0, "LoRA alpha (scaling alpha / r)"),
    "lora_dropout": ("float", 0.0, "dropout on the LoRA branch's input"),
    "lora_targets": ("strs", ["q_proj", "v_proj"], "module names that get LoRA adapters"),
    "freeze_feature_encoder": ("bool", True, "keep the conv feature encoder frozen under full"),
    "gradient_checkpointing": ("bool", False, "recompute transformer-layer activations in the backward pass"),
}


@dataclass(frozen=True)
class FinetuneConfig:
    """One resolved configuration (every key of :data:`KEYS` plus the method)."""

    method: str
    learning_rates: list[float]
    head_lr: float | None = None
    layer_decay: float = 1.0
    max_epochs: int = 10
    warmup_ratio: float = 0.1
    early_stop_patience: int = 3
    batch_size: int = 8
    accumulate: int = 1
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    layer: int | str = WEIGHTED
    train_crop_seconds: float | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    freeze_feature_encoder: bool = True
    gradient_checkpointing: bool = False

    def head_lr_for(self, lr: float) -> float:
        """The head's LR in the grid row of encoder LR ``lr``."""
        if self.method == "head":
            return float(lr)
        if self.head_lr is not None:
            return float(self.head_lr)
        return float(lr) if self.method == "lora" else FULL_HEAD_LR

    def record(self) -> dict:
        """Every hyper-parameter, as the result records it (``training.finetune``)."""
        return dataclasses.asdict(self)


def _kind_error(kind: str, value: Any) -> str | None:
    """Why ``value`` is not of ``kind`` (None: it is)."""
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if kind.endswith("?") and value is None:
        return None
    k = kind.rstrip("?")
    if k == "float":
        return None if num(value) else f"expected a number, got {value!r}"
    if k == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else f"expected an integer, got {value!r}"
    if k == "bool":
        return None if isinstance(value, bool) else f"expected true/false, got {value!r}"
    if k == "floats":
        ok = isinstance(value, list) and value and all(num(v) and v > 0 for v in value)
        return None if ok else f"expected a non-empty list of positive numbers, got {value!r}"
    if k == "strs":
        ok = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
        return None if ok else f"expected a non-empty list of module names, got {value!r}"
    if k == "layer":
        ok = value == WEIGHTED or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
        return None if ok else f"expected 'weighted' or a hidden-state index >= 0, got {value!r}"
    raise AssertionError(kind)  # pragma: no cover


_RANGES = {"batch_size": 1, "accumulate": 1, "max_epochs": 1, "lora_rank": 1}


def table_errors(table: Any, where: str = "finetune") -> list[str]:
    """Problems of a ``[finetune]`` table (with optional per-method sub-tables) as ``key 'x': ...`` lines."""
    if not isinstance(table, dict):
        return [f"key '{where}': expected a table, got {type(table).__name__}"]
    out = []
    for key, value in table.items():
        if key in METHODS:
            if not isinstance(value, dict) or any(k in METHODS for k in value):
                out.append(f"key '{where}.{key}': expected a table of {key} settings")
            else:
                out += table_errors(value, f"{where}.{key}")
            continue
        if key not in KEYS:
            out.append(f"unknown key '{where}.{key}' (allowed: {', '.join(KEYS)}, and a table per method: "
                       f"{', '.join(METHODS)})")
            continue
        why = _kind_error(KEYS[key][0], value)
        if why is None and key in _RANGES and value < _RANGES[key]:
            why = f"{value} must be at least {_RANGES[key]}"
        if why is None and key in ("warmup_ratio", "lora_dropout") and not 0 <= value < 1:
            why = f"{value} must lie in [0, 1)"
        if why is None and key in ("weight_decay", "clip_norm", "early_stop_patience") and value < 0:
            why = f"{value} must not be negative"
        if why is None and key in ("layer_decay", "lora_alpha", "head_lr", "train_crop_seconds") and value is not None \
                and value <= 0:
            why = f"{value} must be positive"
        if why:
            out.append(f"key '{where}.{key}': {why}")
    return out


def _layer(table: dict, method: str) -> dict:
    """A table's settings for ``method``: its plain keys, then its ``[<method>]`` sub-table over them."""
    out = {k: v for k, v in table.items() if k not in METHODS}
    out.update(table.get(method) or {})
    return out


def resolve(method: str, *, card_table: dict | None = None, file_table: dict | None = None,
            overrides: dict | None = None) -> FinetuneConfig:
    """The configuration of ``method``: defaults, then the card's table, the config file's, the overrides
    (command-line options; ``None`` values are left out)."""
    if method not in METHODS:
        raise FinetuneError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    values: dict[str, Any] = {k: v[1] for k, v in KEYS.items()}
    values["learning_rates"] = list(DEFAULT_LRS[method])
    for table in (card_table or {}, file_table or {}):
        values.update(_layer(table, method))
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    errors = table_errors(over, "option")
    if errors:
        raise FinetuneError("; ".join(e.replace("key 'option.", "option '--").replace("_", "-") for e in errors))
    values.update(over)
    values["learning_rates"] = [float(x) for x in values["learning_rates"]]
    for k in ("layer_decay", "warmup_ratio", "weight_decay", "clip_norm", "lora_alpha", "lora_dropout"):
        values[k] = float(values[k])
    if values.get("head_lr") is not None:
        values["head_lr"] = float(values["head_lr"])
    return FinetuneConfig(method=method, **values)


def to_toml(cfg: FinetuneConfig | dict) -> str:
    """A ``--config`` file that re-creates ``cfg`` (``marble reproduce`` of an unconstrained result)."""
    rec = cfg.record() if isinstance(cfg, FinetuneConfig) else dict(cfg)
    lines = ["[finetune]"]
    for key in KEYS:
        if key in rec and rec[key] is not None:
            lines.append(f"{key} = {json.dumps(rec[key])}")
    return "\n".join(lines) + "\n"


__all__ = ["DEFAULT_LRS", "FULL_HEAD_LR", "KEYS", "FinetuneConfig", "WEIGHTED", "resolve",
           "table_errors", "to_toml"]
