"""What every probing run shares, whatever trains its heads (the clip sweep of ``marble.probe.clip``, the frame
tasks of ``marble.probe.sequence``): the plan of its track (the card's, or a ``--config`` for the
semi-constrained track), the probes of the grid and its seeds, the saved sweep states beside the result (resumed,
``--fresh`` discards them, removed once the result is written), the selection per seed, the seed repeats
(``--seeds N`` [``--seeds-sweep``]) and the result's sweep table.

An engine trains a list of :class:`~marble.probe.sweep.Probe` and scores each probe's best checkpoint: a
:class:`Scored` per probe. Everything after that is here, so a clip task and a frame task report the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from marble.probe.config import TRACKS, ConfigError, RunPlan, card_plan, check_track, load_config
from marble.probe.select import pick_best
from marble.probe.sweep import WEIGHTED, Probe


@dataclass
class Scored:
    """One probe's best checkpoint, scored: every metric on valid and test, the validation score it was selected
    on (``main``: the main metric, or a group rule's), its curve's summary and, for a weighted-sum probe, its
    layer weights."""

    valid: dict
    test: dict
    main: float
    best_epoch: int
    epochs: int
    stopped: str
    rule: str | None = None
    weights: list[float] | None = None


def plan_for(card, *, track: str, config, max_epochs: int | None, layers: tuple, lrs: tuple, seeds: int) -> RunPlan:
    """The plan of a run: the card's head and schedule (constrained; ``lrs``/``max_epochs``/``layers`` reduce it,
    recorded) or the ``--config`` file's (semi-constrained); bad combinations are ``ConfigError`` lines."""
    check_track(track, config)
    if seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    if lrs and config is not None:
        raise ConfigError("--lrs restricts the card's grid in the constrained track; a semi-constrained grid is "
                          "set by training.learning_rates in --config")
    return load_config(config, card, max_epochs, layers) if config else card_plan(card, max_epochs, layers, lrs)


def grid_probes(layer_list: Sequence, lrs: Sequence[float], seeds: Sequence[int]) -> list[Probe]:
    """Every (seed, layer, LR) in the order of the sweep table: seed-major, then layer, then LR."""
    return [Probe(layer, float(lr), s) for s in seeds for layer in layer_list for lr in lrs]


def sweep_seeds(seed: int, seeds: int, seeds_sweep: bool) -> list[int]:
    """The seeds trained in the main pass: all of them with ``--seeds-sweep``, else the run's seed."""
    return [seed + i for i in range(seeds)] if seeds_sweep and seeds > 1 else [seed]


def state_files(result_path: Path, track: str) -> tuple[Path, Path]:
    """The saved states of the main pass and of the seed repeats, beside the result."""
    return result_path.with_name(f"{track}.state.pt"), result_path.with_name(f"{track}.seeds.state.pt")


def discard_states(result_path: Path, track: str) -> None:
    for p in state_files(result_path, track):
        p.unlink(missing_ok=True)


def fingerprint(**parts) -> str:
    """sha256 of what a saved state was computed from: a state of another configuration is refused, not resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def best_per_seed(scored: Sequence[Scored], n_grid: int, n_seeds: int, direction: str) -> list[int]:
    """Index of the selected probe of each seed's block of ``n_grid`` probes (the best validation score; the
    first in sweep order on ties; NaN never wins)."""
    out = []
    for k in range(n_seeds):
        block = list(range(k * n_grid, (k + 1) * n_grid))
        out.append(block[pick_best([scored[i].main for i in block], direction)])
    return out


def repeat_seeds(probes: Sequence[Probe], scored: Sequence[Scored], per_seed: Sequence[int], *, seed: int, seeds: int,
                 seeds_sweep: bool, main: str, train_extra: Callable[[list[Probe]], list[Scored]]) -> dict | None:
    """``--seeds N``: mean, std and 95 % CI of the test main score over N seeds: the selected configuration of each
    seed's own sweep (``--seeds-sweep``), or the configuration selected with the run's seed trained again with
    seeds seed+1 .. seed+N-1 (``train_extra`` trains and scores those probes)."""
    from marble.probe.report import seed_summary

    if seeds <= 1:
        return None
    if seeds_sweep:
        return seed_summary([probes[i].seed for i in per_seed], [scored[i].test[main] for i in per_seed], main)
    best = probes[per_seed[0]]
    extra = [Probe(best.layer, best.lr, seed + i) for i in range(1, seeds)]
    more = train_extra(extra)
    return seed_summary([seed + i for i in range(seeds)], [scored[per_seed[0]].test[main]] + [s.test[main] for s in more],
                        main)


def layer_name(layer) -> int | str:
    return layer if layer == WEIGHTED else int(layer)


def sweep_table(probes: Sequence[Probe], scored: Sequence[Scored], n_grid: int) -> list[dict]:
    """The result's sweep rows: the grid of the first seed."""
    return [{"layer": layer_name(probes[i].layer), "lr": probes[i].lr, "valid": scored[i].valid, "test": scored[i].test,
             "best_epoch": scored[i].best_epoch, "epochs": scored[i].epochs, "stopped": scored[i].stopped}
            for i in range(n_grid)]


def selection(probes: Sequence[Probe], scored: Sequence[Scored], best: int) -> dict:
    s = scored[best]
    return {"layer": layer_name(probes[best].layer), "lr": probes[best].lr, "valid_score": s.main,
            "best_epoch": s.best_epoch, "epochs": s.epochs, "group_rule": s.rule}


def weighted_sum(probes: Sequence[Probe], scored: Sequence[Scored], n_grid: int, direction: str) -> dict | None:
    """The weighted-sum layer option of the first seed's grid with the best validation score: its LR and weights."""
    rows = [i for i in range(n_grid) if probes[i].layer == WEIGHTED]
    if not rows:
        return None
    wb = rows[pick_best([scored[i].main for i in rows], direction)]
    return {"lr": probes[wb].lr, "weights": scored[wb].weights}


def seed_repeat_mode(seeds: int, seeds_sweep: bool) -> str | None:
    """``training.seed_repeat`` of the result."""
    return ("sweep" if seeds_sweep else "selected") if seeds > 1 else None


__all__ = ["TRACKS", "Scored", "plan_for", "grid_probes", "sweep_seeds", "state_files", "discard_states", "fingerprint",
           "best_per_seed", "repeat_seeds", "sweep_table", "selection", "weighted_sum", "seed_repeat_mode", "layer_name"]
