"""``marble finetune``: one (model, task, method) run of the unconstrained track, end to end.

Grid rows (the configuration's learning rates) train one after the other from the same initial weights
(:func:`marble.finetune.trainer.train_row`); each row's best-validation weights are scored on validation and
test with every card metric; the row with the best validation main score is reported (the probes' rule,
:func:`marble.probe.select.pick_best`), and its trained parts are kept beside the result
(:meth:`marble.finetune.model.TunedModel.save_artefacts`).

Files: the result ``<results>/<name>/<task>/unconstrained.json`` (``name`` defaults to ``<encoder>+<method>``,
so the three methods of one encoder are three leaderboard rows); beside it ``unconstrained/`` with the trained
parts and, while the run lasts, ``unconstrained/run/`` (the resumable state: ``checkpoint.pt``, the finished
rows ``rows.json``, best weights), removed once the result is written. Rerunning the same command after a
crash or Ctrl-C continues where it stopped; ``--fresh`` discards the state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from marble.finetune import TRACK, FinetuneError
from marble.finetune.config import WEIGHTED, FinetuneConfig, resolve, table_errors
from marble.finetune.trainer import CHECKPOINT, RowContext, load_state, read_rows, train_row

ROWS = "rows.json"
SELECTED = "selected.pt"


def read_config_file(path: str | os.PathLike) -> dict:
    """The ``[finetune]`` table of a ``--config`` TOML file (validated; errors name the file)."""
    from marble.registry import read_toml

    data = read_toml(path, FinetuneError, "fine-tuning config")
    unknown = sorted(set(data) - {"finetune"})
    if unknown:
        raise FinetuneError(f"{path}: unknown table '{unknown[0]}' (a fine-tuning config holds one [finetune] table, "
                            "optionally with [finetune.lora], [finetune.full], [finetune.head])")
    table = data.get("finetune", {})
    errors = table_errors(table)
    if errors:
        raise FinetuneError("\n".join(f"{path}: {e}" for e in errors))
    return table


def plan(card, method: str, config: str | os.PathLike | None = None, overrides: dict | None = None) -> FinetuneConfig:
    """The resolved configuration: defaults < the card's [finetune] < the config file < the options."""
    if card.prediction == "separation":
        raise FinetuneError(f"task {card.id!r}: fine-tuning runs clip tasks and beat tracking; source separation "
                            "(musdb) is not implemented for the unconstrained track yet")
    return resolve(method, card_table=card.finetune, file_table=read_config_file(config) if config else None,
                   overrides=overrides)


def _readable(items) -> tuple[list, list[dict]]:
    """Training items whose header reads (and has samples); the others with their reason."""
    from marble.audio import AudioError, info

    ok, skipped = [], []
    for it in items:
        try:
            _, n = info(it.path)
            if n <= 0:
                raise AudioError(it.path, "no audio samples")
            ok.append(it)
        except AudioError as e:
            skipped.append({"file": str(it.path), "uid": it.uid, "reason": e.reason})
    return ok, skipped


