"""``marble tasks`` (table of tasks) and ``marble tasks show <id>`` (one card in full)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from marble.cli import options

TASKS_DIR_HELP = "Extra folder of user task cards (also $MARBLE_TASKS_DIR)."


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    tasks_app = typer.Typer(help="List the benchmark tasks or show one task card.", invoke_without_command=True)

    @tasks_app.callback(epilog=("Examples:\n\n" "  marble tasks\n\n" "  marble tasks --data-dir ~/data      (whether each task's data is found; default ./data)\n\n" "  marble tasks --tasks-dir my_tasks\n\n" "  marble tasks show gtzan\n\n"))
    def list_tasks(
        ctx: typer.Context,
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help=TASKS_DIR_HELP),
        data_dir: Optional[Path] = options.data_dir("Report whether each task's data is found here (default ./data)."),
    ) -> None:
        """Table of the tasks: id, name, type, classes, metrics, data found (under --data-dir, default ./data), the
        extra a task needs beyond the core install, origin."""
        if ctx.invoked_subcommand is not None:
            ctx.obj = {"tasks_dir": tasks_dir}
            return
        from rich.console import Console
        from rich.table import Table

        from marble import needs, settings
        from marble.datasets import get_dataset
        from marble.registry import CardError, all_cards

        try:
            cards = all_cards(tasks_dir)
        except CardError as e:
            _fail(e)
        root = settings.data_dir(data_dir)
        looked = root.is_dir()
        shown = root if root.is_absolute() else f"./{root}"
        where = f"data: {shown}" if looked else f"no {shown} folder: pass --data-dir or set ${settings.DATA_ENV}"
        table = Table(title=f"{len(cards)} tasks ({where})")
        for col in ("id", "name", "type", "classes", "metrics (main first)", "data", "extra", "origin"):
            table.add_column(col, overflow="fold")
        for card in cards.values():
            try:
                classes = str(card.num_outputs)
            except Exception as e:  # a user vocabulary file may be missing
                classes = f"? ({e})"
            if not looked:
                found = "-"
            else:
                try:
                    report = get_dataset(card, root).check()
                    found = "complete" if report.complete else ("partial" if any(s.found for s in report.splits) else "absent")
                except Exception as e:
                    found = f"error: {e}"
            metrics = ", ".join([card.metrics.main] + [m for m in card.metrics.names if m != card.metrics.main])
            table.add_row(card.id, card.name, card.prediction, classes, metrics, found,
                          ", ".join(needs.extras(card)) or "-", card.origin)
        Console(width=200).print(table)

    @tasks_app.command("show", epilog=("Examples:\n\n" "  marble tasks show gtzan\n\n" "  marble tasks show my-task --tasks-dir my_tasks\n\n"))
    def show(
        ctx: typer.Context,
        task: str = typer.Argument(..., help="Task id or card path."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help=TASKS_DIR_HELP),
    ) -> None:
        """Print a task card: every field and the recorded decisions."""
        from marble.registry import CardError, UnknownTaskError, get_card

        tasks_dir = tasks_dir or (ctx.obj or {}).get("tasks_dir")
        try:
            card = get_card(task, tasks_dir)
        except (CardError, UnknownTaskError) as e:
            _fail(e)
        typer.echo(f"{card.id} (v{card.version}, {card.protocol}): {card.name}")
        typer.echo(f"card: {card.path} [{card.origin}] sha256 {card.sha256[:16]}")
        if card.description:
            typer.echo(card.description)
        for f in dataclasses.fields(card):
            if f.name in ("id", "version", "protocol", "name", "description", "decisions", "path", "origin"):
                continue
            value = getattr(card, f.name)
            if dataclasses.is_dataclass(value):
                typer.echo(f"[{f.name}]")
                for k, v in dataclasses.asdict(value).items():
                    typer.echo(f"  {k} = {v!r}")
            else:
                typer.echo(f"{f.name} = {value!r}")
        try:
            vocab = card.vocabulary()
            shown = ", ".join(vocab[:12]) + (f", ... ({len(vocab)})" if len(vocab) > 12 else "")
            typer.echo(f"vocabulary ({len(vocab)}): {shown}")
        except Exception as e:
            typer.echo(f"vocabulary: unavailable ({e})")
        if card.decisions:
            typer.echo("[decisions]")
            for k, v in card.decisions.items():
                typer.echo(f"  {k}: {v}")

    app.add_typer(tasks_app, name="tasks")
