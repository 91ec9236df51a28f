"""``marble leaderboard``: the MARBLE table from result files; ``marble leaderboard check``:
validate submission files; ``init`` / ``build``: a leaderboard repository and its static site."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from marble import settings
from marble.cli import options

INVALID_EXIT = 2


def register(app: typer.Typer) -> None:
    lb_app = typer.Typer(
        help="Aggregate result files (and the published numbers) into the MARBLE table.",
        invoke_without_command=True, no_args_is_help=False,
    )

    @lb_app.callback(invoke_without_command=True, epilog=("Examples:\n\n" "  marble leaderboard\n\n" "  marble leaderboard --results-dir runs/results --no-reported --format markdown -o table.md\n\n" "  marble leaderboard --tasks gtzan,mtt --full\n\n" "  marble leaderboard check --submission results/my-model/*/constrained.json\n\n"))
    def leaderboard(
        ctx: typer.Context,
        results_dir: Optional[Path] = options.results_dir(),
        fmt: str = typer.Option("table", "--format", "-f", help="table | markdown | csv | json"),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of the terminal."),
        track: str = typer.Option("constrained", "--track", help="constrained | semi-constrained | unconstrained"),
        no_reported: bool = typer.Option(False, "--no-reported", help="Leave out the published (reported) rows."),
        full: bool = typer.Option(False, "--full", help="Table/Markdown: every metric, not only task scores."),
        tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated task ids to show (default: all with results)."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra task cards (user tasks)."),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Warn about invalid result files and go on."),
        ties: bool = typer.Option(True, "--ties/--no-ties", help="Mark each task's top group (the best and every score "
                                  "not separable from it at 95 %: paired bootstrap over the test files, Holm)."),
        resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples of the tie groups (at least 40 "
                                      "per model compared are used)."),
    ) -> None:
        if ctx.invoked_subcommand is not None:
            return
        from marble.leaderboard import FORMATS, build, render

        results_dir = settings.results_dir(results_dir)
        from marble.results import TRACKS, ResultError

        if fmt not in FORMATS:
            raise typer.BadParameter(f"{fmt!r}; choose one of {', '.join(FORMATS)}", param_hint="--format")
        if track not in TRACKS:
            raise typer.BadParameter(f"{track!r}; choose one of {', '.join(TRACKS)}", param_hint="--track")
        try:
            lb = build(results_dir, track=track, reported=not no_reported, tasks_dir=tasks_dir, skip_invalid=skip_invalid,
                       ties=ties, resamples=resamples)
        except ResultError as e:
            typer.echo(f"error: invalid result file (fix it, or pass --skip-invalid to leave it out):\n{e}", err=True)
            raise typer.Exit(INVALID_EXIT)
        for w in lb.warnings:
            typer.echo(f"warning: {w}", err=True)
        if tasks:
            wanted = [t.strip() for t in tasks.split(",") if t.strip()]
            unknown = [t for t in wanted if t not in lb.tasks]
            if unknown:
                typer.echo(f"error: --tasks: no results for {', '.join(unknown)} (have: {', '.join(lb.tasks)})", err=True)
                raise typer.Exit(INVALID_EXIT)
            lb.tasks = wanted
        if not lb.rows:
            typer.echo(f"no results for the {track} track under {results_dir}", err=True)
            raise typer.Exit(1)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(render(lb, fmt, full=full), encoding="utf-8")
            typer.echo(f"wrote {output} ({len(lb.rows)} rows, {len(lb.tasks)} tasks)", err=True)
        elif fmt == "table":
            from rich.console import Console

            from marble.leaderboard.render import to_rich

            console = Console()
            console.print(to_rich(lb, full=full, width=console.width))
        else:
            typer.echo(render(lb, fmt, full=full), nl=False)

    @lb_app.command("check", epilog=("Examples:\n\n" "  marble leaderboard check results/my-model/gtzan/constrained.json\n\n" "  marble leaderboard check --submission results/my-model/*/constrained.json\n\n"))
    def check(
        files: List[Path] = typer.Argument(..., help="Result JSON files to validate."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra task cards (user tasks)."),
        submission: bool = typer.Option(
            False, "--submission",
            help="Also require every file of each split scored (card exclusions aside) and the full constrained "
                 "protocol (every layer + weighted sum, the card's LR grid, epoch cap, batch size and head): what a "
                 "leaderboard submission must meet."),
    ) -> None:
        """Validate result files (schema + consistency with the task card and the sweep): OK or the errors.

        A valid result from a reduced sweep (--max-epochs, --layers, --lrs) is reported as such; with
        --submission it fails the check, since it is not comparable with published numbers."""
        from marble.registry import all_cards
        from marble.results.submission import check_file

        cards = all_cards(tasks_dir)
        bad = 0
        for f in files:
            c = check_file(f, cards)
            if not c.valid:
                bad += 1
                typer.echo("\n".join(c.errors), err=True)
            elif not c.deviations and not (submission and c.unsealed):
                typer.echo(f"{f}: OK ({c.what})")
            elif submission:
                bad += 1
                typer.echo("\n".join(c.reasons()), err=True)
            else:
                listing = "".join(f"\n  - {d}" for d in c.deviations)
                typer.echo(f"{f}: OK, reduced protocol or incomplete data: not comparable with published numbers "
                           f"({c.what}){listing}")
        if bad:
            typer.echo(f"{bad} of {len(files)} file(s) " + ("rejected" if submission else "invalid"), err=True)
            raise typer.Exit(INVALID_EXIT)

    @lb_app.command("init")
    def init(
        repo: Path = typer.Argument(..., help="Folder for the new leaderboard repository (created if missing)."),
    ) -> None:
        """Write a new leaderboard repository: leaderboard.json (accepted task card versions, categories)
        and the published rows as models/<name>@published entries (source: reported).

        Example: marble leaderboard init marble-leaderboard && cd marble-leaderboard && git init && git add -A"""
        from marble.leaderboard.repo import init_repo

        files = init_repo(repo)
        typer.echo(f"wrote {len(files)} files into {repo}; commit them (git init; git add -A; git commit)")

    @lb_app.command("build")
    def build_cmd(
        repo: Path = typer.Argument(..., help="The leaderboard repository (a clone)."),
        out: Path = typer.Option(Path("site"), "--out", "-o", help="Output folder of the static site."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra task cards (user tasks)."),
        results: Optional[Path] = typer.Option(None, "--results", help="Also show the models of this results "
                                               "folder, as rows marked 'local (unofficial)': see your row before "
                                               "you submit. Invalid files are left out with a warning."),
    ) -> None:
        """Build the static leaderboard site (index.html + one page per model), self-contained: open
        it from disk or host it anywhere; nothing is fetched at view time.

        Example: marble leaderboard build ~/marble-leaderboard --out site/

        Example: marble leaderboard build ~/marble-leaderboard --results results --out site/   (your rows too)"""
        from marble.errors import MarbleError
        from marble.leaderboard.site import build_site
        from marble.registry import all_cards

        if results is not None and not results.is_dir():
            raise MarbleError(f"{results}: no such results folder; pass the folder `marble probe` wrote "
                              "(--results-dir, default ./results)")
        warnings: list[str] = []
        pages = build_site(repo, out, cards=all_cards(tasks_dir), local=results, warnings=warnings)
        for w in warnings:
            typer.echo(f"warning: {w}", err=True)
        typer.echo(f"wrote {pages[0]} and {len(pages) - 1} model page(s) under {out / 'models'}"
                   + (f", local rows from {results} marked unofficial" if results is not None else ""))

    app.add_typer(lb_app, name="leaderboard")
