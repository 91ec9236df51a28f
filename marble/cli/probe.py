"""``marble probe``: train every (layer, LR) probe of a task on cached features and write the result."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marble import settings
from marble.cli import options


EPILOG = (
    "Examples:\n\n"
    "  marble probe --model m-a-p/MERT-v1-95M --task gtzan\n\n"
    "  marble probe --model ./models/my-mert --tasks gtzan,emo,mtt --device cuda\n\n"
    "  marble probe --model my_enc.py:MyEncoder --task gtzan --layers 0,6,weighted --lrs 1e-3 --max-epochs 5\n\n"
    "  marble probe --model m-a-p/MERT-v1-95M --task gtzan --track semi-constrained --config head.toml\n\n"
    "The cache is found under any spelling of the model given to `marble extract`. A killed sweep resumes from "
    "its saved state (--fresh starts over). Semi-constrained --config format: docs/tracks.md."
)


def register(app: typer.Typer) -> None:
    app.command("probe", epilog=EPILOG)(probe)


def probe(
    model: str = typer.Option(..., "--model", help="The model given to `marble extract`, in any spelling (hub id, "
                              "checkpoint folder, file.py:Class, entry point): all find the same cache."),
    name: Optional[str] = typer.Option(None, "--name", help="The model's name in the result and the leaderboard "
                                       "(default: the encoder's name recorded at extraction, e.g. the hub id or "
                                       "the checkpoint folder's name); results go to <results-dir>/<name>/<task>/."),
    task: str = typer.Option(..., "--task", "--tasks", "-t", help="Task id (see `marble tasks`), a path to a task card "
                             ".toml, several separated by commas (gtzan,emo), or all (the 14 built-in tasks)."),
    track: str = typer.Option("constrained", "--track", help="constrained | semi-constrained (needs --config)"),
    cache_dir: Optional[Path] = options.cache_dir(),
    results_dir: Optional[Path] = options.results_dir("Where result JSONs are written (default ./results)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N"),
    seed: int = typer.Option(1234, "--seed"),
    seeds: int = typer.Option(1, "--seeds", help="Repeat the selected config with N seeds; report mean, std, 95% CI."),
    seeds_sweep: bool = typer.Option(False, "--seeds-sweep", help="With --seeds: repeat the whole sweep per seed."),
    config: Optional[Path] = typer.Option(None, "--config", help="Semi-constrained head/grid TOML (format: docs/tracks.md)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Subset of layer options, e.g. 0,3,weighted (recorded)."),
    lrs: Optional[str] = typer.Option(None, "--lrs", help="Subset of the card's learning-rate grid, e.g. 1e-3,5e-3 "
                                      "(recorded; like --layers and --max-epochs it makes a quick, reduced run "
                                      "that the leaderboard marks as not comparable)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Override the card's epoch cap (recorded)."),
    checkpoint_every: int = typer.Option(5, "--checkpoint-every", help="Save the resumable sweep state every K epochs."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard a saved sweep state instead of resuming it."),
    tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra directory of task cards."),
    top: int = typer.Option(10, "--top", help="Rows of the final table."),
    chunks_per_epoch: Optional[int] = typer.Option(None, "--chunks-per-epoch", help="musdb: random training chunks "
                                                   "per epoch (card: 64 per training track); fewer makes a quick, "
                                                   "reduced run (recorded)."),
    data_dir: Optional[Path] = options.data_dir("Frame-level tasks: dataset root, for the targets (default ./data)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip re-hashing the cached features against the "
                                   "sha256 that extract recorded (for huge caches); recorded in the result, which "
                                   "`leaderboard check --submission` then refuses."),
    threads: Optional[int] = options.threads(),
) -> None:
    """Probe a frozen encoder's cached features on one or more tasks (all layers x learning rates at once)."""
    from rich.console import Console

    from marble.devices import resolve_device, set_threads
    from marble.probe.config import check_track
    from marble.registry import select_cards

    console = Console()
    check_track(track, config)
    device = str(resolve_device(device))
    set_threads(threads)
    cache_dir, results_dir, data_dir = settings.cache_dir(cache_dir), settings.results_dir(results_dir), settings.data_dir(data_dir)
    cards = select_cards(task, tasks_dir)
    _refuse_unsupported_options(cards, seeds=seeds, seeds_sweep=seeds_sweep, config=config,
                                checkpoint_every=checkpoint_every, fresh=fresh, track=track)
    for card in cards:
        _probe_one(console, card, model=model, name=name, track=track, cache_dir=cache_dir, results_dir=results_dir,
                   device=device, seed=seed, seeds=seeds, seeds_sweep=seeds_sweep, config=config, layers=layers,
                   lrs=lrs, max_epochs=max_epochs, checkpoint_every=checkpoint_every, fresh=fresh, top=top,
                   data_dir=data_dir, chunks_per_epoch=chunks_per_epoch, verify=not no_verify)


