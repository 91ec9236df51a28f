"""Probing a clip-level task end to end: cache -> batched sweep -> validation choice -> result JSON.

The (layer, LR) grid (and, with ``seeds_sweep``, every seed of it) is trained in one batched pass
(``marble.probe.sweep``). During training the monitored score is the card's main metric per file
(window logits averaged per uid), or for a card with ``group_rules`` (GS) the best of the rules'
song-level scores on validation, recomputed each epoch (PROTOCOL §4). Afterwards every probe's best
checkpoint is scored on valid and test with all card metrics; for a card with ``group_rules`` each
rule is scored per song and the rule with the best **validation** score is kept for that probe. The configuration with the best
validation main score (first in sweep order on ties) is reported.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from marble.cache.store import MANIFEST, CacheError, check_cache_for, read_clip_split, read_manifest
from marble.encoders.identity import display_name, model_cache_dir
from marble.io import file_sha256
from marble.devices import resolve_device
from marble.probe import report
from marble.probe import runs
from marble.probe.config import ConfigError, RunPlan, resolve_layers
from marble.probe.select import FileIndex, Scorer, pick_best
from marble.probe.shipped import ShippedProbe, test_outputs
from marble.results import accounting
from marble.results.artifacts import sidecars
from marble.probe.sweep import WEIGHTED, SweepOutcome, predict, train_sweep

TRACKS = runs.TRACKS


def resolve_metrics(names: Sequence[str]) -> dict:
    from marble.metrics import METRICS

    missing = [n for n in names if n not in METRICS]
    if missing:
        raise KeyError(f"metrics {missing} are not in marble.metrics.METRICS")
    return {n: METRICS[n] for n in names}


def _labels_tensor(labels: np.ndarray, card, where: str) -> torch.Tensor:
    C = card.num_outputs
    if card.prediction == "multiclass":
        if labels.ndim != 1:
            raise CacheError(f"{where}: multiclass labels must be int [N], got shape {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= C):
            raise CacheError(f"{where}: class index out of range 0..{C - 1}; the cache does not match the card's vocabulary")
        return torch.as_tensor(labels.astype(np.int64))
    if labels.ndim != 2 or labels.shape[1] != C:
        raise CacheError(f"{where}: {card.prediction} labels must be [N, {C}], got shape {labels.shape}")
    return torch.as_tensor(labels.astype(np.float32))


def _layer_name(layer) -> int | str:
    return layer if layer == WEIGHTED else int(layer)


@dataclasses.dataclass
class Evaluated:
    """Per probe: valid/test metrics of its best checkpoint, the chosen group rule, the valid main."""

    valid: list[dict]
    test: list[dict]
    rule: list[str | None]
    main: list[float]


def evaluate(outcome: SweepOutcome, X_valid, X_test, sv: Scorer, st: Scorer, card) -> Evaluated:
    """Score every probe's best checkpoint on valid and test."""
    ov = predict(outcome.heads, outcome.best_params, X_valid)
    ot = predict(outcome.heads, outcome.best_params, X_test)
    return evaluate_outputs(ov, ot, sv, st, card)


def evaluate_outputs(ov: torch.Tensor, ot: torch.Tensor, sv: Scorer, st: Scorer, card) -> Evaluated:
    """All card metrics from window outputs [P, W, C]; with group rules, the rule is chosen per probe
    on the validation main score only, and test is scored with that rule."""
    names = card.metrics.names
    main = card.metrics.main
    direction = card.metrics.direction
    rules = list(card.metrics.group_rules)
    if not rules:
        valid, test = sv(ov, names), st(ot, names)
        return Evaluated(valid, test, [None] * len(valid), [v[main] for v in valid])
    per_rule_valid, per_rule_test = sv.by_rule(ov, names, rules), st.by_rule(ot, names, rules)
    valid, test, chosen, mains = [], [], [], []
    for p in range(ov.shape[0]):
        k = pick_best([per_rule_valid[r][p][main] for r in rules], direction)  # chosen on valid only
        r = rules[k]
        valid.append(per_rule_valid[r][p])
        test.append(per_rule_test[r][p])
        chosen.append(r)
        mains.append(per_rule_valid[r][p][main])
    return Evaluated(valid, test, chosen, mains)


def _metric_caveats_summed_up(fn):
    """Metric warnings of the whole run become one line for the task at its end (:mod:`marble.metrics.notes`)."""

    @functools.wraps(fn)
    def wrapper(card, *args, **kwargs):
        from marble.metrics.notes import summarised
        from marble.progress import say

        with summarised(card.id, lambda line: say(f"[marble probe] {line}")):
            return fn(card, *args, **kwargs)

    return wrapper


