"""``marble data check <task>``: is a task's dataset complete under --data-dir?"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marble.cli import options


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Inspect datasets on disk.", no_args_is_help=True)

    @data_app.command("check")
    def check(
        task: str = typer.Argument(..., help="Task id (see `marble tasks`) or a card .toml path."),
        data_dir: Optional[Path] = options.data_dir("Folder holding the datasets (default ./data)."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra folder of user task cards."),
        allow_partial: bool = typer.Option(False, "--allow-partial", help="Exit 0 when every split has some data."),
        show_missing: int = typer.Option(5, "--show-missing", help="Missing files listed per split."),
    ) -> None:
        """Per split: expected and found counts, a few missing files; exit 1 if incomplete."""
        from rich.console import Console
        from rich.table import Table

        from marble.datasets import get_dataset
        from marble.registry import CardError, UnknownTaskError, get_card

        console = Console()
        try:
            card = get_card(task, tasks_dir)
            report = get_dataset(card, data_dir).check()
        except (CardError, UnknownTaskError, ValueError) as e:
            console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
            raise typer.Exit(2)
        table = Table(title=f"{card.id}: {report.root}")
        for col in ("split", "expected", "found", "missing", "status"):
            table.add_column(col)
        for s in report.splits:
            n_missing = len(s.missing) if s.expected is None else max(s.expected - s.found, len(s.missing))
            status = "[green]complete[/green]" if s.complete else ("[yellow]partial[/yellow]" if s.found else "[red]absent[/red]")
            table.add_row(s.split, "?" if s.expected is None else str(s.expected), f"{s.found} {s.unit}", str(n_missing), status)
        console.print(table)
        for s in report.splits:
            if s.note:
                console.print(f"{s.split}: {s.note}", highlight=False, markup=False)
            for m in s.missing[:show_missing]:
                console.print(f"  missing ({s.split}): {m}", highlight=False, markup=False)
        if report.complete:
            console.print("[green]all splits complete[/green]")
            return
        console.print(f"data source: {card.source.url or 'see the task card'}", highlight=False, markup=False)
        if allow_partial and all(s.found > 0 for s in report.splits):
            console.print("[yellow]incomplete, accepted with --allow-partial[/yellow]")
            return
        raise typer.Exit(1)

    app.add_typer(data_app, name="data")
