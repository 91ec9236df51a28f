"""``marble probe``: train every (layer, LR) probe of a task on cached features and write the result."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marble import settings
from marble.cli import options
from marble.errors import MarbleError


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
    checkpoint_every: int = typer.Option(5, "--checkpoint-every", help="Save the resumable sweep state every K epochs "
                                         "(a write waits while writing would take over a tenth of the sweep)."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over: discard a saved sweep state instead of resuming "
                               "it, and recompute a result already written (an equal one is otherwise kept, a "
                               "complete one is never replaced without it)."),
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

    from marble import needs
    from marble.devices import resolve_device, set_threads
    from marble.errors import Interrupted
    from marble.preflight import check_model
    from marble.probe.config import check_track
    from marble.registry import select_cards

    console = Console()
    check_track(track, config)
    device = str(resolve_device(device))
    set_threads(threads)
    cache_dir, results_dir, data_dir = settings.cache_dir(cache_dir), settings.results_dir(results_dir), settings.data_dir(data_dir)
    cards = select_cards(task, tasks_dir)
    # every task's inputs are checked before any work: options, model, installed packages, caches or data, and
    # the results a run would replace
    layer_spec, lr_specs = _grid(cards, layers, lrs, config, chunks_per_epoch)
    check_model(model, cache_dir)
    needs.check(cards)
    jobs = [_inputs(card, model=model, name=name, track=track, cache_dir=cache_dir, results_dir=results_dir,
                    data_dir=data_dir) for card in cards]
    problems = [j.problem for j in jobs if j.problem]
    if problems:
        raise ProbeInputError("; ".join(problems) if len(problems) == 1 else
                              f"{len(problems)} of {len(jobs)} tasks cannot be probed, nothing was run: " + "; ".join(problems))
    for job in jobs:
        job.decide(layers=layer_spec, lrs=lr_specs[job.card.id], max_epochs=max_epochs, seed=seed, seeds=seeds,
                   seeds_sweep=seeds_sweep, config=config, fresh=fresh, chunks_per_epoch=chunks_per_epoch, tasks_dir=tasks_dir)
    refused = [j.refusal for j in jobs if j.refusal]
    if refused:
        raise ProbeInputError("; ".join(refused))

    finished = 0
    for job in jobs:
        try:
            if job.keep:
                say(f"[marble probe] {job.card.id}: result kept, {job.out} ({job.keep}; --fresh recomputes it)")
                finished += 1
                continue
            if job.replacing:
                say(f"[marble probe] {job.card.id}: replacing {job.out} ({job.replacing})")
            if job.resumable(fresh):
                say(f"[marble probe] {job.card.id}: resuming the sweep saved in {job.state}")
            result = _probe_one(console, job.card, model=model, name=name, track=track, cache_dir=cache_dir,
                                results_dir=results_dir, device=device, seed=seed, seeds=seeds, seeds_sweep=seeds_sweep,
                                config=config, layer_spec=layer_spec, lr_spec=lr_specs[job.card.id],
                                max_epochs=max_epochs, checkpoint_every=checkpoint_every, fresh=fresh, top=top,
                                data_dir=data_dir, chunks_per_epoch=chunks_per_epoch, verify=not no_verify)
        except KeyboardInterrupt:
            state = f"{job.card.id}'s sweep state is saved every {checkpoint_every} epochs"
            raise Interrupted(finished, len(jobs), "tasks", state) from None
        finished += 1
        say(f"[marble probe] {job.card.id}: result written to {_result_file(results_dir, result, job.card, track)}")


class ProbeInputError(MarbleError):
    """A task of ``marble probe`` cannot run (no cache, no data, a result it would replace): found before any work."""


def say(msg: str) -> None:
    from marble.progress import say as _say

    _say(msg)


def _grid(cards, layers, lrs, config, chunks_per_epoch):
    """The layer options and each task's learning rates, parsed once for all tasks before any work."""
    from marble.probe.config import ConfigError, parse_layers, parse_lrs

    try:
        layer_spec = parse_layers(layers)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--layers") from None
    if lrs is not None and config is not None:
        raise typer.BadParameter("the semi-constrained grid comes from training.learning_rates in --config",
                                 param_hint="--lrs")
    lr_specs = {}
    for card in cards:
        try:
            lr_specs[card.id] = parse_lrs(lrs, card.training.learning_rates)
        except ConfigError as e:
            raise typer.BadParameter(str(e), param_hint="--lrs") from None
        if chunks_per_epoch is not None and card.prediction != "separation":
            raise typer.BadParameter(f"applies to separation tasks only, not {card.id}", param_hint="--chunks-per-epoch")
    return layer_spec, lr_specs


def _result_file(results_dir, result: dict, card, track) -> Path:
    from marble.results import result_path

    return result_path(results_dir, result["model"], card.id, track)


