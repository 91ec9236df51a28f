"""The training loop of one grid row (one learning rate), resumable and data-parallel.

* Optimiser: AdamW (betas 0.9/0.999, eps 1e-8, the config's weight decay) on the model's parameter groups
  (:meth:`marble.finetune.model.TunedModel.param_groups`); linear warm-up over ``warmup_ratio`` of the steps,
  then linear decay to 0 at the last step (:func:`marble.pretrain.trainer.lr_factor`); gradient clipping at
  ``clip_norm``; bf16 autocast on CUDA (fp32 on CPU).
* A step: ``accumulate`` micro-batches of this rank's crops (:class:`marble.finetune.data.TrainCrops`), each
  micro-batch's dropout seeded from ``(seed, step, micro)``; the loss is the card's (cross-entropy, BCE, MSE)
  averaged over the step's crops (a crop's frames averaged first), so the update does not depend on how the
  step is split into micro-batches and processes (up to float summation order; dropout aside, whose masks
  follow the micro-batch).
* Data parallel: under torchrun (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``, :func:`marble.distributed.from_env`)
  the model trains inside torch's ``DistributedDataParallel``, gradients all-reduced in the last micro-batch's
  backward (``no_sync`` before), as pretraining does (:mod:`marble.pretrain.trainer`). Rank 0 validates and
  writes; the others wait for its decision (a broadcast).
* Validation after every epoch on the card's monitor (:mod:`marble.finetune.evaluate`); a strictly better
  score keeps the trained tensors (``row-K.best.pt``); ``early_stop_patience`` epochs without one stop the row.
* Resumable: ``checkpoint.pt`` (row, step, trained tensors, optimiser, scheduler, monitor state, RNG states)
  is written atomically every ``save_every`` steps, after every validation and on Ctrl-C, and read with
  ``torch.load(weights_only=True)``. Every random choice of step ``s`` is seeded from ``(seed, s)``, so a killed
  and rerun row ends with the weights of an uninterrupted one (bit-exact on CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from marble.finetune import FinetuneError
from marble.finetune.data import TrainCrops, equal_length_groups
from marble.io import atomic_open, read_torch_state
from marble.pretrain.trainer import _rng_states, _StopFlag, derive_seed, lr_factor

FORMAT = "marble-finetune-1"
CHECKPOINT = "checkpoint.pt"


@dataclass
class Monitor:
    """The early-stopping state of one row (plain data: it travels in the checkpoint)."""

    direction: str = "max"
    best: float = float("nan")
    best_epoch: int = 0
    bad: int = 0
    epochs: int = 0  # epochs validated
    history: list = field(default_factory=list)
    stopped: str | None = None

    def observe(self, score: float, patience: int, max_epochs: int) -> bool:
        """Record the score of the next epoch; True when it improved (strictly; NaN never does)."""
        from marble.probe.select import better

        self.epochs += 1
        self.history.append(float(score))
        improved = self.best_epoch == 0 and not math.isnan(score) or better(float(score), self.best, self.direction)
        if improved:
            self.best, self.best_epoch, self.bad = float(score), self.epochs, 0
        else:
            self.bad += 1
        if patience > 0 and self.bad >= patience:
            self.stopped = "early"
        elif self.epochs >= max_epochs:
            self.stopped = "max_epochs"
        return improved

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("direction", "best", "best_epoch", "bad", "epochs", "history", "stopped")}


def load_state(path: Path) -> dict:
    """A checkpoint or best-state file (tensors and plain data only: ``weights_only=True``)."""
    state = read_torch_state(path, FinetuneError, "Rerun with --fresh to start over.", "fine-tuning state")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FinetuneError(f"{path}: not a marble fine-tuning state (format {FORMAT!r}); rerun with --fresh")
    return state


def _save(path: Path, state: dict) -> None:
    with atomic_open(path) as f:
        torch.save({"format": FORMAT, **state}, f)


def _cpu(d: dict) -> dict:
    return {k: v.detach().to("cpu").clone() for k, v in d.items()}


def _targets(examples, idx, card, device) -> torch.Tensor:
    y = np.stack([np.asarray(examples[i][1]) for i in idx])
    if card.prediction == "multiclass":
        return torch.as_tensor(y, dtype=torch.long, device=device)
    return torch.as_tensor(y, dtype=torch.float32, device=device)


def _loss(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """The card's loss summed over the crops of a group (each crop's outputs averaged first)."""
    from marble.probe.sweep import probe_losses

    b = out.shape[0]
    if out.dim() == 3:  # frames: [b, T, 1] against [b, T]
        per = probe_losses(out.float().reshape(b, -1, 1), y.reshape(b, -1, 1), loss) if b else out.sum()
        return per.sum()
    return probe_losses(out.float()[None], y[None], loss)[0] * b


@dataclass
class RowContext:
    """What one row's training needs besides the model (shared by every row of a run)."""

    card: object
    cfg: object
    data: TrainCrops
    evaluator: object
    run_dir: Path
    device: torch.device
    shard: object
    seed: int
    fingerprint: str
    save_every: int = 50
    num_workers: int = 0
    progress: bool = False
    on_step: Callable[[int, dict], None] | None = None


