"""Head and grid of a probing run: the card's (constrained track) or a user TOML (semi-constrained).

A semi-constrained config file::

    [head]
    hidden = [1024, 256]      # hidden sizes; [] = a linear probe (MUSDB's LSTM head: equal sizes, one per layer)
    dropout = 0.3

    [training]
    learning_rates = [1e-4, 1e-3]
    batch_size = 128
    max_epochs = 50
    scheduler_patience = 3
    scheduler_factor = 0.5
    early_stop_patience = 10
    weight_decay = 0.0
    layers = ["all"]          # or e.g. [6, 7, "weighted"]

Unknown keys are errors naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from marble.probe.sweep import WEIGHTED, TrainConfig
from marble.errors import MarbleError

_HEAD_KEYS = {"hidden": list, "dropout": float}
#: the [training] keys of a semi-constrained config and their types (read here, written by marble reproduce)
TRAIN_KEYS = {"learning_rates": list, "batch_size": int, "max_epochs": int, "scheduler_patience": int,
               "scheduler_factor": float, "early_stop_patience": int, "weight_decay": float, "layers": list}


class ConfigError(MarbleError, ValueError):
    pass


TRACKS = ("constrained", "semi-constrained")  # the tracks probes run (unconstrained: marble finetune)


def check_track(track: str, config) -> None:
    """The tracks probes run and the ``--config`` each takes, as ``error:`` lines rather than tracebacks: the one
    check of the CLI (before any work) and of every probe run (:func:`marble.probe.runs.plan_for`)."""
    if track == "unconstrained":
        raise ConfigError("--track unconstrained: fine-tuning reads audio, not the feature cache; run `marble finetune "
                          "--model ... --task ... --method lora|full|head` (docs/tracks.md)")
    if track == "semi-constrained" and config is None:
        raise ConfigError("--track semi-constrained needs --config head.toml declaring the head and the grid "
                          "(format: docs/tracks.md)")
    if track not in TRACKS:
        raise ConfigError(f"--track {track!r}: choose constrained or semi-constrained")
    if track == "constrained" and config is not None:
        raise ConfigError("--config declares a semi-constrained head; the constrained track uses the card's head "
                          "(add --track semi-constrained)")


@dataclass(frozen=True)
class RunPlan:
    """What one pass trains: the schedule, the learning rates and the layer options."""

    train: TrainConfig
    learning_rates: tuple[float, ...]
    layers: tuple  # ints and/or "weighted"; empty = all states + weighted
    head: dict
    training: dict


def parse_layers(spec: str | list | tuple | None, num_states: int | None = None) -> tuple:
    """``"0,3,weighted"`` / ``[0, 3, "weighted"]`` / ``"all"`` -> tuple of ints and "weighted"."""
    if spec is None:
        return ()
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list = []
    for it in items:
        if it in ("all", "", None):
            return ()
        if it == WEIGHTED:
            out.append(WEIGHTED)
            continue
        try:
            v = int(it)
        except (TypeError, ValueError):
            raise ConfigError(f"layer option {it!r} is not an integer state index, 'weighted' or 'all'") from None
        if v < 0 or (num_states is not None and v >= num_states):
            raise ConfigError(f"layer {v} out of range 0..{(num_states or 1) - 1}")
        out.append(v)
    return tuple(dict.fromkeys(out))


def parse_lrs(spec: str | list | tuple | None, grid=None) -> tuple[float, ...]:
    """``"1e-3,1e-2"`` -> ``(0.001, 0.01)``; with ``grid`` (the constrained track's card grid) every
    value must be one of it: a rate outside the grid is a semi-constrained run (``--config``)."""
    if spec is None or spec == "" or spec == "all":
        return ()
    items = [s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    out: list[float] = []
    for it in items:
        try:
            v = float(it)
        except (TypeError, ValueError):
            raise ConfigError(f"learning rate {it!r} is not a number") from None
        if not v > 0:
            raise ConfigError(f"learning rate {it!r} must be positive")
        if grid is not None:
            match = next((g for g in grid if abs(v - g) <= 1e-9 * g), None)
            if match is None:
                raise ConfigError(f"learning rate {v:g} is not in the task's grid "
                                  f"({', '.join(f'{g:g}' for g in grid)}); other rates belong to the "
                                  "semi-constrained track (--track semi-constrained --config head.toml)")
            v = match  # the card's own float, so the recorded grid compares equal
        out.append(v)
    return tuple(dict.fromkeys(out))


def resolve_layers(layers: tuple, num_states: int) -> list:
    if not layers:
        return list(range(num_states)) + ([WEIGHTED] if num_states > 1 else [])
    for v in layers:
        if v != WEIGHTED and not 0 <= v < num_states:
            raise ConfigError(f"layer {v} out of range: the cache holds states 0..{num_states - 1}")
    return list(layers)


def card_plan(card, max_epochs: int | None = None, layers: tuple = (), lrs: tuple = ()) -> RunPlan:
    """The constrained track: the card's head and training, optionally fewer epochs or a subset of the
    LR grid (both recorded; the result is then marked as a reduced protocol)."""
    t = card.training
    if max_epochs is not None and max_epochs < 1:
        raise ConfigError(f"--max-epochs {max_epochs}: must be at least 1 (the card's cap is {t.max_epochs})")
    from marble.probe.heads import head_kind

    kind = head_kind(card)
    if not kind.batched and kind.build is None:
        raise ConfigError(f"task {card.id!r}: head kind {card.head.kind!r} is neither a batched MLP nor a module head")
    train = TrainConfig(
        hidden=(card.head.hidden,) * card.head.layers, dropout=card.head.dropout, batch_size=t.batch_size,
        max_epochs=max_epochs or t.max_epochs, scheduler_factor=t.scheduler_factor,
        scheduler_patience=t.scheduler_patience, early_stop_patience=t.early_stop_patience,
        weight_decay=t.weight_decay, loss=t.loss, direction=card.metrics.direction)
    training = dataclasses.asdict(t)
    training["max_epochs"] = train.max_epochs
    if max_epochs is not None and max_epochs != t.max_epochs:
        training["max_epochs_card"] = t.max_epochs
    grid = tuple(lrs) or tuple(t.learning_rates)
    training["learning_rates"] = list(grid)
    return RunPlan(train, grid, layers, dataclasses.asdict(card.head), training)


def load_config(path: str | Path, card, max_epochs: int | None = None, layers: tuple = ()) -> RunPlan:
    """A semi-constrained plan: the card's values, overridden by the TOML file."""
    from marble.registry import read_toml

    path = Path(path)
    data = read_toml(path, ConfigError, "config file")
    unknown = set(data) - {"head", "training"}
    if unknown:
        raise ConfigError(f"{path}: unknown table '{sorted(unknown)[0]}' (allowed: head, training)")
    head, train = data.get("head", {}), data.get("training", {})
    for table, allowed, name in ((head, _HEAD_KEYS, "head"), (train, TRAIN_KEYS, "training")):
        for k, v in table.items():
            if k not in allowed:
                raise ConfigError(f"{path}: unknown key '{name}.{k}' (allowed: {', '.join(sorted(allowed))})")
            want = allowed[k]
            ok = isinstance(v, want) or (want is float and isinstance(v, int) and not isinstance(v, bool))
            if not ok or (want is int and isinstance(v, bool)):
                raise ConfigError(f"{path}: key '{name}.{k}' must be {want.__name__}, got {v!r}")
    base = card_plan(card)
    hidden = tuple(int(h) for h in head.get("hidden", base.train.hidden))
    if any(h <= 0 for h in hidden):
        raise ConfigError(f"{path}: head.hidden sizes must be positive")
    dropout = float(head.get("dropout", base.train.dropout))
    if not 0 <= dropout < 1:
        raise ConfigError(f"{path}: head.dropout must be in [0, 1)")
    lrs = tuple(float(x) for x in train.get("learning_rates", base.learning_rates))
    if not lrs or any(x <= 0 for x in lrs):
        raise ConfigError(f"{path}: training.learning_rates must be a non-empty list of positive numbers")
    tc = dataclasses.replace(
        base.train, hidden=hidden, dropout=dropout,
        batch_size=int(train.get("batch_size", base.train.batch_size)),
        max_epochs=int(max_epochs or train.get("max_epochs", base.train.max_epochs)),
        scheduler_patience=int(train.get("scheduler_patience", base.train.scheduler_patience)),
        scheduler_factor=float(train.get("scheduler_factor", base.train.scheduler_factor)),
        early_stop_patience=int(train.get("early_stop_patience", base.train.early_stop_patience)),
        weight_decay=float(train.get("weight_decay", base.train.weight_decay)))
    if tc.batch_size <= 0 or tc.max_epochs <= 0:
        raise ConfigError(f"{path}: training.batch_size and training.max_epochs must be positive")
    if not (math.isfinite(tc.scheduler_factor) and 0 < tc.scheduler_factor < 1):
        raise ConfigError(f"{path}: training.scheduler_factor {tc.scheduler_factor!r} must lie strictly between 0 and 1")
    if not math.isfinite(tc.weight_decay) or tc.weight_decay < 0 or tc.scheduler_patience < 0 or tc.early_stop_patience < 0:
        raise ConfigError(f"{path}: training.weight_decay, scheduler_patience and early_stop_patience must be "
                          "finite and non-negative")
    lay = layers or parse_layers(train.get("layers"))
    head_out = {"kind": "mlp", "hidden": list(hidden), "dropout": dropout, "config": str(path)}
    if card.head.kind != "mlp":  # a module head (MUSDB's open-unmix LSTM): equal layer sizes, hidden x layers
        if len(set(hidden)) != 1:
            raise ConfigError(f"{path}: head.hidden of a {card.head.kind} head lists one size per layer, all equal "
                              f"(e.g. [512, 512, 512]); got {list(hidden)}")
        head_out = {**dataclasses.asdict(card.head), "hidden": hidden[0], "layers": len(hidden), "dropout": dropout,
                    "config": str(path)}
    training = {**base.training, "learning_rates": list(lrs), "batch_size": tc.batch_size, "max_epochs": tc.max_epochs,
                "scheduler_patience": tc.scheduler_patience, "scheduler_factor": tc.scheduler_factor,
                "early_stop_patience": tc.early_stop_patience, "weight_decay": tc.weight_decay}
    training.pop("max_epochs_card", None)
    return RunPlan(tc, lrs, lay, head_out, training)
