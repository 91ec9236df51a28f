"""The pretraining loop: random crops -> teachers on the clean audio -> mixup -> span mask -> MERT loss.

Resumable: ``<out>/checkpoint.pt`` (model with heads, optimiser, scheduler, step, RNG states, preset and run
settings) is written atomically (temporary file + ``os.replace``) every ``save_every`` steps, at the end, and
on Ctrl-C; rerunning with the same ``out_dir`` continues from it. Every source of randomness of step ``s``
(batch files and crop offsets, mixup, mask, dropout) is seeded from ``(seed, s)``, so an interrupted and
resumed run reproduces the uninterrupted one (bit-exact on CPU; on CUDA up to non-deterministic kernels).

Effective batch = ``batch_size x accumulate x world``. Under torchrun (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``)
a process group is opened (:mod:`marble.distributed`; nccl on CUDA, gloo on CPU) and the model trains
inside torch's ``DistributedDataParallel``; rank ``r`` takes crops ``[r * A * B, (r + 1) * A * B)`` of the step
and runs ``accumulate`` micro-batches, all but the last under ``no_sync()``, so the gradients are all-reduced
once per step, in DDP's buckets during the last backward. Crop ``g`` of step ``s``, its span mask and each
micro-batch's dropout/mixup seeds are derived from ``(seed, s, g)`` / ``(seed, s, micro)``, and the loss is
normalised by the masked-frame count of the whole step, so the update is independent of the split (up to float
summation order), mixup aside (its segments come from the clip's micro-batch). Only rank 0 writes files; a resume must keep the effective batch.

Optimisation (PROTOCOL §7): AdamW (betas 0.9/0.98, eps 1e-6, weight decay 0.01), linear warm-up over the
first ``warmup_steps`` (default 8 % of ``steps``: 32k of 400k) then linear decay to 0 at ``steps``, gradient
clipping at the preset's ``clip_norm``, bf16 autocast on CUDA (fp32 on CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from marble.devices import resolve_device
from marble.io import atomic_open, read_torch_state, write_json
from marble.pretrain import PretrainError
from marble.pretrain.config import Preset, get_preset
from marble.pretrain.data import CropBatches, list_audio_files
from marble.pretrain.losses import mert_loss
from marble.pretrain.masking import MASK_LENGTH, MASK_PROB, clip_span_masks
from marble.pretrain.mixup import inbatch_noise_mixup
from marble.pretrain.model import MERTPretrainModel
from marble.pretrain.teachers import CQT, EncodecTeacher, align_frames
from marble.pretrain.teachers.encodec import DEFAULT_TEACHER
from marble.pretrain.teachers.kmeans import PREFIX as KMEANS_PREFIX
from marble.pretrain.teachers.kmeans import KMeansTeacher, TeacherMismatch

CHECKPOINT = "checkpoint.pt"
RUN_JSON = "run.json"
LOG = "log.jsonl"
FORMAT = "marble-pretrain-1"
# settings a resumed run must share with the run that wrote the checkpoint (plus the effective batch:
# batch_size x accumulate x world size, however it is split)
_RESUME_KEYS = ("preset", "seed", "crop_seconds", "mask_prob", "mask_length", "mixup_prob")


class EffectiveBatchMismatch(PretrainError):
    """A resume whose batch_size x accumulate x world size differs from the checkpoint's."""


