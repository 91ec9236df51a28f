"""``marble models``: list the encoders marble can resolve, and check one against the contract."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Encoders: list them, check one against the Encoder contract.",
                         no_args_is_help=True, epilog=("Examples:\n\n" "  marble models list\n\n" "  marble models check my_encoder.py:MyEncoder\n\n" "  marble models check ./models/my-mert --device cuda\n\n"))

    @models.command("list", epilog=("Examples:\n\n" "  marble models list\n\n"))
    def list_cmd() -> None:
        """Built-in encoders, known hub ids and installed entry-point plug-ins."""
        from rich.console import Console
        from rich.table import Table

        from marble.encoders import list_encoders

        table = Table(title="encoders (also: a checkpoint directory, any hub id, or path/to/file.py:Class)")
        for col in ("name", "kind", "description"):
            table.add_column(col)
        for row in list_encoders():
            table.add_row(row["name"], row["kind"], row["description"])
        Console().print(table)

    @models.command("check", epilog=("Examples:\n\n" "  marble models check handcrafted\n\n" "  marble models check my_encoder.py:MyEncoder\n\n" "  marble models check m-a-p/MERT-v1-95M --device cuda\n\n" "A failing check names the Encoder method or attribute to fix (docs/encoders.md)."))
    def check_cmd(
        spec: str = typer.Argument(..., help="built-in name, dir, hub id, entry point or path/to/file.py:Class"),
        device: str = typer.Option("cpu", help="torch device"),
        revision: str = typer.Option(None, help="hub revision (branch, tag or commit)"),
    ) -> None:
        """Run SPEC through the Encoder contract: attributes, shapes, upto, batching, determinism, NaNs."""
        from rich.console import Console
        from rich.table import Table

        from marble.devices import resolve_device
        from marble.encoders import load_encoder
        from marble.encoders.check import all_ok, check_encoder

        device = str(resolve_device(device))

        console = Console()
        try:
            enc = load_encoder(spec, device=device, revision=revision)
        except Exception as e:
            console.print(f"[red]cannot load {spec}:[/red] {e}")
            raise typer.Exit(2)
        results = check_encoder(enc)
        table = Table(title=f"conformance: {spec}")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail")
        for r in results:
            table.add_row(r.name, "[green]ok[/green]" if r.ok else "[red]FAIL[/red]", r.detail)
        console.print(table)
        if not all_ok(results):
            console.print(f"[red]{sum(not r.ok for r in results)} check(s) failed[/red]")
            for r in results:
                if not r.ok:
                    typer.echo(f"FAIL {r.name}: {r.detail}", err=True)
            raise typer.Exit(1)
        console.print("[green]all checks passed[/green]")

    app.add_typer(models, name="models")
