"""Fine-tuning cost: seconds per optimiser step and peak memory of ``marble finetune`` for each method (head, lora,
full) on a tiny MERT and a MERT-v1-95M-shaped random model (or the 330M shape), through the real training step
(:func:`marble.finetune.trainer._step`: forward of the crops, the card's loss, backward, clipped AdamW) on
synthetic crops; the GTZAN card's head (MLP 512 on the weighted sum of the states).

Each (model, method) runs in its own process, so that the peak memory (CUDA allocator peak, else the process's
max RSS) is its own.

    python bench/finetune.py                                     # tiny + 95m, head/lora/full, CPU, a few steps
    python bench/finetune.py --models 95m --methods lora --steps 3
    python bench/finetune.py --models 95m,330m --device cuda --batch-size 8 --crop-seconds 10 --steps 20
    python bench/finetune.py --models 330m --device cuda --gradient-checkpointing --batch-size 8 --crop-seconds 10
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

def encoder_of(model: str):
    """A random MERT-shaped marble encoder of a pretraining preset: ``tiny``, ``95m`` or ``330m`` (PROTOCOL §7)."""
    from transformers import HubertModel

    from marble.encoders.mert import MERTEncoder

    from marble.pretrain.config import get_preset

    torch.manual_seed(0)
    preset = get_preset(model)
    return MERTEncoder(HubertModel(preset.hubert_config("sdpa")).eval(), name=f"random-{model}",
                       sample_rate=preset.sample_rate, normalize=preset.normalize)


def one(args) -> dict:
    """Time ``args.steps`` steps of one (model, method) after ``args.warmup`` untimed ones."""
    from marble.finetune.config import resolve
    from marble.finetune.model import TunedModel
    from marble.finetune.trainer import RowContext, _step
    from marble.registry import get_card

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    card = get_card("gtzan")
    cfg = resolve(args.method, overrides={"batch_size": args.batch_size,
                                          "gradient_checkpointing": args.gradient_checkpointing or None})
    enc = encoder_of(args.model).to(device)
    model = TunedModel(enc, card, cfg, seed=0).to(device).train()
    lr = cfg.learning_rates[0]
    opt = torch.optim.AdamW(model.param_groups(cfg, lr), lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ctx = RowContext(card=card, cfg=cfg, data=SimpleNamespace(effective_batch=args.batch_size), evaluator=None,
                     run_dir=Path("."), device=device, shard=SimpleNamespace(world=1, rank=0, group=False), seed=0,
                     fingerprint="")
    n = int(round(args.crop_seconds * 24000))
    rng = np.random.default_rng(0)
    micro = [[(rng.standard_normal(n).astype(np.float32), np.int64(i % card.num_outputs)) for i in range(args.batch_size)]]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu = [], []
    for s in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        m = _step(model, model, opt, sched, micro, s, ctx, False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    timed, timed_cpu = times[args.warmup:], cpu[args.warmup:]
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    counts = model.counts()
    return {"model": args.model, "method": args.method, "device": str(device), "batch": args.batch_size,
            "crop_seconds": args.crop_seconds, "gradient_checkpointing": args.gradient_checkpointing,
            "steps": args.steps, "s_per_step": float(np.median(timed)), "cpu_s_per_step": float(np.median(timed_cpu)),
            "peak_gb": round(peak, 3), "peak_kind": "CUDA allocated" if device.type == "cuda" else "max RSS",
            "trainable": counts["trainable_parameters"], "total": counts["total_parameters"], "last_loss": m["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,95m", help="tiny, 95m, 330m (comma-separated)")
    ap.add_argument("--methods", default="head,lora,full")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--crop-seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after --warmup untimed ones)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        args.model, args.method = args.one
        print(json.dumps(one(args)))
        return
    rows = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--one", model, method, "--device", args.device, "--batch-size",
                   str(args.batch_size), "--crop-seconds", str(args.crop_seconds), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)] + (["--threads", str(args.threads)] if args.threads else []) \
                + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print(p.stderr, file=sys.stderr)
                raise SystemExit(f"{model}/{method} failed")
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['model']:>5} {r['method']:>4} {r['device']}: batch {r['batch']} x {r['crop_seconds']:g} s, "
                  f"{r['s_per_step']:.3f} s/step (CPU {r['cpu_s_per_step']:.3f} s), peak {r['peak_gb']:.2f} GB "
                  f"({r['peak_kind']}), {r['trainable']:,} of {r['total']:,} parameters trained", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