@dataclass
class TrainConfig:
    audio_dir: str
    out_dir: str
    preset: str = "95m"
    steps: int = 400_000
    warmup_steps: int | None = None       # default: 8 % of steps (32k / 400k)
    batch_size: int = 16                  # crops per micro-batch and rank
    accumulate: int = 1                   # micro-batches per optimiser step (gradient accumulation)
    lr: float | None = None               # default: the preset's peak LR
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    crop_seconds: float = 5.0
    teacher: str = DEFAULT_TEACHER
    teacher_encoder: str | None = None    # the checkpoint of a hidden-state k-means teacher, named by the user
    device: str = "auto"
    save_every: int = 1000
    log_every: int = 10
    seed: int = 0
    num_workers: int = 2
    mask_prob: float = MASK_PROB
    mask_length: int = MASK_LENGTH
    mixup_prob: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_warmup(self) -> int:
        return int(self.warmup_steps) if self.warmup_steps is not None else int(round(0.08 * self.steps))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def normalize_batch(wav: torch.Tensor) -> torch.Tensor:
    """Per clip zero mean / unit variance, as ``Wav2Vec2FeatureExtractor`` and marble's extractor do."""
    mean = wav.mean(dim=-1, keepdim=True)
    var = wav.var(dim=-1, keepdim=True, unbiased=False)
    return (wav - mean) / torch.sqrt(var + 1e-7)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, preset: Preset):
    lr = cfg.lr if cfg.lr is not None else preset.lr
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                            weight_decay=cfg.weight_decay)
    warmup, total = cfg.resolved_warmup(), int(cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))
    return opt, sched


def _rng_states() -> dict[str, Any]:
    """Provenance only (every step reseeds from ``(seed, step)``); plain tensors and numbers, so that the
    checkpoint loads with ``torch.load(weights_only=True)``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
          "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def save_checkpoint(path: Path, *, model, optimizer, scheduler, step: int, preset: Preset, cfg: TrainConfig,
                    teacher: dict, world_size: int = 1) -> None:
    state = {"format": FORMAT, "step": int(step), "preset": preset.to_dict(), "run": asdict(cfg), "teacher": teacher,
             "world_size": int(world_size), "effective_batch": int(cfg.batch_size * cfg.accumulate * world_size),
             "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": _rng_states(), "time": time.time()}
    with atomic_open(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise PretrainError(f"{path}: no pretraining checkpoint there; pass the --out folder of `marble pretrain run` "
                            f"(it holds {CHECKPOINT}) or the {CHECKPOINT} file itself")
    state = read_torch_state(path, PretrainError, "Delete it to restart training from scratch.")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PretrainError(f"{path}: not a marble pretraining checkpoint (format {FORMAT!r} expected)")
    return state


class _StopFlag:
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: the usual KeyboardInterrupt."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                self.set = True
                signal.signal(signal.SIGINT, self._old if callable(self._old) else signal.default_int_handler)

            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _echo(msg: str, progress: bool) -> None:
    if progress:
        from tqdm import tqdm

        tqdm.write(msg)
    else:
        import sys

        print(msg, file=sys.stderr)



class StepLoss(torch.nn.Module):
    """The model and the MERT loss of one micro-batch as one ``forward``: the module
    ``DistributedDataParallel`` wraps, so that the gradients of the heads (used only by the loss) are
    reduced with the backbone's."""

    def __init__(self, model: MERTPretrainModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, mask: torch.Tensor, codes: torch.Tensor, cqt_t: torch.Tensor,
                num_masked: float, penalty_scale: float) -> dict[str, torch.Tensor]:
        fwd = self.model(x, mask)
        hidden, mask_a, codes_a, cqt_a = align_frames(fwd["hidden"], mask, codes.transpose(1, 2), cqt_t, dim=1)
        return mert_loss(self.model, hidden, mask_a, codes_a.transpose(1, 2), cqt_a, fwd["feature_penalty"],
                         num_masked=num_masked, penalty_scale=penalty_scale)