def _fingerprint(card, encoder, cfg: FinetuneConfig, seed: int, train_items) -> str:
    ident = encoder.identity()
    blob = json.dumps({"card": card.sha256, "task": card.id, "version": card.version,
                       "encoder": {k: ident.get(k) for k in ("name", "weights_sha256", "config", "num_states", "dim")},
                       "config": cfg.record(), "seed": seed, "train": [it.uid for it in train_items]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_finetune(card, model_spec: str, *, method: str = "lora", data_dir=None, results_dir="results",
                 device: str = "auto", seed: int | None = None, name: str | None = None, config=None,
                 overrides: dict | None = None, save_every: int = 50, num_workers: int = 0, fresh: bool = False,
                 progress: bool = False, encoder=None, items: dict | None = None, memory_gb: float = 2.0,
                 on_step: Callable[[int, dict], None] | None = None,
                 on_row: Callable[[int, dict], None] | None = None) -> dict:
    """Fine-tune ``model_spec`` on ``card`` with ``method``; returns the result dict (written under
    ``results_dir``; ``{}`` on ranks other than 0 of a data-parallel run). ``overrides`` are option values
    (:data:`marble.finetune.config.KEYS`); ``items`` maps split -> Items (default: the card's dataset under
    ``data_dir``); ``on_step(step, metrics)`` / ``on_row(row, record)`` are called after each step / row."""
    from marble.devices import resolve_device
    from marble.encoders import load_encoder
    from marble.finetune.data import TrainCrops, train_crop_seconds
    from marble.finetune.evaluate import evaluator
    from marble.finetune.model import TunedModel
    from marble.probe import report
    from marble.probe.select import pick_best

    started = time.time()
    cfg = plan(card, method, config, overrides)
    seed = int(card.training.seed if seed is None else seed)
    dev = resolve_device(device)
    from marble.distributed import open_group

    shard = open_group(dev.type, FinetuneError, "finetune")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", shard.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if encoder is None:
        encoder = load_encoder(model_spec, device=str(dev))
    encoder = encoder.to(dev)
    listed = None
    if items is None:
        from marble.datasets import split_items

        items, listed = split_items(card, data_dir, ("train", "valid", "test"), allow_partial=True)
    for s in ("train", "valid", "test"):
        if not items.get(s):
            raise FinetuneError(f"task {card.id}: split {s!r} has no items (data dir {data_dir}); run "
                                f"`marble data check {card.id}`")
    train_items, train_skipped = _readable(items["train"])
    name = name or f"{encoder.name}+{cfg.method}"
    out_path = report.result_path(results_dir, name, card.id, TRACK)
    stem = out_path.with_suffix("")
    run_dir = stem / "run"
    if fresh and shard.is_main and run_dir.is_dir():
        shutil.rmtree(run_dir)
    shard.barrier()
    run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    model = TunedModel(encoder, card, cfg, seed, spec=model_spec if isinstance(model_spec, str) else None).to(dev)
    initial = {k: v.detach().cpu().clone() for k, v in model.trainable_state().items()}
    net = model
    if shard.group:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                        broadcast_buffers=False)
    crop = train_crop_seconds(card, cfg)
    data = TrainCrops(card, train_items, encoder, crop, seed, cfg.batch_size, cfg.accumulate, shard.world, shard.rank)
    if data.steps_per_epoch() < 1:
        raise FinetuneError(f"task {card.id}: {len(train_items)} training files, fewer than one step's "
                            f"{data.effective_batch} (batch_size {cfg.batch_size} x accumulate {cfg.accumulate} x "
                            f"{shard.world} processes); lower --batch-size")
    ev = evaluator(card, items, encoder, dev, batch_size=cfg.batch_size, memory_gb=memory_gb)
    fp = _fingerprint(card, encoder, cfg, seed, train_items)
    ctx = RowContext(card=card, cfg=cfg, data=data, evaluator=ev, run_dir=run_dir, device=dev, shard=shard, seed=seed,
                     fingerprint=fp, save_every=save_every, num_workers=num_workers, progress=progress, on_step=on_step)
    main = card.metrics.main
    rows_path = run_dir / ROWS
    rows = read_rows(rows_path)
    if rows and any(r.get("fingerprint") != fp for r in rows):
        raise FinetuneError(f"{rows_path}: finished rows of another run (task, model, data, settings or seed changed); "
                            "rerun with --fresh to start over")
    for k, lr in enumerate(cfg.learning_rates):
        if k < len(rows):
            continue
        mon = train_row(model, net, k, lr, ctx, initial)
        if shard.is_main:
            best = run_dir / f"row-{k}.best.pt"
            if best.is_file():
                model.load_trainable(load_state(best)["trainable"])
            model.eval()
            valid, test, rule = ev.scores(model)
            model.train()
            record = {"layer": cfg.layer, "lr": float(lr), "head_lr": cfg.head_lr_for(lr), "valid": valid, "test": test,
                      "best_epoch": mon.best_epoch, "epochs": mon.epochs, "stopped": mon.stopped or "max_epochs",
                      "group_rule": rule, "history": mon.history, "mix_weights": model.head.weights(), "fingerprint": fp}
            rows.append(record)
            if pick_best([r["valid"][main] for r in rows], card.metrics.direction) == k and best.is_file():
                os.replace(best, run_dir / SELECTED)
            best.unlink(missing_ok=True)
            from marble.io import write_json

            write_json(rows_path, rows)
            (run_dir / CHECKPOINT).unlink(missing_ok=True)
            if on_row is not None:
                on_row(k, record)
        shard.barrier()
    if not shard.is_main:
        shard.barrier()
        return {}
    k = pick_best([r["valid"][main] for r in rows], card.metrics.direction)
    if (run_dir / SELECTED).is_file():
        model.load_trainable(load_state(run_dir / SELECTED)["trainable"])
    artefacts = model.save_artefacts(stem)
    result = _result(card, name, encoder, model, cfg, rows, k, artefacts, items, listed, train_skipped, ev, seed=seed,
                     device=dev, started=started, spec=model_spec, data=data, crop=crop, world=shard.world)
    report.write_result(out_path, result)
    shutil.rmtree(run_dir, ignore_errors=True)
    shard.barrier()
    return result


def _result(card, name, encoder, model, cfg: FinetuneConfig, rows: list[dict], k: int, artefacts: dict, items, listed,
            train_skipped, ev, *, seed, device, started, spec, data, crop, world) -> dict:
    from marble.probe.frames import build_result
    from marble.results.accounting import from_items

    sweep = [{key: r[key] for key in ("layer", "lr", "valid", "test", "best_epoch", "epochs", "stopped", "group_rule",
                                     "head_lr", "history")} for r in rows]
    best = rows[k]
    selected = {"layer": best["layer"], "lr": best["lr"], "valid_score": best["valid"][card.metrics.main],
                "best_epoch": best["best_epoch"], "epochs": best["epochs"], "group_rule": best["group_rule"]}
    weighted_sum = {"lr": best["lr"], "weights": best["mix_weights"]} if cfg.layer == WEIGHTED else None
    accounting = from_items(items, listed, card)
    for split, extra in (("train", train_skipped), ("valid", ev.skipped("valid")), ("test", ev.skipped("test"))):
        info = accounting["splits"][split]  # files that could not be read are skipped, not scored
        info["skipped"] = list(info["skipped"]) + extra
        info["scored"] -= len(extra)
        info["cached"] -= len(extra)
    amp = "bf16" if device.type == "cuda" else "off"
    a = card.audio
    training = {
        "method": cfg.method,
        "finetune": cfg.record(),
        "base_model": spec if isinstance(spec, str) else encoder.name,
        **model.counts(),
        "learning_rates": list(cfg.learning_rates),
        "max_epochs": cfg.max_epochs,
        "batch_size": cfg.batch_size,
        "accumulate": cfg.accumulate,
        "world_size": world,
        "effective_batch": data.effective_batch,
        "steps_per_epoch": data.steps_per_epoch(),
        "train_crop_seconds": crop,
        "augmentation": ("one crop per training file and epoch at a random offset (numpy default_rng([seed, epoch, "
                         "file]))" if crop else "none: the whole clip"),
        "train_order": "numpy default_rng([seed, epoch]).permutation of the training files; last partial step dropped",
        "optimizer": "AdamW betas (0.9, 0.999), eps 1e-8; linear warm-up then linear decay to 0",
        "amp": amp,
        "monitor": (f"{card.metrics.main} on valid" + (", best of the group rules each epoch" if card.metrics.group_rules
                                                      else "")),
        "eval_input": (f"card windows of {a.window_seconds:g} s" if a.window_seconds else "whole clip")
        if card.is_clip_level else "whole clip in pieces of <= 90 s, DBN-decoded",
        "artefacts": artefacts,
    }
    out = {"sweep": sweep, "selected": selected, "valid": best["valid"], "test": best["test"],
           "weighted_sum": weighted_sum, "training": training}
    result = build_result(card, name, encoder, out, track=TRACK, seed=seed, device=str(device), started=started,
                          cache=None, data=accounting)
    result["head"] = {**dataclasses.asdict(card.head), "input": cfg.layer}
    result["manifest"]["compute_dtype"] = "bf16" if amp == "bf16" else "fp32"
    return result


__all__ = ["plan", "read_config_file", "run_finetune"]