def train_row(model, net, row: int, lr: float, ctx: RowContext, initial: dict) -> Monitor:
    """Train grid row ``row`` (encoder learning rate ``lr``) to its end, resuming ``checkpoint.pt`` when it
    belongs to this row; returns its monitor. ``net`` is ``model`` or its DistributedDataParallel wrapper;
    ``initial`` the trained tensors every row starts from."""
    cfg, data, dev, shard = ctx.cfg, ctx.data, ctx.device, ctx.shard
    spe = data.steps_per_epoch()
    total = spe * cfg.max_epochs
    warmup = int(round(cfg.warmup_ratio * total))
    model.load_trainable(initial)
    opt = torch.optim.AdamW(model.param_groups(cfg, lr), lr=float(lr), betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))
    mon = Monitor(direction=ctx.card.metrics.direction)
    step = 0
    ckpt = ctx.run_dir / CHECKPOINT
    state = load_state(ckpt) if ckpt.is_file() else None
    if shard.group:
        _same_state_on_all_ranks(ckpt, state, row, dev)
    if state is not None and int(state["row"]) == row:
        if state.get("fingerprint") != ctx.fingerprint:
            raise FinetuneError(f"{ckpt}: the checkpoint belongs to another run (task, model, data, settings or "
                                "seed changed); rerun with --fresh to start over, or keep the settings to resume")
        if int(state.get("effective_batch", data.effective_batch)) != data.effective_batch:
            raise FinetuneError(f"{ckpt}: written with an effective batch of {state['effective_batch']} crops per step, "
                                f"this run has {data.effective_batch} (batch_size x accumulate x processes); keep the "
                                "product to resume, or rerun with --fresh")
        model.load_trainable(state["trainable"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        mon = Monitor(**state["monitor"])
        step = int(state["step"])
    main = shard.is_main
    best_path = ctx.run_dir / f"row-{row}.best.pt"

    def save() -> None:
        if main:
            _save(ckpt, {"row": row, "lr": float(lr), "step": step, "fingerprint": ctx.fingerprint,
                         "world_size": shard.world, "effective_batch": data.effective_batch,
                         "trainable": _cpu(model.trainable_state()), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "monitor": mon.to_dict(), "rng": _rng_states(),
                         "time": time.time()})

    def validate() -> bool:
        """Rank 0 scores the epoch; every rank gets the decision. True when the row stops."""
        improved = False
        if main:
            model.eval()
            try:
                score = ctx.evaluator.monitor(model)
            finally:
                model.train()
            improved = mon.observe(score, cfg.early_stop_patience, cfg.max_epochs)
            if improved:
                _save(best_path, {"row": row, "epoch": mon.epochs, "score": mon.best,
                                  "trainable": _cpu(model.trainable_state())})
        if shard.group:
            import torch.distributed as dist

            t = torch.tensor([mon.epochs, mon.best_epoch, mon.bad, {None: 0, "early": 1, "max_epochs": 2}[mon.stopped]],
                             dtype=torch.float64, device=dev)
            dist.broadcast(t, 0)
            if not main:
                mon.epochs, mon.best_epoch, mon.bad = int(t[0]), int(t[1]), int(t[2])
                mon.stopped = {0: None, 1: "early", 2: "max_epochs"}[int(t[3])]
        return mon.stopped is not None

    model.train()
    stop = mon.stopped is not None
    while not stop and mon.epochs < step // spe:  # a checkpoint written at an epoch's last step, before validation
        stop = validate()
        save()
    if stop or step >= total:
        return mon
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(step, total), num_workers=ctx.num_workers,
                                         collate_fn=_identity, pin_memory=dev.type == "cuda")
    bar = None
    if ctx.progress and main:
        from marble.progress import Stage

        bar = Stage(f"{ctx.card.id} {cfg.method} lr {lr:g}", total, "step").__enter__()
        bar.update(step)
    try:
        with _StopFlag() as flag:
            for batch in loader:
                s = int(batch["step"])
                metrics = _step(model, net, opt, sched, batch["micro"], s, ctx, flag.set)
                step = s + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"loss {metrics['loss']:.4f}, best valid {mon.best:.4f}")
                if step % spe == 0:
                    stop = validate()
                    save()
                elif step % max(1, ctx.save_every) == 0:
                    save()
                if ctx.on_step is not None:
                    ctx.on_step(step, metrics)
                if metrics["stop"] if shard.group else flag.set:
                    raise KeyboardInterrupt
                if stop:
                    break
    except KeyboardInterrupt:
        save()
        raise
    finally:
        if bar is not None:
            bar.close()
    return mon


