"""Pretraining throughput: optimisation steps per second and peak memory of ``marble pretrain`` for one
preset on one device, through the real training step (EnCodec teacher, CQT, mixup, span mask, forward /
backward, clipped AdamW) on synthetic crops. The EnCodec teacher is randomly initialised with the
architecture of ``facebook/encodec_24khz`` (same cost, no download) unless ``--teacher`` names a checkpoint.

    python bench/pretrain.py --preset tiny
    python bench/pretrain.py --preset 95m --steps 3 --batch-size 2
    python bench/pretrain.py --preset 330m --device cuda --batch-size 16 --steps 20
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marble.pretrain.config import get_preset  # noqa: E402
from marble.pretrain.model import MERTPretrainModel  # noqa: E402
from marble.pretrain.teachers import CQT, EncodecTeacher  # noqa: E402
from marble.pretrain.trainer import TrainConfig, build_optimizer, training_step  # noqa: E402


def random_encodec(directory: Path) -> Path:
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig())  # the defaults are encodec_24khz's architecture
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
    model.save_pretrained(str(directory))
    return directory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--crop-seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup untimed ones)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--teacher", default=None, help="EnCodec checkpoint (default: random encodec_24khz architecture)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    preset = get_preset(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = args.teacher or str(random_encodec(Path(tmp) / "encodec"))
        teacher = EncodecTeacher(teacher_dir, device=device)
    torch.manual_seed(0)
    model = MERTPretrainModel(preset).to(device).train()
    cqt = CQT().to(device)
    cfg = TrainConfig(audio_dir="-", out_dir="-", preset=args.preset, steps=10**6, batch_size=args.batch_size,
                      crop_seconds=args.crop_seconds)
    opt, sched = build_optimizer(model, cfg, preset)
    crop = int(round(args.crop_seconds * preset.sample_rate))
    frames = model.num_frames(crop)
    wav = (torch.randn(args.batch_size, crop, generator=torch.Generator().manual_seed(0)) * 0.1).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for s in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        m = training_step(model, teacher, cqt, opt, sched, wav, s, cfg, preset, frames)
        float(m["loss"])  # waits for the step
        times.append(time.perf_counter() - t0)
    timed = times[args.warmup:]
    sps = len(timed) / sum(timed)
    out = {"preset": args.preset, "device": str(device), "batch_size": args.batch_size, "crop_seconds": args.crop_seconds,
           "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "steps_timed": len(timed),
           "steps_per_s": round(sps, 4), "audio_seconds_per_s": round(sps * args.batch_size * args.crop_seconds, 2),
           "threads": torch.get_num_threads(), "last_loss": round(float(m["loss"]), 4),
           "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_cuda_MB"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