class _Job:
    """One task of a ``marble probe`` command: its inputs (cache or data), where its result goes, and what to do
    with a result already there (keep an equal one, refuse to replace a complete one, say so when replacing)."""

    def __init__(self, card, *, out: Path, cache: Path | None, cache_sha: str | None, problem: str = ""):
        self.card, self.out, self.cache, self.cache_sha, self.problem = card, out, cache, cache_sha, problem
        self.keep, self.replacing, self.refusal = "", "", ""

    @property
    def state(self) -> Path:
        from marble.probe import runs

        return runs.state_files(self.out, self.out.stem)[0]

    def resumable(self, fresh: bool) -> bool:
        return not fresh and self.state.exists()  # every task's sweep keeps a state

    def decide(self, *, layers, lrs, max_epochs, seed, seeds, seeds_sweep, config, fresh, chunks_per_epoch,
               tasks_dir) -> None:
        from marble.benchmark import _existing_result, same_sweep
        from marble.results.conformance import protocol_deviations

        if not self.out.is_file():
            return
        old = _existing_result(self.out, tasks_dir)
        if old is None:
            self.replacing = "it cannot be read as a result"
            return
        equal = (same_sweep(old, self.card, layers=layers, lrs=lrs, max_epochs=max_epochs, seed=seed, config=config,
                            seeds=seeds, seeds_sweep=seeds_sweep)
                 and (old.get("training") or {}).get("chunks_per_epoch") == (chunks_per_epoch or
                                                                             (old.get("training") or {}).get("chunks_per_epoch"))
                 and (self.cache_sha is None or (old.get("manifest") or {}).get("cache_manifest_sha256") == self.cache_sha))
        deviations = protocol_deviations(old, self.card)
        if fresh:
            self.replacing = "--fresh"
        elif equal:
            self.keep = "same settings" + (" and cache" if self.cache_sha else "")
        elif not deviations:
            self.refusal = (f"{self.out}: holds a complete result of {self.card.id} that this run (other settings or "
                            "another cache) would replace; pass --name NAME to write this run beside it, or --fresh "
                            "to replace it")
        else:
            self.replacing = f"its run was reduced: {deviations[0]}"


def _inputs(card, *, model, name, track, cache_dir, results_dir, data_dir) -> _Job:
    """What ``card``'s probe reads, checked without reading features: a clip task's complete, matching cache; a
    frame task's data (its features come from the frame cache or the encoder)."""
    from marble.cache.store import MANIFEST, CacheError, check_cache_for, read_manifest
    from marble.io import file_sha256
    from marble.encoders.identity import display_name, model_cache_dir
    from marble.errors import MarbleError
    from marble.results import result_path

    directory = model_cache_dir(cache_dir, model, card.id)
    manifest = None
    problem = ""
    try:
        if directory.is_dir() and (directory / MANIFEST).is_file():
            manifest = read_manifest(directory)
        if card.is_clip_level:
            if not directory.is_dir():
                from marble.preflight import cached_spellings
                from marble.suggest import did_you_mean

                hint = "" if directory.parent.is_dir() else did_you_mean(model, cached_spellings(cache_dir))
                raise CacheError(f"{directory}: no feature cache for model {model!r} and task {card.id!r}; run "
                                 f"`marble extract --model {model} --task {card.id}` first (or pass --cache-dir).{hint}")
            check_cache_for(directory, manifest, card, model)
        else:
            from marble.datasets import get_dataset

            from marble import needs

            ds = get_dataset(card, data_dir, allow_partial=True)
            items = {s: ds.items(s) for s in card.splits.names}
            for s, found in items.items():
                if not found:
                    raise MarbleError(f"task {card.id}: split {s!r} has no files under {ds.root}; run "
                                      f"`marble data check {card.id}`")
            needs.check([card], {card.id: items}, metrics=False)  # its decoders (MUSDB stems: stempeg, ffmpeg)
    except MarbleError as e:
        problem = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
    label = name or display_name(model, manifest)
    sha = file_sha256(directory / MANIFEST) if card.is_clip_level and manifest is not None else None
    return _Job(card, out=result_path(results_dir, label, card.id, track), cache=directory if manifest else None,
                cache_sha=sha, problem=problem)


def _probe_one(console, card, *, model, name, track, cache_dir, results_dir, device, seed, seeds, seeds_sweep, config,
               layer_spec, lr_spec, max_epochs, checkpoint_every, fresh, top, data_dir, chunks_per_epoch=None,
               verify=True) -> dict:
    from marble.probe.run import run_probe
    from marble.progress import SweepProgress

    with SweepProgress(f"{card.id} {track} sweep", max_epochs or card.training.max_epochs) as on_epoch:
        result = run_probe(card, model, cache_dir=cache_dir, results_dir=results_dir, track=track, device=device,
                           seed=seed, layers=layer_spec, lrs=lr_spec, name=name, max_epochs=max_epochs,
                           data_dir=data_dir, on_epoch=on_epoch, seeds=seeds, seeds_sweep=seeds_sweep, config=config,
                           checkpoint_every=checkpoint_every, fresh=fresh, chunks_per_epoch=chunks_per_epoch,
                           verify=verify)
    _print_table(console, result, top)
    return result


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