def _identity(x):
    return x


def _step(model, net, opt, sched, micro: list, step: int, ctx: RowContext, stop: bool) -> dict:
    """One optimiser step over this rank's micro-batches (see the module docstring)."""
    cfg, dev, shard, card = ctx.cfg, ctx.device, ctx.shard, ctx.card
    world, acc = shard.world, len(micro)
    total = ctx.data.effective_batch
    ddp = net is not model
    opt.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    for j, examples in enumerate(micro):
        torch.manual_seed(derive_seed(ctx.seed, step, shard.rank * acc + j))  # dropout of this micro-batch
        groups = equal_length_groups(examples)
        wavs = [torch.as_tensor(np.stack([np.asarray(examples[i][0]) for i in g])).to(dev) for g in groups]
        with net.no_sync() if ddp and j < acc - 1 else contextlib.nullcontext():
            with amp:
                outs = net(wavs)
            loss = sum(_loss(o, _targets(examples, g, card, dev), card.training.loss) for o, g in zip(outs, groups)) / total
            (loss * world).backward()  # DDP averages over the ranks; each rank's loss is its share of the step
        loss_sum += loss.detach().double()
    stats = torch.stack([loss_sum, torch.tensor(float(stop), dtype=torch.float64, device=dev)])
    if ddp:
        import torch.distributed as dist

        dist.all_reduce(stats)
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)) if cfg.clip_norm > 0 else float("nan")
    opt.step()
    sched.step()
    return {"loss": float(stats[0]), "grad_norm": grad_norm, "lr": float(opt.param_groups[-1]["lr"]),
            "stop": bool(stats[1] > 0)}


def _same_state_on_all_ranks(ckpt: Path, state: dict | None, row: int, device) -> None:
    """Every rank must resume from the same checkpoint (``--results-dir`` on a file system all nodes see)."""
    import torch.distributed as dist

    key = -1 if state is None else int(state["row"]) * 10**9 + int(state["step"])
    t = torch.tensor([key, -key], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != key or int(-t[1]) != key:
        raise FinetuneError(f"{ckpt}: the processes see different checkpoints; put --results-dir on a file system that "
                            "every node sees")


def read_rows(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text()) if path.is_file() else []
    except (OSError, json.JSONDecodeError):
        raise FinetuneError(f"{path}: unreadable list of finished grid rows; rerun with --fresh") from None
