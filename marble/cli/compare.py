"""``marble compare``: two or more models' results, item by item, with paired-bootstrap intervals."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from marble.cli import options


def register(app: typer.Typer) -> None:
    @app.command("compare", epilog=(
        "Examples:\n\n"
        "  marble compare m-a-p/MERT-v1-95M m-a-p/MERT-v1-330M\n\n"
        "  marble compare my/encoder ~/marble-leaderboard/models/m-a-p__MERT-v1-95M@v1 --tasks gtzan,mtt\n\n"
        "  marble compare results/a/gtzan/constrained.json results/b/gtzan/constrained.json --format json\n\n"))
    def compare_cmd(
        models: List[str] = typer.Argument(..., help="Two or more models: a model name under --results-dir, a "
                                           "model's results folder (or a leaderboard entry), or one result JSON. "
                                           "The first is the baseline."),
        results_dir: Optional[Path] = options.results_dir(),
        tasks: Optional[str] = typer.Option(None, "--tasks", "-t", help="Comma-separated task ids (default: every "
                                            "task all models have)."),
        track: str = typer.Option("constrained", "--track", help="constrained | semi-constrained | unconstrained"),
        resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples of the test items."),
        seed: int = typer.Option(1234, "--seed", help="Seed of the resampling (numpy default_rng)."),
        fmt: str = typer.Option("table", "--format", "-f", help="table | json"),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra task cards (user tasks)."),
    ) -> None:
        """Is one model really better than another? Per task, the difference of the task scores (x100, dB for
        SDR) of each model from the first, with a paired-bootstrap 95 % interval over the test files (songs
        for GS, tracks for frame tasks) and a p-value, the metric recomputed on every resample; then the
        difference of the MARBLE score (or of the mean task score over the common tasks). Results must share
        the task, track, card version and scored files (refused otherwise, naming the difference); the seed
        spread is shown where --seeds ran. With more than two models the p-values are also Holm-adjusted."""
        import json

        from marble import settings
        from marble.errors import MarbleError
        from marble.leaderboard.significance import compare, comparison_dict, format_comparison
        from marble.registry import all_cards

        if fmt not in ("table", "json"):
            raise typer.BadParameter(f"{fmt!r}; choose table or json", param_hint="--format")
        if resamples < 100:
            raise typer.BadParameter("at least 100 (1000 is the default)", param_hint="--resamples")
        if len(models) < 2:
            raise MarbleError("compare needs at least two models")
        cards = all_cards(tasks_dir)
        root = settings.results_dir(results_dir)
        found = {}
        for spec in models:
            name, res = _collect(spec, root, track, cards, tasks_dir)
            label = name if name not in found else spec
            found[label] = res
        wanted = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        c = compare(found, cards, tasks=wanted, resamples=resamples, seed=seed)
        typer.echo(json.dumps(comparison_dict(c), indent=2) if fmt == "json" else format_comparison(c), nl=fmt != "table")

    def _collect(spec: str, root: Path, track: str, cards: dict, tasks_dir):
        from marble.io import slug
        from marble.errors import MarbleError
        from marble.results import read_result

        p = Path(spec)
        if p.is_file():
            files = [p]
        else:
            folder = p if p.is_dir() else root / slug(spec)
            files = sorted(folder.glob(f"*/{track}.json"))
            if not folder.is_dir():
                raise MarbleError(f"{spec}: no results folder {folder} (give a model name under --results-dir "
                                  f"{root}, a model's results folder or a result JSON)")
            if not files:
                raise MarbleError(f"{folder}: no {track}-track results (<task>/{track}.json)")
        out, names = {}, set()
        for f in files:
            r = read_result(f, cards=cards)
            if r["track"] != track and len(files) > 1:
                continue
            out[r["task"]] = (f, r)
            names.add(r["model"])
        return (names.pop() if len(names) == 1 else spec), out