def wrap_ddp(model: MERTPretrainModel, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """``DistributedDataParallel`` over :class:`StepLoss` (rank 0's weights are broadcast at construction).
    Layerdrop skips layers at random per rank, hence ``find_unused_parameters`` when it is on; no buffer
    changes in training, hence no buffer broadcast."""
    return torch.nn.parallel.DistributedDataParallel(
        StepLoss(model), device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
        find_unused_parameters=float(model.config.layerdrop) > 0)


def load_teacher(source: str, preset: Preset, device: torch.device, encoder: str | None = None):
    """The acoustic teacher named by ``--teacher`` (``kmeans:PATH`` or an EnCodec hub id / folder) and its
    provenance for the checkpoint; its sample and frame rate must be the model's. ``encoder``
    (``--teacher-encoder``): the checkpoint a hidden-state k-means teacher was fitted on, as the user names it."""
    frame_rate = preset.sample_rate / float(np.prod(preset.hubert["conv_stride"]))
    if encoder is not None and not str(source).startswith(KMEANS_PREFIX):
        raise PretrainError(f"--teacher-encoder {encoder}: applies to a k-means teacher of hidden states "
                            f"(--teacher kmeans:PATH), not to {source!r}")
    if str(source).startswith(KMEANS_PREFIX):
        teacher = KMeansTeacher(str(source)[len(KMEANS_PREFIX):], device=device, encoder=encoder)
        info = teacher.info()
        if teacher.sample_rate != preset.sample_rate or abs(teacher.frame_rate - frame_rate) > 1e-6:
            raise TeacherMismatch(f"{teacher.path}: fitted on features at {teacher.sample_rate} Hz / "
                                  f"{teacher.frame_rate:g} frames/s, the model runs at {preset.sample_rate} Hz / "
                                  f"{frame_rate:g} frames/s; refit it on features at the model's rates")
        return teacher, info
    teacher = EncodecTeacher(source, device=device)
    if teacher.sample_rate != preset.sample_rate or abs(teacher.frame_rate - frame_rate) > 1e-6:
        raise PretrainError(f"{source}: EnCodec at {teacher.sample_rate} Hz / {teacher.frame_rate:g} frames/s does "
                            f"not match the model ({preset.sample_rate} Hz / {frame_rate:g} frames/s); use "
                            f"{DEFAULT_TEACHER}")
    if teacher.num_codebooks != preset.num_codebooks or teacher.codebook_size != preset.codebook_size:
        raise PretrainError(f"{source}: {teacher.num_codebooks} codebooks x {teacher.codebook_size} codes at "
                            f"{teacher.bandwidth:g} kbps, the recipe needs {preset.num_codebooks} x {preset.codebook_size}")
    return teacher, {"kind": "encodec", "source": str(source), "bandwidth": teacher.bandwidth,
                     "num_codebooks": teacher.num_codebooks}


def training_step(model: MERTPretrainModel, teacher: EncodecTeacher | KMeansTeacher, cqt: CQT, opt, sched, wav: torch.Tensor, step: int,
                  cfg: TrainConfig, preset: Preset, frames: int, *, rank: int = 0, world: int = 1,
                  ddp: torch.nn.parallel.DistributedDataParallel | None = None, stop: bool = False) -> dict[str, Any]:
    """One update from this rank's raw crops ``wav [accumulate * B, T]`` of step ``step`` (crops ``rank * A * B``
    onwards of the step's ``A * B * world``, see :class:`~marble.pretrain.data.CropBatches`).

    Per micro-batch: teachers on the clean audio, mixup (within the micro-batch), span mask, forward (bf16
    autocast on CUDA), MERT loss normalised by the masked-frame count of the whole step, backward (the
    gradients add up). With ``ddp`` (:func:`wrap_ddp`, one process per rank) the micro-batches but the last run
    under ``no_sync()``; the last backward all-reduces the summed gradients in DDP's buckets, overlapped with
    the backward pass. DDP averages over the ranks while each rank's loss is its share of the step's sum, so the
    loss is scaled by the world size for the backward: the gradients are the step's sum, as in one process.
    The metrics are summed over the ranks with one more all-reduce. Then clipping and the AdamW step, identical
    on every rank. Every clip's mask is seeded from ``(seed, step, g)`` (``g`` its index in the step), so the
    update does not depend on how the step's crops are split into ranks and micro-batches, except for mixup,
    whose segments come from the clip's own micro-batch. Returns
    detached metrics of the whole step; ``stop`` (this rank wants to stop) comes back as ``metrics["stop"]``
    (true if any rank wants to)."""
    device = wav.device
    acc, b = int(cfg.accumulate), int(cfg.batch_size)
    if wav.shape[0] != acc * b:
        raise ValueError(f"expected {acc} x {b} crops for step {step}, got {wav.shape[0]}")
    total_clips = acc * b * world
    masks = clip_span_masks([derive_seed(cfg.seed, step, 2, g) for g in range(total_clips)], frames, cfg.mask_prob,
                            cfg.mask_length)  # the whole step's masks: every rank knows the normaliser
    num_masked = float(masks.sum())
    masks = masks[rank * acc * b:(rank + 1) * acc * b].to(device)
    opt.zero_grad(set_to_none=True)
    net = ddp if ddp is not None else StepLoss(model)
    sums: dict[str, torch.Tensor] = {}
    for j in range(acc):
        micro = rank * acc + j  # index of this micro-batch among the step's acc * world
        torch.manual_seed(derive_seed(cfg.seed, step, 0, micro))  # dropout / layerdrop
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, step, 1, micro))
        w = wav[j * b:(j + 1) * b]
        codes = teacher.codes(w)                           # clean, un-normalised audio
        x = normalize_batch(w) if preset.normalize else w
        with torch.no_grad():
            cqt_t = cqt(x).transpose(1, 2)                 # clean model input, [B, T, bins]
        x, _ = inbatch_noise_mixup(x, preset.sample_rate, gen, prob=cfg.mixup_prob)
        mask = masks[j * b:(j + 1) * b]
        # gradient accumulation: DDP all-reduces only in the last micro-batch's backward
        with net.no_sync() if ddp is not None and j < acc - 1 else contextlib.nullcontext():
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                res = net(x, mask, codes, cqt_t, num_masked, 1.0 / (acc * world))
            (res["loss"] * world).backward()
        for k, v in res.items():
            v = v.detach().float().reshape(())
            sums[k] = sums[k] + v if k in sums else v.clone()
    keys = sorted(sums)
    stats = torch.stack([sums[k] for k in keys] + [torch.tensor(float(stop), device=sums[keys[0]].device)])
    if ddp is not None:
        import torch.distributed as dist

        dist.all_reduce(stats)
    metrics: dict[str, Any] = dict(zip(keys, stats[:-1]))
    metrics["stop"] = bool(stats[-1] > 0)
    skipped = not bool(torch.isfinite(metrics["loss"]))
    if not skipped:
        metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), preset.clip_norm).detach()
        opt.step()
    sched.step()
    metrics["lr"] = torch.tensor(float(opt.param_groups[0]["lr"]))
    metrics["skipped_update"] = skipped
    return metrics


