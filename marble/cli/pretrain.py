"""``marble pretrain run|export``: MERT-style self-supervised pretraining, and export for ``marble extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

EPILOG = (
    "Examples:\n\n"
    "  marble pretrain run --audio-dir ~/music --out runs/mert95 --preset 95m --device cuda\n\n"
    "  marble pretrain run --audio-dir ~/music --out runs/mert95 --teacher ~/models/encodec_24khz  (offline)\n\n"
    "  torchrun --nproc-per-node 8 -m marble pretrain run --audio-dir ~/music --out runs/mert95 --batch-size 8 --accumulate 4\n\n"
    "  marble pretrain export runs/mert95 models/my-mert\n\n"
    "  marble extract --model models/my-mert --task gtzan\n\n"
    "A stopped run (Ctrl-C, kill) resumes from its last checkpoint: rerun the same command. Under torchrun every "
    "process takes its share of each step's crops and the gradients are summed over processes (gloo on CPU, nccl "
    "on CUDA); the effective batch is --batch-size x --accumulate x processes, and a resume must keep that product."
)


def register(app: typer.Typer) -> None:
    pre = typer.Typer(help="Pretrain a MERT-style encoder (MERT-v1 recipe) and export it for `marble extract`.",
                      no_args_is_help=True, epilog=("Examples:\n\n" "  marble pretrain run --audio-dir ~/music --out runs/mert95 --preset 95m --device cuda\n\n" "  marble pretrain export runs/mert95 models/my-mert\n\n" "  marble extract --model models/my-mert --task gtzan\n\n"))

    @pre.command("run", epilog=EPILOG)
    def run_cmd(
        audio_dir: Path = typer.Option(..., "--audio-dir", help="Folder of training audio (searched recursively; wav, flac, mp3, ogg, ...)."),
        out: Path = typer.Option(..., "--out", help="Run folder: checkpoint.pt, run.json, log.jsonl. An existing run there is resumed."),
        preset: str = typer.Option("95m", "--preset", help="Model size: tiny | tiny-preln (tests) | 95m (MERT-v1-95M) | 330m (MERT-v1-330M)."),
        steps: int = typer.Option(400_000, "--steps", help="Total optimisation steps; the LR decays linearly to 0 at this step."),
        warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="Linear warm-up steps (default: 8% of --steps, i.e. 32k of 400k)."),
        batch_size: int = typer.Option(16, "--batch-size", help="Crops per micro-batch and process (effective batch: --batch-size x --accumulate x processes)."),
        accumulate: int = typer.Option(1, "--accumulate", help="Gradient accumulation: micro-batches of --batch-size crops summed into each optimiser step."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: the preset's, 5e-4 for 95m, 1.5e-3 for 330m)."),
        crop_seconds: float = typer.Option(5.0, "--crop-seconds", help="Length of the random training crops; shorter files are skipped."),
        teacher: str = typer.Option("facebook/encodec_24khz", "--teacher", help="EnCodec teacher: hub id, or a local folder (config.json + weights) when offline."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N (bf16 autocast on CUDA)."),
        save_every: int = typer.Option(1000, "--save-every", help="Write the resumable checkpoint every N steps (also at the end and on Ctrl-C)."),
        log_every: int = typer.Option(10, "--log-every", help="Append the loss components to log.jsonl every N steps."),
        seed: int = typer.Option(0, "--seed", help="Seed of every random choice (crops, mixup, masks, init, dropout)."),
        num_workers: int = typer.Option(2, "--num-workers", help="DataLoader workers decoding and resampling audio."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Train (or resume) a MERT-style model on a folder of audio."""
        from marble.pretrain.trainer import TrainConfig, train

        cfg = TrainConfig(audio_dir=str(audio_dir), out_dir=str(out), preset=preset, steps=steps, warmup_steps=warmup_steps,
                          batch_size=batch_size, accumulate=accumulate, lr=lr, crop_seconds=crop_seconds, teacher=teacher, device=device,
                          save_every=save_every, log_every=log_every, seed=seed, num_workers=num_workers)
        try:
            summary = train(cfg, progress=not quiet)
        except KeyboardInterrupt:
            typer.echo("\ninterrupted: the checkpoint is saved; rerun the same command to resume", err=True)
            raise typer.Exit(130)
        m = summary.get("metrics") or {}
        line = f"step {summary['step']}/{steps}"
        if m:
            line += f", loss {m['loss']:.4f} (ce {m['ce']:.4f}, cqt {m['cqt']:.4f}), accuracy {m['accuracy']:.3f}"
        if summary.get("rank", 0) == 0:
            typer.echo(line)
            typer.echo(summary["checkpoint"])

    @pre.command("export", epilog=("Examples:\n\n" "  marble pretrain export runs/mert95 models/my-mert\n\n" "  marble run --model models/my-mert --tasks all\n\n"))
    def export_cmd(
        checkpoint: Path = typer.Argument(..., help="A `marble pretrain run` --out folder, or its checkpoint.pt."),
        out_dir: Path = typer.Argument(..., help="Folder to write config.json, model.safetensors and preprocessor_config.json to."),
    ) -> None:
        """Write the backbone as a MERT checkpoint folder that `marble extract --model OUT_DIR` loads."""
        from marble.pretrain.export import export_checkpoint

        typer.echo(str(export_checkpoint(checkpoint, out_dir)))

    app.add_typer(pre, name="pretrain")
