"""The whole benchmark for one model: ``marble run`` and ``marble.evaluate``.

For every task: a result already on disk from the same sweep settings is kept (a quick reduced result is
recomputed when the full sweep is asked for); else a complete feature cache is probed; else the data is
read, the features extracted and then probed. The encoder is loaded at most once, and only when some task
needs it (extraction, or a frame task, whose probe runs the encoder itself when no frame cache exists). A
second run therefore recomputes nothing. Tasks whose data is missing are reported and skipped, or, with
``strict``, stop the run before any work.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from marble import settings
from marble.errors import Interrupted, MarbleError


class DataMissingError(MarbleError, FileNotFoundError):
    """Data for some tasks is missing (raised with ``strict``, or when no task has data)."""


@dataclass
class TaskOutcome:
    task: str
    status: str  # kept (result on disk) | probed (cache on disk) | computed | missing
    result_path: Path | None = None
    reason: str = ""
    seconds: float = 0.0


@dataclass
class RunReport:
    model: str
    track: str
    outcomes: list[TaskOutcome] = field(default_factory=list)
    encoder_loads: int = 0

    @property
    def missing(self) -> dict[str, str]:
        return {o.task: o.reason for o in self.outcomes if o.status == "missing"}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _complete_cache(directory: Path, card) -> dict | None:
    """The cache manifest when every split of the card is complete, else None."""
    from marble.cache.store import MANIFEST, CacheError, read_manifest

    if not (directory / MANIFEST).is_file():
        return None
    try:
        m = read_manifest(directory)
    except CacheError:
        return None
    splits = m.get("splits") or {}
    if all((splits.get(s) or {}).get("status") == "complete" for s in card.splits.names):
        return m
    return None


def _existing_result(path: Path, tasks_dir) -> dict | None:
    from marble.results import ResultError, read_result

    if not path.is_file():
        return None
    try:
        return read_result(path, tasks_dir=tasks_dir)
    except ResultError:
        return None  # an invalid or stale file is recomputed (the writer replaces it atomically)


def same_sweep(result: dict, card, *, layers: tuple, lrs: tuple, max_epochs: int | None, seed: int,
               config, seeds: int = 1, seeds_sweep: bool = False) -> bool:
    """Whether ``result`` is what this request would compute (epoch cap, LR grid, layer options, seed, seed repeats,
    head config), so that a rerun keeps it; a quick reduced result is not kept when the full sweep is asked for."""
    import math

    from marble.probe.runs import seed_repeat_mode

    t = result.get("training") or {}
    if (result.get("manifest") or {}).get("seed", t.get("seed")) != seed:  # the seed the run used
        return False
    if t.get("seed_repeat") != seed_repeat_mode(seeds, seeds_sweep) or (result.get("seeds") or {}).get("n", 1) != seeds:
        return False
    if config is not None:
        return (result.get("head") or {}).get("config") == str(config)
    want_lrs = sorted(float(x) for x in (lrs or card.training.learning_rates))
    got_lrs = sorted(float(x) for x in t.get("learning_rates") or [])
    if len(want_lrs) != len(got_lrs) or not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(want_lrs, got_lrs)):
        return False
    if t.get("max_epochs") != (max_epochs or card.training.max_epochs):
        return False
    got = {row["layer"] for row in result.get("sweep") or []}
    if layers:
        return got == set(layers)
    states = ((result.get("manifest") or {}).get("encoder") or {}).get("num_states")
    ints = sorted(x for x in got if isinstance(x, int))
    if not isinstance(states, int):
        states = (ints[-1] + 1) if ints else 0
    return got == set(range(states)) | ({"weighted"} if states > 1 else set())


def run_benchmark(
    model: str,
    tasks: str | list[str] = "all",
    *,
    track: str = "constrained",
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
    tasks_dir: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    device: str = "auto",
    strict: bool = False,
    allow_partial: bool = False,
    layers: str | list | None = None,
    lrs: str | list | None = None,
    max_epochs: int | None = None,
    seed: int = 1234,
    seeds: int = 1,
    seeds_sweep: bool = False,
    checkpoint_every: int = 5,
    fresh: bool = False,
    batch_size: int = 8,
    num_workers: int = 2,
    dtype: str = "auto",
    tf32: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = _stderr,
) -> RunReport:
    """Extract and probe ``model`` on ``tasks`` (``"all"``, ``"gtzan,emo"`` or a list); see the module docstring.

    Folders default to ``$MARBLE_DATA_DIR`` / ``$MARBLE_CACHE_DIR`` / ``$MARBLE_RESULTS_DIR``, else ``./data``,
    ``./cache``, ``./results``. ``layers``/``lrs``/``max_epochs`` make a reduced sweep (recorded, marked in the
    leaderboard). ``seeds``/``seeds_sweep``, ``checkpoint_every`` and ``fresh`` are ``marble probe``'s, for every
    task alike (clip and frame). ``log`` receives one line per stage (None: silent)."""
    from marble.datasets import split_items
    from marble.devices import resolve_device
    from marble import needs
    from marble.encoders.identity import display_name, model_cache_dir
    from marble.preflight import cache_notice, check_model
    from marble.probe.config import check_track, parse_layers, parse_lrs
    from marble.registry import select_cards
    from marble.results import result_path

    say = log or (lambda msg: None)
    check_track(track, config)
    device = str(resolve_device(device))
    data_dir, cache_root, results_root = settings.data_dir(data_dir), settings.cache_dir(cache_dir), settings.results_dir(results_dir)
    cards = select_cards(tasks, tasks_dir)
    layer_spec = parse_layers(layers)
    ref = check_model(model, cache_root)  # a typo fails here, not after the data checks
    needs.check(cards)

    caches = {c.id: model_cache_dir(cache_root, model, c.id) for c in cards}
    complete = {c.id: _complete_cache(caches[c.id], c) for c in cards if c.is_clip_level}
    recorded = next((display_name(model, m) for m in complete.values() if m), None)

    state = {"encoder": None, "loads": 0}

    def encoder():
        if state["encoder"] is None:
            from marble.encoders import load_encoder

            say(f"[marble run] loading encoder {model!r}")
            state["encoder"] = load_encoder(model, device=device)
            state["loads"] += 1
        return state["encoder"]

    # which tasks need their data (no result and, for clip tasks, no complete cache); check it all first
    def result_of(label: str, card) -> Path:
        return result_path(results_root, label, card.id, track)

    verdicts: dict[tuple[str, str], bool] = {}  # asked before the data check and again in the loop: read once

    def kept(label: str, card) -> bool:
        if (label, card.id) not in verdicts:
            r = _existing_result(result_of(label, card), tasks_dir)
            lr_req = parse_lrs(lrs, card.training.learning_rates if config is None else None)
            verdicts[(label, card.id)] = r is not None and same_sweep(
                r, card, layers=layer_spec, lrs=lr_req, max_epochs=max_epochs, seed=seed, config=config, seeds=seeds,
                seeds_sweep=seeds_sweep)
        return verdicts[(label, card.id)]

    label = name or recorded
    items: dict[str, dict] = {}
    listed: dict[str, dict] = {}  # per task and split: files listed and not on disk, for the result's accounting
    missing: dict[str, str] = {}
    for card in cards:
        if label is not None and kept(label, card):
            continue
        if card.is_clip_level and complete.get(card.id):
            continue
        try:
            items[card.id], listed[card.id] = split_items(card, data_dir, allow_partial=allow_partial)
        except MarbleError as e:
            missing[card.id] = str(e)
    if missing and strict:
        raise DataMissingError("data missing for " + "; ".join(f"{t}: {r}" for t, r in missing.items())
                               + " (run `marble data check TASK`, or drop --strict to skip these tasks)")
    if missing and len(missing) == len(cards):
        raise DataMissingError("no task has its data: " + "; ".join(f"{t}: {r}" for t, r in missing.items()))
    needs.check([c for c in cards if c.id in items], items)  # decoders of the files found (MUSDB stems: ffmpeg)
    notice = cache_notice(cache_dir, model) if any(c.is_clip_level and c.id in items for c in cards) else None
    if notice:
        say(f"[marble run] {notice}")
    if label is None:  # nothing cached yet: the encoder names itself
        label = encoder().name if items else ref.name

    report = RunReport(model=label, track=track)
    sweep_options = dict(seeds=seeds, seeds_sweep=seeds_sweep, checkpoint_every=checkpoint_every, fresh=fresh)
    try:  # Ctrl-C: say how many tasks finished; a rerun keeps them and resumes the interrupted one
        for i, card in enumerate(cards, 1):
            t0 = time.perf_counter()
            out = result_of(label, card)
            head = f"[marble run] {i}/{len(cards)} {card.id}"
            if kept(label, card):
                say(f"{head}: result kept ({out}): same sweep settings")
                report.outcomes.append(TaskOutcome(card.id, "kept", out))
                continue
            if card.id in missing:
                say(f"{head}: skipped, data missing: {missing[card.id].splitlines()[0]}")  # the rest once, at the end
                report.outcomes.append(TaskOutcome(card.id, "missing", None, missing[card.id]))
                continue
            lr_spec = parse_lrs(lrs, card.training.learning_rates if config is None else None)
            status = "probed"
            if card.is_clip_level:
                if not complete.get(card.id):
                    from marble.cache.extract import extract

                    n = sum(len(v) for v in items[card.id].values())
                    say(f"{head}: extracting {n} files")
                    extract(card, encoder(), items[card.id], cache_root, device=device, batch_size=batch_size,
                            num_workers=num_workers, dtype=dtype, tf32=tf32, progress=progress, listed=listed[card.id])
                    status = "computed"
                say(f"{head}: probing ({track})")
                _say_resuming(say, head, out, track)
                from marble.probe.clip import run_clip
                from marble.progress import SweepProgress

                with SweepProgress(f"{card.id} sweep", max_epochs or card.training.max_epochs, enabled=progress) as on_epoch:
                    result = run_clip(card, model, cache_root=cache_root, results_dir=results_root, track=track,
                                      device=device, seed=seed, config=config, layers=layer_spec, lrs=lr_spec, name=label,
                                      max_epochs=max_epochs, on_epoch=on_epoch, **sweep_options)
            else:
                from marble.probe.sequence import run as run_sequence

                from marble.progress import SweepProgress

                say(f"{head}: probing ({track}, frame task: features from the frame cache or the encoder)")
                _say_resuming(say, head, out, track)
                with SweepProgress(f"{card.id} sweep", max_epochs or card.training.max_epochs, enabled=progress) as on_epoch:
                    result = run_sequence(card, model, cache_dir=cache_root, data_dir=data_dir, results_dir=results_root,
                                          device=device, layers=list(layer_spec) or None, lrs=list(lr_spec) or None,
                                          max_epochs=max_epochs, seed=seed, track=track, config=config, encoder=encoder(),
                                          items=items[card.id], name=label, on_epoch=on_epoch, **sweep_options)
                status = "computed"
            from marble.results.accounting import coverage

            for line in coverage(result):  # a score on part of a split says so first
                say(f"{head}: {line}")
            main = result["main_metric"]
            score = (result.get("test") or {}).get(main)
            say(f"{head}: done, test {main} {score if score is None else f'{score:.4f}'} "
                f"({time.perf_counter() - t0:.1f} s)")
            report.outcomes.append(TaskOutcome(card.id, status, out, seconds=time.perf_counter() - t0))
    except KeyboardInterrupt:
        finished = sum(o.status != "missing" for o in report.outcomes)
        raise Interrupted(finished, len(cards) - len(missing), "tasks",
                          "finished results and caches are kept; an interrupted extraction or sweep continues where "
                          "it stopped") from None
    report.encoder_loads = state["loads"]
    return report


def _say_resuming(say, head: str, out: Path, track: str) -> None:
    from marble.probe.runs import state_files

    if state_files(out, track)[0].exists():
        say(f"{head}: resuming the sweep saved in {state_files(out, track)[0]}")


def evaluate(model: str, tasks: str | list[str] = "all", *, data_dir=None, cache_dir=None, results_dir=None,
             **options):
    """Run the benchmark for ``model`` (any spelling ``marble extract`` takes) and return its results.

    ``tasks``: ``"all"`` (the 14 built-in tasks), ``"gtzan,emo"`` or a list. Folders default to the
    ``MARBLE_*_DIR`` variables, else ``./data``, ``./cache``, ``./results``. ``options`` are those of
    :func:`run_benchmark` (``track``, ``name``, ``device``, ``strict``, ``max_epochs``, ``lrs``, ``layers``, ...).
    Returns a :class:`marble.results.collection.Results` of the tasks that have a result; its ``report``
    attribute says what was kept, computed or skipped for missing data."""
    from marble.progress import interactive
    from marble.results import read_result
    from marble.results.collection import Results

    options.setdefault("log", None)
    options.setdefault("progress", interactive())
    report = run_benchmark(model, tasks, data_dir=data_dir, cache_dir=cache_dir, results_dir=results_dir, **options)
    done = [o for o in report.outcomes if o.result_path is not None]
    results = Results([read_result(o.result_path, tasks_dir=options.get("tasks_dir")) for o in done],
                      [o.result_path for o in done])
    results.report = report
    return results
