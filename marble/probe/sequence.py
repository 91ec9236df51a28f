"""Frame-level tasks (``frame-binary``: GTZAN beat; ``separation``: MUSDB18): the layer x LR sweep and its result,
on the engine every probing run shares (:mod:`marble.probe.runs`: plan and track, seeds, resumable sweep states) and
the frame pieces of :mod:`marble.probe.frames`.

Entry point: :func:`run` (``marble.probe.run.run_probe`` dispatches here for frame tasks). Features of
whole validation/test tracks come from the frame cache ``marble extract`` writes (else the frozen
encoder under the card's piece rule); training inputs are random crops/chunks encoded on the fly, as the
protocol asks (PROTOCOL §4). The task loops live in :mod:`marble.beat.train` and
:mod:`marble.separation.train`.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import torch

from marble.beat.train import train_beat
from marble.cache.store import MANIFEST, check_cache_for, read_manifest
from marble.io import file_sha256
from marble.devices import resolve_device
from marble.encoders.identity import model_cache_dir
from marble.probe import report
from marble.probe.frames import frame_manifest
from marble.probe.sweep import WEIGHTED
from marble.results.artifacts import sidecars
from marble.separation.train import train_separation

TRAINERS = {"frame-binary": train_beat, "separation": train_separation}
FRAME_PREDICTIONS = tuple(TRAINERS)


def run(card, model_spec: str, *, cache_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
        results_dir: str | os.PathLike | None = "results", device: str = "cpu", layers: list | None = None,
        lrs: list[float] | None = None, max_epochs: int | None = None, seed: int | None = None,
        track: str = "constrained", encoder=None, items: dict | None = None, name: str | None = None,
        seeds: int = 1, seeds_sweep: bool = False, config: str | os.PathLike | None = None, checkpoint_every: int = 5,
        fresh: bool = False, stop_after_epoch: int | None = None, verify: bool = True, **options) -> dict:
    """Train and select the probes of a frame-level task; returns the result dict and writes it to
    ``<results_dir>/<name>/<task>/<track>.json`` (unless ``results_dir`` is None).

    As a clip task (``marble.probe.runs``): ``track`` constrained (the card's head; ``layers``/``lrs``/``max_epochs``
    reduce the sweep, recorded) or semi-constrained (``config``: the head and schedule of a TOML file, declared in
    the result); ``seeds``/``seeds_sweep`` repeat the selected configuration (or the whole sweep) with more seeds;
    the sweep state is saved beside the result every ``checkpoint_every`` epochs and resumed by a rerun (``fresh``
    discards it); ``stop_after_epoch`` interrupts the pass (tests; returns ``{}``). ``encoder`` passes an
    already-built encoder (else ``load_encoder(model_spec)``); ``name`` is the model's name in the result (default:
    the encoder's name); ``items`` maps split -> list of Items (else the dataset loader of the card reads
    ``data_dir``). ``verify``: re-hash the cached frame files against the sha256 extraction recorded before any is
    used (``--no-verify`` skips it, recorded). Task options: beat: ``batch_size``, ``memory_gb``, ``on_epoch``;
    separation: ``batch_size``, ``chunks_per_epoch``, ``museval``, ``memory_gb``, ``on_epoch``. MUSDB selects a
    (layer, LR) per source (``marble.separation.train.sweep_outputs``), its seed repeats too.
    """
    from marble.probe import runs

    if card.prediction not in TRAINERS:
        raise ValueError(f"task {card.id!r} is {card.prediction}: marble.probe.sequence runs only frame-level tasks "
                         f"({', '.join(FRAME_PREDICTIONS)})")
    seed = int(card.training.seed if seed is None else seed)
    plan = runs.plan_for(card, track=track, config=config, max_epochs=max_epochs, layers=tuple(layers or ()),
                         lrs=tuple(lrs or ()), seeds=seeds)
    started = time.time()
    device = str(resolve_device(device))
    if encoder is None:
        from marble.encoders import load_encoder

        encoder = load_encoder(model_spec, device=device)
    encoder.eval()
    # one identity per model (marble.encoders.identity): the cache key of the spelling (or of the encoder
    # load_encoder built), the encoder's own name in the result
    key_of = model_spec if isinstance(model_spec, str) and not getattr(encoder, "cache_key", None) else encoder
    model_name = getattr(encoder, "name", None) or str(model_spec)
    if items is None:
        from marble.datasets import split_items

        items, listed = split_items(card, data_dir, ("train", "valid", "test"), allow_partial=True)
    else:
        listed = None
    for s in ("train", "valid", "test"):
        if not items.get(s):
            raise ValueError(f"task {card.id}: split {s!r} has no items (data dir {data_dir}); run `marble data check {card.id}`")
    all_layers = list(range(encoder.num_states))
    wanted = list(plan.layers) if plan.layers else list(layers or [])
    layers = list(all_layers + [WEIGHTED] if not wanted else wanted)
    bad = [layer for layer in layers if layer not in all_layers and layer != WEIGHTED]
    if bad:
        raise ValueError(f"layers {bad} outside 0..{encoder.num_states - 1} for encoder {model_name}")
    lrs = [float(x) for x in plan.learning_rates]
    max_epochs = int(plan.train.max_epochs)
    cache = model_cache_dir(cache_dir, key_of, card.id) if cache_dir is not None else None
    if cache is not None and not cache.exists():
        cache = None
    # the cache manifest is read (and hashed) once: the checks, the features' states and the result's manifest use it
    cache_manifest = read_manifest(cache) if cache is not None and (cache / MANIFEST).exists() else None
    cache_sha = file_sha256(cache / MANIFEST) if cache_manifest is not None else None
    options = {**options, "cache_manifest": cache_manifest}
    if cache_manifest is not None:  # a cache of an edited card or changed checkpoint
        check_cache_for(cache, cache_manifest, card, model_spec if isinstance(model_spec, str) else "", splits=())
        if verify:
            verify_frame_cache(cache, cache_manifest, model_spec if isinstance(model_spec, str) else "", card)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    from marble.results.accounting import from_items

    data = from_items(items, listed, card)
    seed_list = runs.sweep_seeds(seed, seeds, seeds_sweep)
    probes = runs.grid_probes(layers, lrs, seed_list)
    out_path = report.result_path(results_dir, name or model_name, card.id, track) if results_dir is not None else None
    state_path, seeds_state_path = runs.state_files(out_path, track) if out_path is not None else (None, None)
    if fresh and out_path is not None:
        runs.discard_states(out_path, track)
    fp = runs.fingerprint(card=card.sha256, task=card.id, cache=cache_sha, encoder=encoder.identity(),
                          items={s: [it.uid for it in v] for s, v in items.items()}, probes=[p.key for p in probes],
                          train=dataclasses.asdict(plan.train), max_epochs=max_epochs,
                          options={k: v for k, v in options.items() if k in ("batch_size", "chunks_per_epoch")})
    trainer = TRAINERS[card.prediction]
    common = {**options, "plan": plan, "checkpoint_every": checkpoint_every}
    out = trainer(card, encoder, items, probes, max_epochs, device, cache,
                  {**common, "state_path": state_path, "fingerprint": fp, "stop_after_epoch": stop_after_epoch})
    if out.get("interrupted"):
        return {}
    n_grid = len(layers) * len(lrs)

    def manifest() -> dict:
        return frame_manifest(card, encoder, seed=seed, device=device, started=started, cache=cache,
                              cache_verified=verify, cache_manifest=(cache_manifest, cache_sha))

    def finish(result: dict, blobs=None) -> dict:
        if out_path is not None:
            report.write_result(out_path, result, blobs or {})
            if state_path is not None:
                state_path.unlink(missing_ok=True)
        return result

    if card.prediction == "separation":  # a (layer, LR) selected per source (marble.separation.train)
        from marble.separation.train import sweep_outputs

        def train_targets(extra, targets):
            common.pop("on_epoch", None)
            more = trainer(card, encoder, items, extra, max_epochs, device, cache,
                           {**common, "targets": targets, "state_path": seeds_state_path, "fingerprint": fp + ":seeds"})
            if seeds_state_path is not None:
                seeds_state_path.unlink(missing_ok=True)
            return more

        parts = sweep_outputs(out, n_grid, seed=seed, seeds=seeds, seeds_sweep=seeds_sweep, max_epochs=max_epochs,
                              museval=bool(options.get("museval", True)), train_extra=train_targets, track=track,
                              model=name or model_name)
        training = {**parts["training"], "learning_rates": lrs, "layers": [runs.layer_name(x) for x in layers],
                    "seed_repeat": runs.seed_repeat_mode(seeds, seeds_sweep)}
        # the four selected models as one shipped probe, and the per-track scores of the models it rebuilds (the
        # test metrics were computed from them)
        blobs, artifacts = sidecars(track, parts["test_outputs"], parts["probe"])
        return finish(report.build_result(card=card, model=name or model_name, track=track, selected=parts["selected"],
                                          valid=parts["valid"], test=parts["test"], sweep=parts["sweep"],
                                          weighted_sum=parts["weighted_sum"], seeds=parts["seeds"], head=plan.head,
                                          training=training, manifest=manifest(), data=data, artifacts=artifacts),
                      blobs)
    scored = out["scored"]
    main, direction = card.metrics.main, card.metrics.direction
    per_seed = runs.best_per_seed(scored, n_grid, len(seed_list), direction)
    best = per_seed[0]
    # the selected probe, shipped beside the result (a trainer's ``probe(i, ...)``), and its per-track test outputs
    # (``test_outputs(probe)``, the path `marble predict` takes; docs/leaderboard.md has the format); the reported test
    # metrics are computed from them, so `marble leaderboard check` recomputes them exactly
    blobs, artifacts = {}, {}
    if out.get("test_outputs") is not None:
        shipped = out["probe"](best, track=track, model=name or model_name)
        outputs = out["test_outputs"](shipped)
        scored[best].test = outputs.metrics(card.metrics.names)
        blobs, artifacts = sidecars(track, outputs, shipped)

    def train_extra(extra):
        common.pop("on_epoch", None)
        more = trainer(card, encoder, items, extra, max_epochs, device, cache,
                       {**common, "state_path": seeds_state_path, "fingerprint": fp + ":seeds"})["scored"]
        if seeds_state_path is not None:
            seeds_state_path.unlink(missing_ok=True)
        return more

    seed_info = runs.repeat_seeds(probes, scored, per_seed, seed=seed, seeds=seeds, seeds_sweep=seeds_sweep, main=main,
                                  train_extra=train_extra)
    training = {**out["training"], "learning_rates": lrs, "layers": [runs.layer_name(x) for x in layers],
                "seed_repeat": runs.seed_repeat_mode(seeds, seeds_sweep)}
    return finish(report.build_result(card=card, model=name or model_name, track=track,
                                      selected=runs.selection(probes, scored, best), valid=scored[best].valid,
                                      test=scored[best].test, sweep=runs.sweep_table(probes, scored, n_grid),
                                      weighted_sum=runs.weighted_sum(probes, scored, n_grid, direction),
                                      seeds=seed_info, head=plan.head, training=training, manifest=manifest(),
                                      data=data, artifacts=artifacts), blobs)


def verify_frame_cache(cache, manifest: dict, model: str, card) -> None:
    """Every frame file the probe may read (whatever lies in ``<split>/frames/``, a finished split's index too)
    must re-hash to the sha256 extraction recorded; a file without one (planted, or left by a crashed unit) is
    refused as well, since the probe would read it."""
    from pathlib import Path

    from marble.cache.store import INDEX, CacheError, FrameStore, verify_split

    for split in ("valid", "test"):
        d = Path(cache) / split
        frames = FrameStore(d).dir
        present = sorted(f"{frames.name}/{p.name}" for p in frames.glob("*.npy")) if frames.is_dir() else []
        info = (manifest.get("splits") or {}).get(split)
        if (d / INDEX).exists() and (info or {}).get("status") == "complete":
            present.append(INDEX)
        problem = verify_split(d, info, files=present) if present else None
        if problem:
            raise CacheError(f"{problem}; rerun `marble extract --model {model} --task {card.id}` (it re-extracts "
                             "a damaged split; delete the split folder if it is still being extracted), or probe with "
                             "--no-verify (recorded in the result)")


__all__ = ["run", "TRAINERS", "FRAME_PREDICTIONS", "verify_frame_cache"]
