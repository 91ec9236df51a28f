"""``marble plot``: figures of results (PNG and SVG), drawn by :mod:`marble.plots`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


LAYERS_EPILOG = (
    "Examples:\n\n"
    "  marble plot layers results/m-a-p__MERT-v1-95M/gtzan/constrained.json\n\n"
    "  marble plot layers results/my-mert --split valid --out figures     (every result of a model)\n\n"
    "Writes <out>/<model>--<task>--<track>.layers.png and .svg."
)
COMPARE_EPILOG = (
    "Examples:\n\n"
    "  marble plot compare results\n\n"
    "  marble plot compare results --track semi-constrained --format svg --out figures\n\n"
    "  marble plot compare results --published     (with the published rows)\n\n"
    "Writes <out>/compare-<track>.png and .svg: one row per model, one column per task, the leaderboard's task scores."
)


def _formats(spec: str) -> list[str]:
    fmts = [f.strip().lower() for f in spec.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ("png", "svg", "pdf")]
    if bad or not fmts:
        raise typer.BadParameter(f"{spec!r}: choose from png, svg, pdf (comma-separated)", param_hint="--format")
    return fmts


def register(app: typer.Typer) -> None:
    plot_app = typer.Typer(help="Draw figures of results (PNG and SVG).", no_args_is_help=True,
                           epilog=("Examples:\n\n" "  marble plot layers results/m-a-p__MERT-v1-95M/gtzan/constrained.json\n\n" "  marble plot compare results\n\n"))

    @plot_app.command("layers", epilog=LAYERS_EPILOG)
    def layers(
        paths: List[Path] = typer.Argument(..., help="Result JSON files, or folders of results."),
        out: Path = typer.Option(Path("plots"), "--out", "-o", help="Folder for the figures."),
        split: str = typer.Option("test", "--split", help="test | valid: which scores to draw."),
        metric: Optional[str] = typer.Option(None, "--metric", help="Metric to draw (default: the task's main metric)."),
        fmt: str = typer.Option("png,svg", "--format", help="Comma-separated: png, svg, pdf."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra folder of user task cards."),
    ) -> None:
        """Score vs layer, one line per learning rate, the selected probe marked, the weighted sum beside."""
        from marble import plots
        from marble.io import slug
        from marble.results.collection import load_results

        fmts = _formats(fmt)
        for path in paths:
            results = load_results(path, tasks_dir=tasks_dir)
            for note in results.notes:
                typer.echo(f"note: {note}", err=True)
            for r in results:
                fig = plots.plot_layers(r, split=split, metric=metric)
                for p in plots.save(fig, out / f"{slug(r['model'])}--{r['task']}--{r['track']}.layers", fmts):
                    typer.echo(str(p))

    @plot_app.command("compare", epilog=COMPARE_EPILOG)
    def compare(
        results_dir: Optional[Path] = typer.Argument(None, help="Results folder (default: $MARBLE_RESULTS_DIR, else ./results)."),
        out: Path = typer.Option(Path("plots"), "--out", "-o", help="Folder for the figures."),
        track: str = typer.Option("constrained", "--track", help="constrained | semi-constrained | unconstrained"),
        fmt: str = typer.Option("png,svg", "--format", help="Comma-separated: png, svg, pdf."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra folder of user task cards."),
        published: bool = typer.Option(False, "--published", help="Add the published rows (MARBLE paper, "
                                       "constrained track), named '<model> (published)'."),
    ) -> None:
        """Models x tasks: a heat map of task scores, one row per model, on a fixed colour scale per kind of score
        (x100 on 0..100, SDR on 0..10 dB); '*' marks a reduced or incomplete result."""
        from marble import plots, settings
        from marble.results.collection import load_results

        fmts = _formats(fmt)
        results = load_results(settings.results_dir(results_dir), tasks_dir=tasks_dir)
        for note in results.notes:
            typer.echo(f"note: {note}", err=True)
        fig = plots.plot_compare(results, tasks_dir=tasks_dir, track=track, published=published)
        for p in plots.save(fig, out / f"compare-{track}", fmts):
            typer.echo(str(p))

    app.add_typer(plot_app, name="plot")

