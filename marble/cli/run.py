"""``marble run``: the whole benchmark for one model (extract + probe every task, one encoder load, resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marble.cli import options

EPILOG = (
    "Examples:\n\n"
    "  marble run --model m-a-p/MERT-v1-95M --tasks all --data-dir ~/data --device cuda\n\n"
    "  marble run --model ./models/my-mert --tasks gtzan,emo,nsynth-pitch\n\n"
    "  marble run --model my_enc.py:MyEncoder --tasks all --strict      (stop if any task's data is missing)\n\n"
    "  marble run --model handcrafted --tasks gtzan --max-epochs 5 --lrs 1e-3   (a quick, reduced look)\n\n"
    "  marble run --model m-a-p/MERT-v1-95M --tasks all --device cuda --plan     (what it will cost; no work)\n\n"
    "Rerun the same command to resume: finished results are kept, complete caches are probed without "
    "loading the encoder, interrupted extractions and sweeps continue where they stopped."
)


def register(app: typer.Typer) -> None:
    app.command("run", epilog=EPILOG)(run)


def run(
    model: str = typer.Option(..., "--model", "-m", help="Encoder: hub id, checkpoint folder, file.py:Class or entry point."),
    tasks: str = typer.Option("all", "--tasks", "--task", "-t", help="all (the 14 built-in tasks) or ids separated "
                              "by commas (gtzan,emo); user tasks by id with --tasks-dir."),
    track: str = typer.Option("constrained", "--track", help="constrained | semi-constrained (needs --config)"),
    strict: bool = typer.Option(False, "--strict", help="Fail before any work if a task's data is missing "
                                "(default: report and skip it)."),
    name: Optional[str] = typer.Option(None, "--name", help="The model's name in results and the leaderboard "
                                       "(default: the encoder's name)."),
    data_dir: Optional[Path] = options.data_dir(),
    cache_dir: Optional[Path] = options.cache_dir(),
    results_dir: Optional[Path] = options.results_dir(),
    tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra folder of user task cards (also $MARBLE_TASKS_DIR)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Semi-constrained head/grid TOML (docs/tracks.md)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N"),
    batch_size: int = typer.Option(8, "--batch-size", help="Extraction: windows per encoder batch."),
    num_workers: int = typer.Option(2, "--num-workers", help="Extraction: audio decoding workers."),
    dtype: str = typer.Option("auto", "--dtype", help="Extraction compute dtype: auto (= fp32, the protocol) | fp32 | bf16 | fp16 (bf16/fp16: flagged deviation)."),
    tf32: bool = typer.Option(False, "--tf32", help="Extraction: allow TF32 matmuls (a speed option, recorded and flagged as a deviation)."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Use the files present when a dataset is incomplete."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Reduced sweep: layer options, e.g. 0,6,weighted."),
    lrs: Optional[str] = typer.Option(None, "--lrs", help="Reduced sweep: a subset of the LR grid, e.g. 1e-3."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Reduced sweep: epoch cap."),
    seed: int = typer.Option(1234, "--seed"),
    seeds: int = typer.Option(1, "--seeds", help="Repeat each task's selected config with N seeds; report mean, std, "
                              "95% CI."),
    seeds_sweep: bool = typer.Option(False, "--seeds-sweep", help="With --seeds: repeat the whole sweep per seed."),
    checkpoint_every: int = typer.Option(5, "--checkpoint-every", help="Save each sweep's resumable state every K "
                                         "epochs (a write waits while writing would take over a tenth of the sweep)."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard saved sweep states instead of resuming them "
                               "(finished results are still kept)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-split lines (stage lines still print)."),
    plan: bool = typer.Option(False, "--plan", help="Print per task the files, audio hours, cache disk and estimated "
                              "extraction and probing time on --device (from measured per-unit costs), then exit "
                              "without any work."),
    threads: Optional[int] = options.threads(),
) -> None:
    """Extract and probe every task for one model, then print its leaderboard rows."""
    if plan:
        from marble.plan import make_plan, render

        typer.echo(render(make_plan(model, tasks, data_dir=data_dir, cache_dir=cache_dir, tasks_dir=tasks_dir, device=device,
                                    allow_partial=allow_partial, layers=layers, lrs=lrs, max_epochs=max_epochs,
                                    dtype=dtype, batch_size=batch_size, num_workers=num_workers)), nl=False)
        return
    from marble.benchmark import run_benchmark
    from marble.devices import set_threads

    set_threads(threads)

    report = run_benchmark(model, tasks, track=track, name=name, data_dir=data_dir, cache_dir=cache_dir,
                           results_dir=results_dir, tasks_dir=tasks_dir, config=config, device=device, strict=strict,
                           allow_partial=allow_partial, layers=layers, lrs=lrs, max_epochs=max_epochs, seed=seed,
                           seeds=seeds, seeds_sweep=seeds_sweep, checkpoint_every=checkpoint_every, fresh=fresh,
                           batch_size=batch_size, num_workers=num_workers, dtype=dtype, tf32=tf32,
                           progress=not quiet)
    counts = {s: sum(o.status == s for o in report.outcomes) for s in ("computed", "probed", "kept", "missing")}
    typer.echo(f"{report.model}: {counts['computed']} computed, {counts['probed']} probed from cache, "
               f"{counts['kept']} kept, {counts['missing']} skipped (data missing); encoder loaded "
               f"{report.encoder_loads} time(s)", err=True)
    if report.missing:  # each task's reason was printed once, at its task's line
        typer.echo(f"data missing, skipped (reasons above): {', '.join(report.missing)}; see `marble data check TASK` "
                   "and `marble data download TASK`; --data-dir (or $MARBLE_DATA_DIR) names the folder that holds "
                   "the datasets, --allow-partial runs on the files present", err=True)
    _print_rows(report, results_dir, tasks_dir)


def _print_rows(report, results_dir, tasks_dir, terminal: bool | None = None) -> None:
    """The leaderboard rows of this model's results (every task it has a result for): a table on a terminal,
    Markdown when the output goes to a file or a pipe; one decimal either way, as the MARBLE tables."""
    import sys

    from marble import settings
    from marble.leaderboard import build, render

    files = [o.result_path for o in report.outcomes if o.result_path is not None]
    if not files:
        return
    lb = build(settings.results_dir(results_dir), track=report.track, reported=False, tasks_dir=tasks_dir, files=files)
    if sys.stdout.isatty() if terminal is None else terminal:
        from rich.console import Console

        from marble.leaderboard.render import to_rich

        console = Console()
        console.print(to_rich(lb, width=console.width))
    else:
        typer.echo(render(lb, "markdown", digits=1), nl=False)
