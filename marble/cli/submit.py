"""``marble submit``: results to a leaderboard repository branch; ``marble reproduce``: re-run a submitted
model's probes and compare."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marble.cli import options


def register(app: typer.Typer) -> None:
    @app.command("submit")
    def submit_cmd(
        results_dir: Optional[Path] = options.results_dir(),
        model: str = typer.Option(..., "--model", "-m", help="The model name in the result files (as given to `marble probe`)."),
        to: Optional[Path] = typer.Option(None, "--to", help="Your clone of the leaderboard repository (not needed "
                                          "with --init-info)."),
        info: Optional[Path] = typer.Option(None, "--info", help="The model.json describing the model "
                                            "(default: <results-dir>/<model>/model.json)."),
        push: bool = typer.Option(False, "--push", help="Also push the new branch to the remote."),
        remote: str = typer.Option("origin", "--remote", help="Remote to push to with --push."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra task cards (user tasks)."),
        init_info: bool = typer.Option(False, "--init-info", help="Write a model.json template (to --info, default "
                                       "<results-dir>/<model>/model.json) filled from the model's results, list "
                                       "the fields left to fill in, and stop; nothing is submitted."),
    ) -> None:
        """Check every result of a model and commit them on a new branch of the leaderboard repository.

        Runs the full submission check (`marble leaderboard check --submission`) on each file, plus the
        leaderboard's own rules (known task card versions, one encoder per name, no duplicate revision);
        anything that fails is refused with the file and the reason, and the repository is left as it was.
        A model with fewer than 14 tasks is accepted and shown without a MARBLE score.

        Example: marble submit --results-dir results --model my/encoder --init-info   (then edit model.json)

        Example: marble submit --results-dir results --model my/encoder --to ~/marble-leaderboard"""
        from marble import settings
        from marble.errors import MarbleError
        from marble.leaderboard.submit import submit
        from marble.registry import all_cards

        if init_info:
            from marble.leaderboard.submit import init_info as write_template

            path, _, todo = write_template(settings.results_dir(results_dir), model, info)
            typer.echo(f"wrote {path}" + (f"; fill in {', '.join(todo)} (null now), then submit" if todo else
                                          "; check it, then submit"))
            typer.echo("  see your row on a local site: marble leaderboard build LEADERBOARD_REPO --results "
                       f"{settings.results_dir(results_dir)}")
            return
        if to is None:
            raise MarbleError("--to: missing: name your clone of the leaderboard repository (or pass --init-info "
                              "to write a model.json template first)")

        sub = submit(settings.results_dir(results_dir), model, to, info=info, cards=all_cards(tasks_dir), push=push, remote=remote)
        typer.echo(sub.hint(remote))

    @app.command("reproduce")
    def reproduce_cmd(
        entry: Path = typer.Argument(..., help="LEADERBOARD_REPO/models/<model>@<revision> (or the folder's name "
                                     "under LEADERBOARD_REPO/models)."),
        task: Optional[str] = typer.Option(None, "--task", "-t", help="Comma-separated task ids (default: every "
                                           "submitted task)."),
        model: str = typer.Option(..., "--model", help="The encoder to re-run, as you name it (hub id, checkpoint "
                                  "folder, file.py:Class): its feature cache is probed and, for frame tasks, it is "
                                  "loaded. It must be the submitted encoder (weights hash, else identity); the "
                                  "entry's own name is never loaded."),
        cache_dir: Optional[Path] = options.cache_dir(),
        out: Optional[Path] = typer.Option(None, "--out", help="Where to write the re-run results (default: a "
                                           "temporary folder)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
        data_dir: Optional[Path] = options.data_dir("Frame-level tasks: dataset root, for the targets."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra task cards (user tasks)."),
        tolerance: float = typer.Option(0.5, "--tolerance", help="Largest accepted |difference| in a task score "
                                        "(x100 scale / dB) before the exit code is 1."),
    ) -> None:
        """Re-run the probes of a submitted model from your own feature cache and print, per task, the
        submitted and the re-computed numbers and their difference.

        Example: marble reproduce ~/marble-leaderboard/models/my__encoder@v1 --model my/encoder --task gtzan"""
        from marble import settings
        from marble.leaderboard.reproduce import format_report, reproduce

        tasks = [t.strip() for t in task.split(",") if t.strip()] if task else None
        rows = reproduce(entry, tasks=tasks, model=model, cache_dir=settings.cache_dir(cache_dir), out=out,
                         device=device, data_dir=data_dir and settings.data_dir(data_dir), tasks_dir=tasks_dir)
        typer.echo(format_report(rows))
        if any(r.score_diff is None or abs(r.score_diff) > tolerance for r in rows):
            raise typer.Exit(1)
