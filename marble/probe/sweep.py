"""Batched training of many probes at once: every (layer, LR, seed) is one slice of stacked weights.

Why batched: a constrained sweep is (L+2) x 6 small MLPs on the same features. Training them one at
a time re-reads the features and launches tiny matmuls P times; here the features sit once in device
memory and one ``torch.bmm`` per layer trains all probes together.

Each probe is exactly the run a user would get training that configuration alone:

* initialisation: ``torch.manual_seed(seed)`` then ``nn.Linear`` layers built in order (then
  ``torch.randn(S-1)`` for the weighted-sum logits) — the init depends only on the seed and shapes;
* minibatches count **files** (PROTOCOL §1): ``batch_order(seed, epoch, F)`` (numpy PCG64 seeded
  with ``[seed, epoch]``) permutes the F training files, shared by all probes with the same seed; a
  batch holds every window of ``batch_size`` consecutive files of that order (files in that order,
  a file's windows in cache order), each window carrying its file's label, the loss averaged over
  the rows — the reference's collate function; the last partial batch is kept;
* dropout: a counter-based hash of (seed, probe config, epoch, batch, head layer, element)
  (``dropout_mask``), so masks are independent per probe, identical on CPU and CUDA, and need no
  RNG state to resume;
* Adam (PyTorch's formula, per-probe step count and LR), ReduceLROnPlateau (PyTorch's rule:
  relative threshold 1e-4, no cooldown, min_lr 0, eps 1e-8) on the validation main score, early
  stopping (strict improvement, stop after ``early_stop_patience`` epochs without one) and the
  best-validation checkpoint (first epoch reaching the best score).

A stopped probe is removed from the working set: its parameters and optimiser state are frozen.
The pass ends when every probe has stopped. The whole state can be saved and restored
(``SweepState``) between epochs; a resumed pass computes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from marble.errors import MarbleError

WEIGHTED = "weighted"
M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Probe:
    """One configuration of the sweep. ``layer`` is a hidden-state index or ``"weighted"``."""

    layer: int | str
    lr: float
    seed: int = 1234

    @property
    def key(self) -> str:
        return f"{self.layer}|{self.lr!r}|{self.seed}"


@dataclass(frozen=True)
class TrainConfig:
    """Head shape and training schedule shared by all probes of one pass."""

    hidden: tuple[int, ...] = (512,)
    dropout: float = 0.2
    batch_size: int = 64
    max_epochs: int = 100
    scheduler_factor: float = 0.5
    scheduler_patience: int = 5
    early_stop_patience: int = 20
    weight_decay: float = 0.0
    loss: str = "cross-entropy"  # cross-entropy | bce | mse
    direction: str = "max"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


# ---------------------------------------------------------------------------------------------
# Deterministic randomness


def _mix32_int(x: int) -> int:
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x6A09E667) & M32
    x ^= x >> 16
    return x


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """The same 32-bit hash on an int64 tensor holding values in [0, 2^32) (products stay < 2^63)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x6A09E667) & M32
    return x ^ (x >> 16)


def dropout_key(probe: Probe, epoch: int, batch: int, layer: int) -> int:
    """A 32-bit stream key for one probe's dropout at (epoch, batch, head layer)."""
    k = _mix32_int(zlib.crc32(probe.key.encode()) ^ _mix32_int(probe.seed))
    for v in (epoch, batch, layer):
        k = _mix32_int(k ^ _mix32_int(v + 0x9E3779B9))
    return k


_BASES: dict = {}


def _hashed_arange(n: int, device: str) -> torch.Tensor:
    if (n, device) not in _BASES:
        if len(_BASES) > 8:
            _BASES.clear()
        _BASES[(n, device)] = _mix32(torch.arange(n, dtype=torch.int64, device=device))
    return _BASES[(n, device)]