def _open_group(device: torch.device):
    """This process's rank: a torch.distributed group under torchrun (gloo on CPU, nccl on CUDA), else rank 0 of 1."""
    from marble.distributed import open_group

    return open_group(device.type, PretrainError, "pretrain run")


def _same_checkpoint_on_all_ranks(ckpt_path: Path, step: int, device: torch.device) -> None:
    import torch.distributed as dist

    t = torch.tensor([step, -step], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != step or int(-t[1]) != step:
        raise PretrainError(f"{ckpt_path}: the ranks see different checkpoints (steps {int(-t[1])}..{int(t[0])}; -1 = "
                            "none); put --out on a file system that every node sees")


def _suggest_accumulate(effective: int, batch_size: int, world: int) -> str:
    n, r = divmod(effective, batch_size * world)
    return str(n) if r == 0 and n >= 1 else f"N with --batch-size x N x {world} = {effective}"


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that cannot train before anything is written: a step count or interval below 1 (``--steps
    -1`` would save an untrained checkpoint and exit 0), a non-finite or non-positive LR (``--lr nan`` trains
    nothing), probabilities outside [0, 1]."""
    for name in ("steps", "batch_size", "accumulate", "save_every", "log_every"):
        if int(getattr(cfg, name)) < 1:
            raise PretrainError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be at least 1")
    if cfg.warmup_steps is not None and not 0 <= int(cfg.warmup_steps) <= int(cfg.steps):
        raise PretrainError(f"--warmup-steps {cfg.warmup_steps}: must lie in 0..--steps ({cfg.steps})")
    for name, value in (("lr", cfg.lr), ("crop_seconds", cfg.crop_seconds)):
        if value is not None and not (math.isfinite(float(value)) and float(value) > 0):
            raise PretrainError(f"--{name.replace('_', '-')} {value}: must be a positive, finite number")
    for name in ("mask_prob", "mixup_prob"):
        if not 0.0 <= float(getattr(cfg, name)) <= 1.0:
            raise PretrainError(f"{name} {getattr(cfg, name)}: a probability lies in [0, 1]")


def _log_line(log_f, path: Path, entry: dict) -> None:
    """One line of ``log.jsonl``; a failed append (full disk, quota, file size limit) is an error naming the file,
    not a traceback (the run resumes from its last checkpoint)."""
    from marble.io import WriteError

    try:
        log_f.write(json.dumps(entry) + "\n")
        log_f.flush()
    except OSError as e:
        raise WriteError(f"{path}: cannot append the training log ({e.strerror or e}); free disk space (or choose "
                         "another --out) and rerun the same command: it resumes from the last checkpoint") from None


def train(cfg: TrainConfig, progress: bool = True,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) until ``cfg.steps``; returns a summary (final step, last metrics, checkpoint path)."""
    out = Path(cfg.out_dir).expanduser()
    ckpt_path = out / CHECKPOINT
    check_config(cfg)
    device = resolve_device(cfg.device)
    shard = _open_group(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", shard.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world, main = shard.rank, shard.world, shard.is_main
    files = list_audio_files(cfg.audio_dir)
    state = load_checkpoint(ckpt_path) if ckpt_path.is_file() else None
    if shard.group:
        _same_checkpoint_on_all_ranks(ckpt_path, int(state["step"]) if state is not None else -1, device)
    effective = cfg.batch_size * cfg.accumulate * world
    if state is not None:
        old = state["run"]
        diff = {k: (old.get(k), getattr(cfg, k)) for k in _RESUME_KEYS if old.get(k) != getattr(cfg, k)}
        if diff:
            raise PretrainError(f"{ckpt_path}: the checkpoint was trained with different settings "
                                f"{ {k: v[0] for k, v in diff.items()} } (now { {k: v[1] for k, v in diff.items()} }); "
                                "rerun with the same settings to resume, or choose a new --out folder")
        old_world = int(state.get("world_size", 1))
        old_b, old_a = int(old.get("batch_size")), int(old.get("accumulate", 1))
        if old_b * old_a * old_world != effective:
            raise EffectiveBatchMismatch(
                f"{ckpt_path}: the checkpoint was trained with an effective batch of {old_b * old_a * old_world} crops "
                f"per step (--batch-size {old_b} x --accumulate {old_a} x {old_world} processes), this run has "
                f"{effective} ({cfg.batch_size} x {cfg.accumulate} x {world}); to resume keep the product equal, e.g. "
                f"--accumulate {_suggest_accumulate(old_b * old_a * old_world, cfg.batch_size, world)}, or choose a "
                "new --out folder")
        preset = Preset.from_dict(state["preset"])
    else:
        preset = get_preset(cfg.preset)
    teacher, teacher_info = load_teacher(cfg.teacher, preset, device, cfg.teacher_encoder)
    if state is None and teacher_info["kind"] == "kmeans":  # the heads follow the teacher's codebooks
        preset.num_codebooks, preset.codebook_size = teacher.num_codebooks, teacher.codebook_size
        preset.extra["codebook_sizes"] = list(teacher.codebook_sizes)
    if state is not None and (state.get("teacher") or {}).get("sha256") != teacher_info.get("sha256"):
        raise TeacherMismatch(f"{ckpt_path}: the checkpoint was trained with teacher "
                              f"{(state.get('teacher') or {}).get('source')!r}, this run has {cfg.teacher!r} (a "
                              "different artefact); resume with the same --teacher or choose a new --out folder")
    if teacher.num_codebooks != preset.num_codebooks or teacher.codebook_size != preset.codebook_size:
        raise PretrainError(f"{cfg.teacher}: {teacher.num_codebooks} codebooks x {teacher.codebook_size} codes, "
                            f"the model was built for {preset.num_codebooks} x {preset.codebook_size}")

    torch.manual_seed(derive_seed(cfg.seed, 2**31 - 1))  # model initialisation
    model = MERTPretrainModel(preset).to(device)
    cqt = CQT(sample_rate=preset.sample_rate, n_bins=preset.cqt_bins).to(device)
    opt, sched = build_optimizer(model, cfg, preset)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        # the schedule follows the current --steps / --warmup-steps (a longer run extends the decay)
        warmup, total = cfg.resolved_warmup(), int(cfg.steps)
        sched.lr_lambdas[0] = lambda s: lr_factor(s, warmup, total)
        step = int(state["step"])
        del state
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / RUN_JSON, {
            "run": asdict(cfg), "preset": preset.to_dict(), "num_files": len(files), "world_size": world,
            "effective_batch": effective, "effective_batch_seconds": effective * cfg.crop_seconds})
    summary: dict[str, Any] = {"step": step, "checkpoint": str(ckpt_path), "resumed_from": step, "metrics": {},
                               "rank": rank, "world_size": world, "effective_batch": effective}
    if step >= cfg.steps:
        summary["done"] = True
        shard.barrier()
        return summary

    dataset = CropBatches(files, preset.sample_rate, cfg.crop_seconds, cfg.batch_size, cfg.seed, cfg.steps,
                          accumulate=cfg.accumulate, world=world, rank=rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(step, cfg.steps),
                                         num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    frames = model.num_frames(dataset.crop)
    if frames < 2 * cfg.mask_length:
        raise PretrainError(f"--crop-seconds {cfg.crop_seconds:g} gives only {frames} frames; use at least 1 s")
    reported: set[str] = set()
    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, unit="step", dynamic_ncols=True, desc=f"pretrain {preset.name}")
    log_f = open(out / LOG, "a") if main else None
    bad_steps = 0
    t0, s0 = time.perf_counter(), step

    def save():
        if main:  # every rank holds the same weights; only rank 0 writes
            save_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched, step=step, preset=preset, cfg=cfg,
                            teacher=teacher_info, world_size=world)

    ddp = wrap_ddp(model, device) if shard.group else None
    model.train()
    try:
        with _StopFlag() as stop:
            for batch in loader:
                s = int(batch["step"])
                for path, reason in batch["skipped"]:
                    if path not in reported:
                        reported.add(path)
                        _echo(f"skipped {path}: {reason}", progress and main)
                wav = batch["wav"].to(device, non_blocking=True)
                res = training_step(model, teacher, cqt, opt, sched, wav, s, cfg, preset, frames, rank=rank,
                                    world=world, ddp=ddp, stop=stop.set)
                if res["skipped_update"]:
                    bad_steps += 1
                    if bad_steps >= 10:
                        raise PretrainError(f"{out}: 10 consecutive non-finite losses; lower --lr or check the audio")
                    if main:
                        _echo(f"step {s + 1}: non-finite loss, update skipped", progress)
                else:
                    bad_steps = 0
                step = s + 1
                metrics = {k: float(v) for k, v in res.items() if k not in ("skipped_update", "stop")}
                summary["metrics"] = metrics
                if log_f is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                    _log_line(log_f, out / LOG, {"step": step, **{k: round(v, 6) for k, v in metrics.items()}})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.3f}", ce=f"{metrics['ce']:.3f}", cqt=f"{metrics['cqt']:.3f}",
                                    acc=f"{metrics['accuracy']:.3f}", refresh=False)
                if step % cfg.save_every == 0 or step == cfg.steps:
                    save()
                if on_step is not None:
                    on_step(step, metrics)
                # under torchrun a Ctrl-C of any rank stops all ranks after the same (next) step
                if res["stop"] if shard.group else stop.set:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        save()
        if main:
            _echo(f"interrupted: checkpoint at step {step} saved in {ckpt_path}; rerun the same command to resume",
                  progress)
        raise
    finally:
        if log_f is not None:
            with contextlib.suppress(OSError):  # a line that could not be written is not retried here
                log_f.close()
        if bar is not None:
            bar.close()
    shard.barrier()  # the final checkpoint exists before any rank returns
    elapsed = time.perf_counter() - t0
    summary.update(step=step, steps_per_s=(step - s0) / elapsed if elapsed > 0 else math.nan, done=step >= cfg.steps)
    return summary
