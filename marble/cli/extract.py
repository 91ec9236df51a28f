"""``marble extract``: build (or resume) the layer-wise feature cache of one model on one task."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marble import settings
from marble.cli import options

EPILOG = (
    "Examples:\n\n"
    "  marble extract --model m-a-p/MERT-v1-95M --task gtzan --data-dir ~/data\n\n"
    "  marble extract --model ./models/my-mert --tasks gtzan,emo,mtt    (one encoder load for all three)\n\n"
    "  marble extract --model m-a-p/MERT-v1-95M --task gtzan-beat --states 0,6,12 --device cuda\n\n"
    "  torchrun --nproc-per-node 4 -m marble extract --model m-a-p/MERT-v1-330M --task mtt\n\n"
    "A killed run resumes where it stopped: rerun the same command. A cache made with another encoder, "
    "task version or format is never reused (--overwrite replaces it)."
)


def register(app: typer.Typer) -> None:
    @app.command("extract", epilog=EPILOG)
    def extract_cmd(
        model: str = typer.Option(..., "--model", "-m", help="Encoder: hub id, local checkpoint dir, file.py:Class or entry point name (any spelling of one model "
                              "shares one cache)."),
        task: str = typer.Option(..., "--task", "--tasks", "-t", help="Task id (see `marble tasks`), a path to a task card "
                                 ".toml, several separated by commas (gtzan,emo), or all (the 14 built-in tasks)."),
        data_dir: Optional[Path] = options.data_dir(),
        cache_dir: Optional[Path] = options.cache_dir(),
        splits: str = typer.Option("train,valid,test", "--splits", help="Comma-separated splits to extract."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        batch_size: int = typer.Option(8, "--batch-size", help="Windows per encoder batch (windows of equal length only)."),
        num_workers: int = typer.Option(2, "--num-workers", help="DataLoader workers decoding and resampling audio."),
        dtype: str = typer.Option("fp32", "--dtype", help="Compute dtype: fp32 (the protocol: matmuls in full fp32) | bf16 | fp16 (faster autocast, recorded in the manifest and flagged as a deviation by 'leaderboard check --submission'); auto = fp32."),
        tf32: bool = typer.Option(False, "--tf32", help="Allow TF32 matmuls (faster on NVIDIA GPUs; a speed option like --dtype bf16: recorded in the manifest and flagged as a deviation by 'leaderboard check --submission')."),
        states: str = typer.Option("all", "--states", help="Frame tasks: hidden states to keep, e.g. 0,6,12, or all."),
        unit_size: int = typer.Option(32, "--unit-size", help="Files per committed (resumable) unit."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing cache that does not match."),
        allow_partial: bool = typer.Option(False, "--allow-partial", help="Extract the files present when a dataset is incomplete."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra folder of user task cards."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        threads: Optional[int] = options.threads(),
    ) -> None:
        """Extract the time-mean (clip tasks) or frame features (frame tasks) of every hidden state, for one or
        more tasks with one encoder load."""
        from marble.cache.extract import CacheMismatchError, extract
        from marble.devices import resolve_device, set_threads
        from marble.registry import CardError, UnknownTaskError

        resolve_device(device)  # a bad --device fails before any data is read
        set_threads(threads)

        from marble.registry import select_cards

        try:
            cards = select_cards(task, tasks_dir)
        except (CardError, UnknownTaskError) as e:
            raise typer.BadParameter(str(e), param_hint="--task") from None
        from marble.preflight import check_model

        check_model(model)  # a typo fails before the data checks
        try:
            from marble.encoders import load_encoder
        except ImportError as e:
            typer.echo(f"error: the encoders package is not available ({e})", err=True)
            raise typer.Exit(2)
        try:
            from marble.datasets import split_items
        except ImportError as e:
            typer.echo(f"error: the datasets package is not available ({e})", err=True)
            raise typer.Exit(2)
        from marble.datasets.base import DataNotFoundError

        wanted = [s.strip() for s in splits.split(",") if s.strip()]
        plans = []
        for card in cards:  # every task's data is checked before the encoder is loaded
            unknown = [s for s in wanted if s not in card.splits.names]
            if unknown:
                raise typer.BadParameter(f"{unknown} not among the splits of {card.id}: {card.splits.names}", param_hint="--splits")
            try:
                plans.append((card, *split_items(card, data_dir, wanted, allow_partial=allow_partial)))
            except DataNotFoundError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2)
        from marble import needs

        needs.check([p[0] for p in plans], {p[0].id: p[1] for p in plans}, metrics=False)  # decoders (MUSDB stems)
        encoder = load_encoder(model)
        root = settings.cache_dir(cache_dir)
        from marble.errors import Interrupted
        from marble.preflight import cache_notice

        notice = cache_notice(cache_dir, model)
        if notice:
            typer.echo(f"[marble extract] {notice}", err=True)
        for done, (card, items, listed) in enumerate(plans):
            try:
                out = extract(card, encoder, items, root, splits=wanted, device=device, batch_size=batch_size,
                              num_workers=num_workers, dtype=dtype, tf32=tf32, states=states, overwrite=overwrite,
                              unit_size=unit_size, progress=not quiet, listed=listed)
            except CacheMismatchError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(3)
            except KeyboardInterrupt:
                raise Interrupted(done, len(plans), "tasks", f"{card.id}'s finished units are kept") from None
            typer.echo(str(out))