@_metric_caveats_summed_up
def run_clip(
    card,
    model: str,
    *,
    cache_root: str | os.PathLike = "cache",
    results_dir: str | os.PathLike = "results",
    track: str = "constrained",
    device: str = "cpu",
    seed: int = 1234,
    seeds: int = 1,
    seeds_sweep: bool = False,
    config: str | os.PathLike | None = None,
    layers: tuple = (),
    max_epochs: int | None = None,
    lrs: tuple = (),
    name: str | None = None,
    metrics: Mapping[str, Callable] | None = None,
    checkpoint_every: int = 5,
    fresh: bool = False,
    on_epoch: Callable[[int, int, float], None] | None = None,
    stop_after_epoch: int | None = None,
    write: bool = True,
    verify: bool = True,
) -> dict:
    """Run the sweep of one clip task and write ``<results_dir>/<slug>/<task>/<track>.json``.

    Returns the result dict. ``metrics`` defaults to ``marble.metrics.METRICS``. A saved sweep state
    (``<track>.state.pt`` beside the result) is resumed unless ``fresh``; it is removed once the
    result is written. ``stop_after_epoch`` interrupts the pass after that epoch (for tests). ``verify``
    re-hashes every cached file against the sha256 extraction recorded (``--no-verify`` skips it, recorded).
    ``layers``/``lrs``/``max_epochs`` shrink the constrained sweep for a quick look (recorded; the
    leaderboard marks such a result as a reduced protocol). ``name`` is the model's name in the
    result and the leaderboard (default: the encoder's name recorded in the cache manifest).
    """
    t0 = time.perf_counter()
    if not card.is_clip_level:
        raise ConfigError(f"task {card.id!r} is {card.prediction}; use marble.probe.run.run_probe for frame tasks")
    plan: RunPlan = runs.plan_for(card, track=track, config=config, max_epochs=max_epochs, layers=layers, lrs=lrs,
                                  seeds=seeds)
    dev = resolve_device(device)
    metrics = dict(metrics) if metrics is not None else resolve_metrics(card.metrics.names)

    # ---- data
    directory = model_cache_dir(cache_root, model, card.id)
    if not directory.is_dir():
        raise CacheError(f"{directory}: no feature cache for model {model!r} and task {card.id!r}; "
                         f"run `marble extract --model {model} --task {card.id}` first (or pass --cache-dir)")
    manifest_path = directory / MANIFEST
    cache_manifest = read_manifest(directory) if manifest_path.exists() else None
    check_cache_for(directory, cache_manifest, card, model, verify=verify)
    name = name or display_name(model, cache_manifest)
    splits = {s: read_clip_split(directory / s) for s in ("train", "valid", "test")}
    shapes = {s: sp.features.shape[1:] for s, sp in splits.items()}
    if len(set(shapes.values())) != 1:
        raise CacheError(f"{directory}: splits disagree on [states, dim]: {shapes}; re-extract")
    S, H = shapes["train"]
    vocab = card.vocabulary()
    X = {s: torch.from_numpy(np.array(sp.features, dtype=np.float16)).to(dev) for s, sp in splits.items()}
    y_train = _labels_tensor(np.asarray(splits["train"].labels), card, str(directory / "train"))
    train_files = FileIndex.build(splits["train"].uids).inverse  # batches count files (PROTOCOL §1)
    for s in ("valid", "test"):
        _labels_tensor(np.asarray(splits[s].labels), card, str(directory / s))
    sv = Scorer(card.prediction, splits["valid"].uids, splits["valid"].groups, splits["valid"].labels, metrics, vocab,
                str(directory / "valid"))
    st = Scorer(card.prediction, splits["test"].uids, splits["test"].groups, splits["test"].labels, metrics, vocab,
                str(directory / "test"))

    # ---- the sweep
    layer_list = resolve_layers(tuple(plan.layers), S)
    seed_list = runs.sweep_seeds(seed, seeds, seeds_sweep)
    probes = runs.grid_probes(layer_list, plan.learning_rates, seed_list)
    out_path = report.result_path(results_dir, name, card.id, track)
    state_path, seeds_state_path = runs.state_files(out_path, track)
    cm_sha = file_sha256(manifest_path) if manifest_path.exists() else None
    fp = _fingerprint(card, cm_sha, probes, plan, S, H, len(splits["train"]))
    if fresh:
        runs.discard_states(out_path, track)
    monitor = sv.monitor(card.metrics.main, card.metrics.group_rules, card.metrics.direction)

    def train(ps, path, fingerprint, main_pass: bool):
        outcome = train_sweep(ps, plan.train, X["train"], y_train, X["valid"], monitor, num_outputs=card.num_outputs,
                              state_path=path, checkpoint_every=checkpoint_every, fingerprint=fingerprint,
                              on_epoch=on_epoch if main_pass else None,
                              stop_after_epoch=stop_after_epoch if main_pass else None, files=train_files)
        return outcome, _scored(outcome, evaluate(outcome, X["valid"], X["test"], sv, st, card))

    outcome, scored = train(probes, state_path, fp, True)
    if stop_after_epoch is not None and any(s == "interrupted" for s in outcome.stopped):
        return {}
    direction = card.metrics.direction
    main = card.metrics.main
    n_grid = len(layer_list) * len(plan.learning_rates)
    per_seed = runs.best_per_seed(scored, n_grid, len(seed_list), direction)
    best = per_seed[0]

    # ---- the shipped probe and its per-item test outputs; the reported test metrics are computed from these
    # outputs (marble.probe.shipped says why in float64), so `leaderboard check` and `marble predict` recompute them
    shipped = ShippedProbe.from_sweep(outcome.best_params, best, probes[best], card=card, track=track, model=name,
                                      group_rule=scored[best].rule, cache_manifest=cache_manifest)
    outputs = test_outputs(shipped, X["test"], st)
    scored[best].test = outputs.metrics(card.metrics.names, metrics)
    blobs, artifacts = sidecars(track, outputs, shipped)

    def train_extra(extra):
        more = train(extra, seeds_state_path, fp + ":seeds", False)[1]
        seeds_state_path.unlink(missing_ok=True)
        return more

    seed_info = runs.repeat_seeds(probes, scored, per_seed, seed=seed, seeds=seeds, seeds_sweep=seeds_sweep, main=main,
                                  train_extra=train_extra)

    # ---- result
    training = dict(plan.training)
    training.update({
        "learning_rates": list(plan.learning_rates),
        "layers": [runs.layer_name(x) for x in layer_list],
        "batch_order": ("numpy default_rng([seed, epoch]).permutation of the training files per epoch, shared by all "
                        "probes of a seed; a batch = every window of batch_size files, loss averaged over the rows; "
                        "last partial batch kept"),
        "monitor": (f"{main} per song on valid, the best of the group rules ({', '.join(card.metrics.group_rules)}) "
                    "each epoch" if card.metrics.group_rules else f"{main} per file (window logits averaged per uid) on valid"),
        "seed_repeat": runs.seed_repeat_mode(seeds, seeds_sweep),
    })
    manifest = report.build_manifest(card=card, cache_manifest=cache_manifest, cache_manifest_sha256=cm_sha, seed=seed,
                                     device=str(dev), wall_time_s=time.perf_counter() - t0,
                                     peak_memory_mb=report.peak_memory_mb(dev), cache_verified=verify)
    result = report.build_result(card=card, model=name, track=track, selected=runs.selection(probes, scored, best),
                                 valid=scored[best].valid, test=scored[best].test,
                                 sweep=runs.sweep_table(probes, scored, n_grid),
                                 weighted_sum=runs.weighted_sum(probes, scored, n_grid, direction), seeds=seed_info,
                                 head=plan.head, training=training, manifest=manifest,
                                 data=accounting.from_cache(cache_manifest, {s: sp.uids for s, sp in splits.items()}, card),
                                 artifacts=artifacts)
    if write:
        report.write_result(out_path, result, blobs)
        state_path.unlink(missing_ok=True)
    return result


def _fingerprint(card, cache_sha, probes, plan: RunPlan, S: int, H: int, n_train: int) -> str:
    return runs.fingerprint(card=card.sha256, task=card.id, cache=cache_sha, probes=[p.key for p in probes],
                            train=dataclasses.asdict(plan.train), shape=[S, H, n_train], batches="files",
                            monitor=list(card.metrics.group_rules))


def _scored(outcome: SweepOutcome, ev: Evaluated) -> list[runs.Scored]:
    mix = torch.softmax(outcome.best_params["mix"].float(), -1).cpu().tolist()
    return [runs.Scored(ev.valid[i], ev.test[i], ev.main[i], outcome.best_epoch[i], outcome.epochs[i],
                        outcome.stopped[i], ev.rule[i], mix[i] if p.layer == WEIGHTED else None)
            for i, p in enumerate(outcome.probes)]
