"""``marble pretrain run|export|teacher fit``: MERT-style self-supervised pretraining, k-means teachers, and
export for ``marble extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

EPILOG = (
    "Examples:\n\n"
    "  marble pretrain run --audio-dir ~/music --out runs/mert95 --preset 95m --device cuda\n\n"
    "  marble pretrain run --audio-dir ~/music --out runs/mert95 --teacher ~/models/encodec_24khz  (offline)\n\n"
    "  marble pretrain teacher fit --audio-dir ~/music --out teachers/mel-chroma.safetensors\n\n"
    "  marble pretrain run --audio-dir ~/music --out runs/it1 --teacher kmeans:teachers/mel-chroma.safetensors  (no weights)\n\n"
    "  marble pretrain run --audio-dir ~/music --out runs/it2 --teacher kmeans:teachers/it2.safetensors --teacher-encoder models/it1\n\n"
    "  torchrun --nproc-per-node 8 -m marble pretrain run --audio-dir ~/music --out runs/mert95 --batch-size 8 --accumulate 4\n\n"
    "  marble pretrain export runs/mert95 models/my-mert\n\n"
    "  marble extract --model models/my-mert --task gtzan\n\n"
    "A stopped run (Ctrl-C, kill) resumes from its last checkpoint: rerun the same command. Under torchrun every "
    "process takes its share of each step's crops and the gradients are summed over processes (gloo on CPU, nccl "
    "on CUDA); the effective batch is --batch-size x --accumulate x processes, and a resume must keep that product."
)

TEACHER_EPILOG = (
    "Examples:\n\n"
    "  marble pretrain teacher fit --audio-dir ~/music --out teachers/it1.safetensors  (log-mel 300 + chroma 200)\n\n"
    "  marble pretrain teacher fit --audio-dir ~/music --out teachers/mfcc.safetensors --features mfcc --clusters 100\n\n"
    "  marble pretrain teacher fit --audio-dir ~/music --out teachers/it2.safetensors --features models/it1:6 --clusters 500\n\n"
    "The artefact holds only arrays and a JSON description with its sha256; `pretrain run` refuses it if the hash, "
    "the feature definition (or the checkpoint's weights) or the sample/frame rate do not match. A teacher of hidden "
    "states (--features CKPT:L) is used with `pretrain run --teacher-encoder CKPT`: the checkpoint is always named by "
    "you, never loaded from the name the file records."
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
        teacher: str = typer.Option("facebook/encodec_24khz", "--teacher", help="Acoustic teacher: kmeans:PATH (a `marble pretrain teacher fit` artefact), or EnCodec: hub id, or a local folder (config.json + weights) when offline."),
        teacher_encoder: Optional[str] = typer.Option(None, "--teacher-encoder", help="For a k-means teacher of hidden states (fitted with --features CKPT:L): the checkpoint CKPT, named by you. It must be the one the teacher was fitted on (weights hash); marble never loads a model a teacher file names."),
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
                          batch_size=batch_size, accumulate=accumulate, lr=lr, crop_seconds=crop_seconds, teacher=teacher, teacher_encoder=teacher_encoder, device=device,
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

    teacher_app = typer.Typer(help="Weight-free k-means teachers (MERT-v0 / HuBERT iteration 1 and 2).",
                              no_args_is_help=True, epilog=TEACHER_EPILOG)

    @teacher_app.command("fit", epilog=TEACHER_EPILOG)
    def teacher_fit_cmd(
        audio_dir: Path = typer.Option(..., "--audio-dir", help="Folder of audio to sample crops from (searched recursively)."),
        out: Path = typer.Option(..., "--out", help="Teacher artefact to write (.safetensors: centroids + JSON description + hash)."),
        features: str = typer.Option("logmel,chroma", "--features", help="Built-in frame features (logmel, chroma, mfcc; comma-separated, one codebook each) or CHECKPOINT:LAYER (hidden states of a `marble pretrain export` folder)."),
        clusters: Optional[str] = typer.Option(None, "--clusters", help="Clusters per codebook, comma-separated (default: logmel 300, chroma 200, mfcc 100, hidden states 500)."),
        crops: int = typer.Option(512, "--crops", help="Random crops to fit on."),
        crop_seconds: float = typer.Option(5.0, "--crop-seconds", help="Length of each crop; shorter files are skipped."),
        max_frames: int = typer.Option(200_000, "--max-frames", help="At most this many frames (a random subset) per codebook fit."),
        seed: int = typer.Option(0, "--seed", help="Seed of the crops, the frame subset and k-means."),
        device: str = typer.Option("cpu", "--device", help="Device of the feature computation."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Fit k-means codebooks on frame features of a sample of audio; use with `pretrain run --teacher kmeans:OUT`."""
        from marble.pretrain import PretrainError
        from marble.pretrain.teachers.kmeans import fit_teacher, parse_features

        parse_features(features)  # a bad --features fails before any work
        try:
            ks = [int(k) for k in clusters.split(",")] if clusters else None
        except ValueError:
            raise PretrainError(f"--clusters {clusters!r}: expected integers, comma-separated (e.g. 300,200)") from None
        from marble.progress import Stage

        stage: Stage | None = None  # opened on the first report, when the number of batches is known

        def progress(done: int, total: int) -> None:
            nonlocal stage
            if quiet:
                return
            if stage is None:
                stage = Stage("teacher features", total=total, unit="batch").__enter__()
            stage.update(done - stage.done)

        try:
            res = fit_teacher(audio_dir, out, features=features, clusters=ks, crops=crops, crop_seconds=crop_seconds,
                              max_frames=max_frames, seed=seed, device=device, progress=progress)
        finally:
            if stage is not None:
                stage.close()
        for p in res["skipped_files"]:
            typer.echo(f"skipped {p}", err=True)
        books = ", ".join(f"{cb['name']} {cb['size']} ({cb['frames']} frames)" for cb in res["codebooks"])
        typer.echo(f"{res['path']}  sha256 {res['sha256']}  codebooks: {books}")

    pre.add_typer(teacher_app, name="teacher")
    app.add_typer(pre, name="pretrain")