def dropout_mask(keys: Sequence[int], rows: int, width: int, p: float, device="cpu", row_offset: int = 0) -> torch.Tensor:
    """Inverted-dropout multipliers [len(keys), rows, width]: 0 with probability ``p``, else 1/(1-p). With
    ``row_offset`` the rows ``row_offset ..`` of a larger batch's mask (so a batch cut into micro-steps gets the
    same mask as whole)."""
    if torch.device(device).type == "cpu":
        return torch.from_numpy(_dropout_mask_u32(keys, rows, width, p, row_offset)).view(len(keys), rows, width)
    if row_offset:
        start = row_offset * width
        base = _mix32(torch.arange(start, start + rows * width, dtype=torch.int64, device=device))
    else:
        base = _hashed_arange(rows * width, str(device))
    k = torch.tensor(list(keys), dtype=torch.int64, device=device)
    u = _mix32(base[None, :] ^ k[:, None])
    keep = u >= int(round(p * 2**32))
    return (keep.to(torch.float32) * (1.0 / (1.0 - p))).view(len(keys), rows, width)


_BASES_U32: dict = {}
_MASK_CHUNK = 1 << 18  # hashed elements per pass: a few hundred kB of uint32 stays in cache


def _dropout_mask_u32(keys: Sequence[int], rows: int, width: int, p: float, row_offset: int = 0) -> np.ndarray:
    """The same multipliers as the int64 torch path, computed on the CPU in numpy ``uint32`` (the hash's
    ``& 0xFFFFFFFF`` is the dtype's own wrap-around) in place, in cache-sized chunks: bit-identical to it and
    several times faster (the int64 hash with its masking passes was most of a beat sweep's training time)."""
    n = rows * width
    if row_offset:
        start = row_offset * width
        base = _mix32(torch.arange(start, start + n, dtype=torch.int64)).numpy().astype(np.uint32)
    else:
        if n not in _BASES_U32:
            if len(_BASES_U32) > 8:
                _BASES_U32.clear()
            _BASES_U32[n] = _hashed_arange(n, "cpu").numpy().astype(np.uint32)
        base = _BASES_U32[n]
    k = np.asarray([int(x) & M32 for x in keys], dtype=np.uint32)[:, None]
    thr, scale = np.uint32(int(round(p * 2**32))), np.float32(1.0 / (1.0 - p))
    out = np.empty((len(k), n), dtype=np.float32)
    step = max(1, _MASK_CHUNK // max(1, len(k)))
    x = np.empty((len(k), min(step, n)), dtype=np.uint32)
    t = np.empty_like(x)
    keep = np.empty(x.shape, dtype=bool)
    for a in range(0, n, step):
        b = min(a + step, n)
        xs, ts, ks = x[:, : b - a], t[:, : b - a], keep[:, : b - a]
        np.bitwise_xor(base[None, a:b], k, out=xs)
        for shift, mult in ((16, 0x7FEB352D), (15, 0x6A09E667), (16, None)):  # _mix32, in uint32
            np.right_shift(xs, shift, out=ts)
            np.bitwise_xor(xs, ts, out=xs)
            if mult is not None:
                np.multiply(xs, np.uint32(mult), out=xs)
        np.greater_equal(xs, thr, out=ks)
        np.multiply(ks, scale, out=out[:, a:b])
    return out


def batch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The training permutation of the ``n`` files of one epoch (depends only on the seed and the epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


@dataclass(frozen=True)
class FileBatches:
    """Training windows grouped by file: ``rows[starts[f]:starts[f + 1]]`` are file ``f``'s windows
    in cache order. Built from ``files[w]`` = the file number (0..F-1) of window ``w``."""

    rows: np.ndarray
    starts: np.ndarray

    @classmethod
    def build(cls, files: np.ndarray | None, n_windows: int) -> "FileBatches":
        files = np.arange(n_windows) if files is None else np.asarray(files, dtype=np.int64)
        if files.shape != (n_windows,):
            raise ValueError(f"files must give one file number per training window ({n_windows}), got {files.shape}")
        counts = np.bincount(files) if n_windows else np.zeros(0, dtype=np.int64)
        if n_windows and (files.min() < 0 or (counts == 0).any()):
            raise ValueError("file numbers must be 0..F-1, every file with at least one window")
        return cls(np.argsort(files, kind="stable"), np.concatenate([[0], np.cumsum(counts)]))

    @property
    def n_files(self) -> int:
        return len(self.starts) - 1

    def epoch(self, order: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Window rows of one epoch in batch order and the batch boundaries into them (``batch_size``
        files a batch): batch ``b`` is ``rows[bounds[b]:bounds[b + 1]]``."""
        counts = np.diff(self.starts)[order]
        firsts = np.repeat(self.starts[:-1][order] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        rows = self.rows[firsts + np.arange(counts.sum())]
        ends = np.concatenate([[0], np.cumsum(counts)])
        return rows, ends[np.r_[np.arange(0, len(order), batch_size), len(order)]]

    def n_batches(self, batch_size: int) -> int:
        return math.ceil(self.n_files / batch_size)


def init_params(seed: int, dims: Sequence[int], n_mix: int) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """What ``torch.manual_seed(seed)`` + ``nn.Linear(d_i, d_{i+1})`` layers in order (+ ``randn(n_mix)``)
    produce. Returns weights transposed to [in, out], biases, mix logits. The global RNG is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ws, bs = [], []
        for a, b in zip(dims[:-1], dims[1:]):
            lin = torch.nn.Linear(a, b)
            ws.append(lin.weight.detach().t().contiguous())
            bs.append(lin.bias.detach().clone())
        mix = torch.randn(n_mix) if n_mix > 0 else torch.zeros(0)
    return ws, bs, mix


# ---------------------------------------------------------------------------------------------
# Plateau scheduler and early stopping (per probe, host side)


def plateau_is_better(a: float, best: float, direction: str, threshold: float = 1e-4) -> bool:
    """torch.optim.lr_scheduler.ReduceLROnPlateau's rule (threshold_mode='rel')."""
    if direction == "max":
        return a > best * (1.0 + threshold)
    return a < best * (1.0 - threshold)


def strictly_better(a: float, best: float, direction: str) -> bool:
    return a > best if direction == "max" else a < best


def observe(state: "SweepState", i: int, v: float, epoch: int, steps: int, cfg: TrainConfig) -> bool:
    """Record probe ``i``'s validation score ``v`` after 0-based ``epoch``: early stopping (strict
    improvement in ``cfg.direction``; NaN never improves), ReduceLROnPlateau, the stop reason.
    Returns whether the score improved (the caller keeps that probe's checkpoint)."""
    state.steps[i] = steps
    state.epochs[i] = epoch + 1
    state.history[i].append(v)
    improved = strictly_better(v, state.es_best[i], cfg.direction)
    if improved:
        state.es_best[i], state.es_wait[i], state.best_epoch[i] = v, 0, epoch + 1
    else:
        state.es_wait[i] += 1
    # ReduceLROnPlateau.step(v)
    if plateau_is_better(v, state.sched_best[i], cfg.direction):
        state.sched_best[i], state.sched_bad[i] = v, 0
    else:
        state.sched_bad[i] += 1
    if state.sched_bad[i] > cfg.scheduler_patience:
        new = max(state.lrs[i] * cfg.scheduler_factor, 0.0)
        if state.lrs[i] - new > 1e-8:
            state.lrs[i] = new
        state.sched_bad[i] = 0
    if state.es_wait[i] >= cfg.early_stop_patience:
        state.stopped[i] = "early"
    elif epoch + 1 >= cfg.max_epochs:
        state.stopped[i] = "max_epochs"
    return improved


# ---------------------------------------------------------------------------------------------
# State


@dataclass
class SweepState:
    """Everything needed to continue a pass: full stacked tensors (CPU when saved) and host state."""

    epoch: int  # epochs completed
    params: dict[str, torch.Tensor]  # name -> [P, ...]
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    best_params: dict[str, torch.Tensor]
    steps: list[int]
    lrs: list[float]
    sched_best: list[float]
    sched_bad: list[int]
    es_best: list[float]
    es_wait: list[int]
    best_epoch: list[int]
    epochs: list[int]
    stopped: list[str | None]
    history: list[list[float]]
    fingerprint: str = ""

    def to(self, device) -> "SweepState":
        mv = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return SweepState(self.epoch, mv(self.params), mv(self.exp_avg), mv(self.exp_avg_sq), mv(self.best_params),
                          list(self.steps), list(self.lrs), list(self.sched_best), list(self.sched_bad),
                          list(self.es_best), list(self.es_wait), list(self.best_epoch), list(self.epochs),
                          list(self.stopped), [list(h) for h in self.history], self.fingerprint)


def save_state(path: str | os.PathLike, state: SweepState) -> None:
    """Atomic (``marble.io.atomic_open``): a crash mid-write leaves the previous state in place. Only what a resume
    reads is written: a stopped probe needs its best checkpoint, not its last weights and Adam moments, so those
    rows are left out (``live_rows`` names the rows kept); a sweep whose probes have mostly stopped writes a
    fraction of the full state (:func:`load_state` fills the rows back)."""
    from marble.io import atomic_open

    d = asdict(state.to("cpu"))
    live = [i for i, s in enumerate(state.stopped) if s is None]
    if len(live) < len(state.stopped):
        rows = torch.as_tensor(live, dtype=torch.long)
        for key in ("params", "exp_avg", "exp_avg_sq"):
            d[key] = {k: v.index_select(0, rows) for k, v in d[key].items()}
        d["live_rows"] = live
    with atomic_open(path) as f:
        torch.save(d, f)


class Checkpoints:
    """When a pass writes its state: after every ``every``-th epoch (``--checkpoint-every``) and after the last,
    except that a due write waits while the writing so far would exceed a tenth of the pass's time (a state of
    wide features and many probes takes seconds to write: written every few fast epochs, it slowed the sweep).
    What a crash can lose is then at most the epochs since the last write, which is never older than ``every``
    epochs plus a tenth of the time spent."""

    SHARE = 0.1

    def __init__(self, path: str | os.PathLike | None, every: int):
        self.path, self.every = path, max(1, int(every))
        self.t0, self.spent = time.perf_counter(), 0.0

    def after_epoch(self, state: SweepState) -> None:
        if self.path is None:
            return
        last = all(s is not None for s in state.stopped)
        due = state.epoch % self.every == 0 and self.spent <= self.SHARE * (time.perf_counter() - self.t0)
        if last or due:
            t = time.perf_counter()
            save_state(self.path, state)
            self.spent += time.perf_counter() - t


def resume_state(path: str | os.PathLike | None, fingerprint: str, device) -> SweepState | None:
    """The saved state at ``path`` on ``device``, or None when there is none; a state of another configuration
    (``fingerprint``) is refused, never resumed."""
    if path is None or not Path(path).exists():
        return None
    state = load_state(path)
    check_fingerprint(path, state.fingerprint, fingerprint)
    return state.to(device)


class StateFileError(MarbleError, RuntimeError):
    """A saved sweep state that cannot be read back (truncated, foreign or crafted)."""


def check_fingerprint(path, saved: str, fingerprint: str) -> None:
    if saved != fingerprint:
        raise StateFileError(f"{path}: saved sweep state belongs to a different configuration (task, cache, grid or "
                             "seed changed); delete it or rerun with --fresh")


def read_state_file(path: str | os.PathLike, build=dict):
    """``build(**d)`` of the dict saved at ``path``, read with ``weights_only=True``: tensors and plain containers
    only, so a pickle payload placed in the file is refused, never run. Any failure is one ``StateFileError``."""
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        return build(**d)
    except Exception as e:
        raise StateFileError(f"{path}: cannot read the saved sweep state ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                             "it is truncated, from another version or not a marble state file. Rerun with --fresh to "
                             "discard it and start the sweep from scratch") from None


def load_state(path: str | os.PathLike) -> SweepState:
    """The batched sweep's saved state (:func:`read_state_file`)."""
    return read_state_file(path, _sweep_state)


def _sweep_state(live_rows=None, **d) -> SweepState:
    if live_rows is not None:  # rows of stopped probes were not saved: their best weights, zero moments
        rows = torch.as_tensor(live_rows, dtype=torch.long)
        for key in ("params", "exp_avg", "exp_avg_sq"):
            full = {k: (v.clone() if key == "params" else torch.zeros_like(v)) for k, v in d["best_params"].items()}
            for k, v in d[key].items():
                full[k][rows] = v
            d[key] = full
    return SweepState(**d)


# ---------------------------------------------------------------------------------------------
# The batched head


class BatchedHeads:
    """Forward of P MLP heads (+ weighted-sum mixing) on stacked parameters."""

    def __init__(self, probes: Sequence[Probe], cfg: TrainConfig, num_states: int):
        self.probes = list(probes)
        self.cfg = cfg
        self.S = num_states
        self.is_weighted = np.array([p.layer == WEIGHTED for p in self.probes])
        for p in self.probes:
            if p.layer != WEIGHTED and not (isinstance(p.layer, (int, np.integer)) and 0 <= p.layer < num_states):
                raise ValueError(f"probe layer {p.layer!r} is not 'weighted' or a state index 0..{num_states - 1}")
            if p.layer == WEIGHTED and num_states < 2:
                raise ValueError("a weighted-sum probe needs at least 2 hidden states (state 0 is excluded)")

    def inputs(self, X: torch.Tensor, rows: torch.Tensor, sel: np.ndarray, mix: torch.Tensor) -> torch.Tensor:
        """Probe inputs [len(sel), B, H] for the windows ``rows`` [B]; ``mix`` [len(sel), S-1]."""
        xb = X[rows].float()  # [B, S, H]
        lay = ~self.is_weighted[sel]
        outs, order = [], []
        if lay.any():
            idx = torch.as_tensor([self.probes[i].layer for i in sel[lay]], device=X.device)
            outs.append(xb[:, idx].transpose(0, 1))
            order.extend(np.flatnonzero(lay))
        if (~lay).any():
            w = torch.softmax(mix[torch.as_tensor(np.flatnonzero(~lay), device=X.device)], dim=-1)  # [Pw, S-1]
            outs.append(torch.einsum("bsh,ps->pbh", xb[:, 1:], w))
            order.extend(np.flatnonzero(~lay))
        x = torch.cat(outs, 0) if len(outs) > 1 else outs[0]
        order = np.asarray(order)
        if (order != np.arange(len(order))).any():
            x = x[torch.as_tensor(np.argsort(order), device=X.device)]
        return x

    def forward(self, x: torch.Tensor, ws, bs, masks: Sequence[torch.Tensor] | None = None,
                weighted: torch.Tensor | None = None) -> torch.Tensor:
        """``weighted``: rows of ``x`` that belong to weighted-sum probes. Only those need a gradient
        with respect to their input (for the mixing weights), so the first layer runs on the detached
        input and an exactly-zero term ``(x_w - x_w.detach()) @ W_w.detach()`` routes the gradient to
        the weighted rows alone — the same values and gradients, without an input-gradient matmul for
        every single-layer probe."""
        h = x
        n = len(ws)
        for i in range(n):
            if i == 0 and weighted is not None and x.requires_grad:
                h = torch.baddbmm(bs[0][:, None, :], x.detach(), ws[0])
                if len(weighted):
                    xw = x[weighted]
                    h = h.index_add(0, weighted, torch.bmm(xw - xw.detach(), ws[0][weighted].detach()))
            else:
                h = torch.baddbmm(bs[i][:, None, :], h, ws[i])
            if i < n - 1:
                h = torch.relu(h)
                if masks is not None:
                    h = h * masks[i]
        return h


def probe_losses(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-probe mean loss [P] for outputs [P, B, C] and targets [P, B] / [P, B, C]."""
    P, B, C = out.shape
    if loss == "cross-entropy":
        return F.cross_entropy(out.reshape(P * B, C), y.reshape(P * B), reduction="none").view(P, B).mean(1)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(out, y.float(), reduction="none").mean((1, 2))
    if loss == "mse":
        return F.mse_loss(out, y.float(), reduction="none").mean((1, 2))
    raise ValueError(f"unknown loss {loss!r} (cross-entropy | bce | mse)")


# ---------------------------------------------------------------------------------------------
# The pass


@dataclass
class SweepOutcome:
    probes: list[Probe]
    best_params: dict[str, torch.Tensor]  # on the training device
    best_epoch: list[int]
    epochs: list[int]
    stopped: list[str]
    history: list[list[float]]  # validation main score per epoch, per probe
    heads: BatchedHeads = field(repr=False, default=None)


def _names(n_layers: int) -> list[str]:
    return [f"w{i}" for i in range(n_layers)] + [f"b{i}" for i in range(n_layers)] + ["mix"]


def initial_state(probes: Sequence[Probe], cfg: TrainConfig, dims: Sequence[int], num_states: int, device) -> SweepState:
    n_mix = num_states - 1
    cache: dict[int, tuple] = {}
    for p in probes:
        if p.seed not in cache:
            cache[p.seed] = init_params(p.seed, dims, n_mix)
    L = len(dims) - 1
    params = {}
    for i in range(L):
        params[f"w{i}"] = torch.stack([cache[p.seed][0][i] for p in probes]).to(device)
        params[f"b{i}"] = torch.stack([cache[p.seed][1][i] for p in probes]).to(device)
    params["mix"] = torch.stack([cache[p.seed][2] for p in probes]).to(device)
    P = len(probes)
    worst = -math.inf if cfg.direction == "max" else math.inf
    return SweepState(
        epoch=0, params=params,
        exp_avg={k: torch.zeros_like(v) for k, v in params.items()},
        exp_avg_sq={k: torch.zeros_like(v) for k, v in params.items()},
        best_params={k: v.clone() for k, v in params.items()},
        steps=[0] * P, lrs=[float(p.lr) for p in probes], sched_best=[worst] * P, sched_bad=[0] * P,
        es_best=[worst] * P, es_wait=[0] * P, best_epoch=[0] * P, epochs=[0] * P, stopped=[None] * P,
        history=[[] for _ in range(P)],
    )


def adam_step(params, grads, exp_avg, exp_avg_sq, steps: np.ndarray, lrs: np.ndarray, cfg: TrainConfig) -> None:
    """PyTorch's Adam (single-tensor, non-amsgrad) on stacked tensors with per-probe step and LR.
    Scalars are computed in float64 and rounded once to float32, as torch does for python scalars."""
    b1, b2 = cfg.betas
    dev = next(iter(params.values())).device
    bc1 = 1.0 - b1 ** steps
    bc2_sqrt = np.sqrt(1.0 - b2 ** steps)
    step_size = torch.as_tensor(lrs / bc1, dtype=torch.float32, device=dev)
    bc2s = torch.as_tensor(bc2_sqrt, dtype=torch.float32, device=dev)
    for k, p in params.items():
        g = grads[k]
        if g is None:
            continue
        if cfg.weight_decay:
            g = g.add(p, alpha=cfg.weight_decay)
        shape = (-1,) + (1,) * (p.dim() - 1)
        exp_avg[k].lerp_(g, 1 - b1)
        exp_avg_sq[k].mul_(b2).addcmul_(g, g, value=1 - b2)
        # same operations and order as torch's Adam, but in place in one reused buffer: the stacked
        # parameters are large and freshly allocated temporaries (page faults) dominated the CPU time
        buf = _scratch(k, p)
        torch.sqrt(exp_avg_sq[k], out=buf).div_(bc2s.view(shape)).add_(cfg.eps)
        torch.div(exp_avg[k], buf, out=buf).mul_(step_size.view(shape))
        p.sub_(buf)


_SCRATCH: dict[tuple, torch.Tensor] = {}


def _scratch(name: str, like: torch.Tensor) -> torch.Tensor:
    """A reusable buffer shaped like ``like`` (one per parameter name, reallocated when the active
    probe set shrinks)."""
    key = (name, like.device, like.dtype)
    buf = _SCRATCH.get(key)
    if buf is None or buf.shape != like.shape:
        buf = _SCRATCH[key] = torch.empty_like(like)
    return buf


def predict(heads: BatchedHeads, params: dict[str, torch.Tensor], X: torch.Tensor, sel: np.ndarray | None = None,
            chunk_elems: int = 1 << 24) -> torch.Tensor:
    """Window outputs [len(sel), N, C] of the selected probes (eval mode: no dropout)."""
    sel = np.arange(len(heads.probes)) if sel is None else np.asarray(sel)
    L = len(heads.cfg.hidden) + 1
    ws = [params[f"w{i}"][sel] for i in range(L)]
    bs = [params[f"b{i}"][sel] for i in range(L)]
    mix = params["mix"][sel]
    width = max([X.shape[-1], *heads.cfg.hidden])
    step = max(1, chunk_elems // max(1, len(sel) * width))
    outs = []
    with torch.no_grad():
        for s in range(0, X.shape[0], step):
            rows = torch.arange(s, min(s + step, X.shape[0]), device=X.device)
            x = heads.inputs(X, rows, sel, mix)
            outs.append(heads.forward(x, ws, bs))
    return torch.cat(outs, 1)


def _group_loss(heads: BatchedHeads, cfg: TrainConfig, wp: dict, g: np.ndarray, active: np.ndarray,
                rows: torch.Tensor, X: torch.Tensor, y: torch.Tensor, dims: Sequence[int], epoch: int, b: int,
                whole: bool) -> torch.Tensor:
    """Summed batch losses of the active probes at positions ``g`` (one seed, so one batch of rows)."""
    L = len(dims) - 1
    sel = active[g]
    if whole:  # every active probe: the working tensors themselves, no gather
        pick = lambda t: t  # noqa: E731
    else:
        gt = torch.as_tensor(g, device=X.device)
        pick = lambda t: t[gt]  # noqa: E731
    x = heads.inputs(X, rows, sel, pick(wp["mix"]))
    masks = None
    if cfg.dropout > 0:
        keys = [[dropout_key(heads.probes[i], epoch, b, li) for i in sel] for li in range(L - 1)]
        masks = [dropout_mask(keys[li], len(rows), dims[li + 1], cfg.dropout, X.device) for li in range(L - 1)]
    weighted = torch.as_tensor(np.flatnonzero(heads.is_weighted[sel]), device=X.device)
    out = heads.forward(x, [pick(wp[f"w{i}"]) for i in range(L)], [pick(wp[f"b{i}"]) for i in range(L)], masks,
                        weighted=weighted)
    yb = y[rows].unsqueeze(0).expand(len(sel), *y[rows].shape)
    return probe_losses(out, yb, cfg.loss).sum()


def train_sweep(
    probes: Sequence[Probe],
    cfg: TrainConfig,
    X_train: torch.Tensor,
    y_train: torch.Tensor,
    X_valid: torch.Tensor,
    valid_score: Callable[[torch.Tensor], np.ndarray],
    *,
    num_outputs: int,
    state_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    fingerprint: str = "",
    on_epoch: Callable[[int, int, float], None] | None = None,
    stop_after_epoch: int | None = None,
    files: np.ndarray | None = None,
) -> SweepOutcome:
    """Train all probes until each has stopped; returns best-validation checkpoints and curves.

    ``valid_score(window_outputs [P_active, N_valid, C]) -> [P_active]`` scores the monitored metric
    (file or song aggregation lives with the caller). ``files[w]`` is the file number (0..F-1) of
    training window ``w``: a batch holds all windows of ``cfg.batch_size`` files (default: every
    window is its own file). With ``state_path`` the pass resumes from a saved state and saves one
    every ``checkpoint_every`` epochs. ``stop_after_epoch`` ends the pass early (tests).
    """
    device = X_train.device
    S, H = X_train.shape[1], X_train.shape[2]
    dims = [H, *cfg.hidden, num_outputs]
    L = len(dims) - 1
    heads = BatchedHeads(probes, cfg, S)
    P = len(probes)
    state = resume_state(state_path, fingerprint, device)
    if state is None:
        state = initial_state(probes, cfg, dims, S, device)
        state.fingerprint = fingerprint
    checkpoints = Checkpoints(state_path, checkpoint_every)
    names = _names(L)
    y_dev = y_train.to(device)
    fb = FileBatches.build(files, X_train.shape[0])
    seeds = np.array([p.seed for p in probes])

    while True:
        active = np.array([i for i in range(P) if state.stopped[i] is None])
        if len(active) == 0 or (stop_after_epoch is not None and state.epoch >= stop_after_epoch):
            break
        epoch = state.epoch  # 0-based index of the epoch about to run
        act_t = torch.as_tensor(active, device=device)
        # working copies of the active probes; while none has stopped, the state tensors themselves
        # (updated in place), which saves a gather + scatter of every parameter and moment per epoch
        everyone = len(active) == P
        pick = (lambda t: t) if everyone else (lambda t: t[act_t].clone())  # noqa: E731
        wp = {k: pick(state.params[k].detach()).requires_grad_(bool(k != "mix" or heads.is_weighted[active].any()))
              for k in names}
        m1 = {k: pick(state.exp_avg[k]) for k in names}
        m2 = {k: pick(state.exp_avg_sq[k]) for k in names}
        steps = np.array([state.steps[i] for i in active], dtype=np.float64)
        lrs = np.array([state.lrs[i] for i in active], dtype=np.float64)
        # the probes of one seed share their batches: one group per seed, positions into ``active``
        act_seeds = seeds[active]
        groups = [np.flatnonzero(act_seeds == s) for s in np.unique(act_seeds)]
        batches = []
        for g in groups:
            rows, bounds = fb.epoch(batch_order(int(act_seeds[g[0]]), epoch, fb.n_files), cfg.batch_size)
            batches.append((torch.as_tensor(rows, device=device), bounds))
        req = [k for k in names if wp[k].requires_grad]
        for b in range(fb.n_batches(cfg.batch_size)):
            loss = 0.0
            for g, (rows, bounds) in zip(groups, batches):
                loss = loss + _group_loss(heads, cfg, wp, g, active, rows[bounds[b]:bounds[b + 1]], X_train, y_dev,
                                          dims, epoch, b, whole=len(groups) == 1)
            grads = dict(zip(req, torch.autograd.grad(loss, [wp[k] for k in req])))
            steps += 1
            with torch.no_grad():
                adam_step({k: wp[k] for k in req}, grads, {k: m1[k] for k in req}, {k: m2[k] for k in req},
                          steps, lrs, cfg)
        # validation
        with torch.no_grad():
            params_act = {k: v.detach() for k, v in wp.items()}
            if everyone:
                state.params = params_act
            else:
                for k in names:
                    state.params[k][act_t] = params_act[k]
                    state.exp_avg[k][act_t] = m1[k]
                    state.exp_avg_sq[k][act_t] = m2[k]
            outs = predict(heads, state.params, X_valid, active)
            scores = np.asarray(valid_score(outs), dtype=np.float64)
        improved = [i for j, i in enumerate(active) if observe(state, i, float(scores[j]), epoch, int(steps[j]), cfg)]
        if improved:
            imp = torch.as_tensor(improved, device=device)
            for k in names:
                state.best_params[k][imp] = state.params[k][imp]
        state.epoch = epoch + 1
        checkpoints.after_epoch(state)
        if on_epoch is not None:
            valid_best = [state.es_best[i] for i in range(P) if math.isfinite(state.es_best[i])]
            best = (max if cfg.direction == "max" else min)(valid_best) if valid_best else float("nan")
            on_epoch(state.epoch, sum(s is None for s in state.stopped), best)

    return SweepOutcome(list(probes), state.best_params, list(state.best_epoch), list(state.epochs),
                        [s or "interrupted" for s in state.stopped], [list(h) for h in state.history], heads)