def _refuse_unsupported_options(cards, **given) -> None:
    from marble.probe.sequence import refused_options

    why = refused_options(cards, **given)
    if why:
        raise typer.BadParameter(why)


def _probe_one(console, card, *, model, name, track, cache_dir, results_dir, device, seed, seeds, seeds_sweep, config,
               layers, lrs, max_epochs, checkpoint_every, fresh, top, data_dir, chunks_per_epoch=None,
               verify=True) -> None:
    from marble.probe.config import ConfigError, parse_layers, parse_lrs

    try:
        layer_spec = parse_layers(layers)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--layers") from None
    if lrs is not None and config is not None:
        raise typer.BadParameter("the semi-constrained grid comes from training.learning_rates in --config",
                                 param_hint="--lrs")
    try:
        lr_spec = parse_lrs(lrs, card.training.learning_rates)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--lrs") from None

    from marble.probe.run import run_probe
    from marble.progress import SweepProgress

    if chunks_per_epoch is not None and card.prediction != "separation":
        raise typer.BadParameter(f"applies to separation tasks only, not {card.id}", param_hint="--chunks-per-epoch")
    with SweepProgress(f"{card.id} {track} sweep", max_epochs or card.training.max_epochs) as on_epoch:
        result = run_probe(card, model, cache_dir=cache_dir, results_dir=results_dir, track=track, device=device,
                           seed=seed, layers=layer_spec, lrs=lr_spec, name=name, max_epochs=max_epochs,
                           data_dir=data_dir, on_epoch=on_epoch, seeds=seeds, seeds_sweep=seeds_sweep, config=config,
                           checkpoint_every=checkpoint_every, fresh=fresh, chunks_per_epoch=chunks_per_epoch,
                           verify=verify)
    _print_table(console, result, top)


def _print_table(console, result: dict, top: int) -> None:
    from rich.table import Table

    from marble.results.accounting import coverage

    for line in coverage(result):  # a score on part of a split says so first
        console.print(f"{result['task']} {line}", style="yellow", markup=False, highlight=False)
    main, direction = result["main_metric"], result["direction"]
    rows = sorted(result["sweep"], key=lambda r: (r["valid"].get(main) is None,
                                                  -(r["valid"].get(main) or 0) if direction == "max" else (r["valid"].get(main) or 0)))
    names = list(result["test"])
    table = Table(title=f"{result['model']} / {result['task']} / {result['track']}: top {min(top, len(rows))} of {len(rows)} configs")
    for col in ["layer", "lr", f"valid {main}", *[f"test {n}" for n in names], "best ep", "epochs", "stopped"]:
        table.add_column(col, justify="right")
    from marble.results.selection import choices, describe, is_row

    sel = result["selected"]
    chosen = choices(result)
    for r in rows[:top]:
        mark = "".join("*" if k is None else f"*{k}" for k, c in chosen.items() if is_row(c, r))
        fmt = lambda v: "nan" if v is None else f"{v:.4f}"  # noqa: E731
        table.add_row(f"{r['layer']}{mark}", f"{r['lr']:g}", fmt(r["valid"].get(main)), *[fmt(r["test"].get(n)) for n in names],
                      str(r["best_epoch"]), str(r["epochs"]), r["stopped"])
    console.print(table)
    rule = f", song rule {sel['group_rule']}" if sel.get("group_rule") else ""
    console.print(f"selected {describe(result)}{rule}: test " +
                  ", ".join(f"{k} {v:.4f}" for k, v in result["test"].items() if v is not None))
    if result.get("seeds"):
        s = result["seeds"]
        console.print(f"{s['n']} seeds: {s['metric']} {s['mean']:.4f} ± {s['std']:.4f} (95% CI {s['ci95'][0]:.4f}..{s['ci95'][1]:.4f})")
