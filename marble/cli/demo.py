"""``marble demo``: the whole pipeline offline on a synthetic task (no dataset, no network)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo", epilog=("Examples:\n\n" "  marble demo\n\n" "  marble demo --mert --workdir /tmp/marble-demo      (also a tiny random MERT)\n\n" "  marble leaderboard --results-dir marble-demo/results --tasks-dir marble-demo/tasks --no-reported\n\n"))
    def demo(
        workdir: Path = typer.Option(Path("marble-demo"), "--workdir", "-w", help="Where data, cache and results go."),
        mert: bool = typer.Option(False, "--mert", help="Also run a tiny random MERT (saved in the HF layout, loaded by path)."),
        max_epochs: int = typer.Option(30, "--max-epochs", help="Epoch cap of the sweep (recorded in the task card and result)."),
        clips_per_class: int = typer.Option(60, "--clips-per-class", help="Synthetic clips per instrument (4 instruments)."),
        seed: int = typer.Option(0, "--seed", help="Synthesis seed."),
        device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the leaderboard."),
    ) -> None:
        """Synthesize a small labelled music task (a user folder dataset + task card), extract features with
        the handcrafted encoder, run the constrained probe sweep and print the leaderboard."""
        from rich.console import Console

        from marble.demo import run_demo
        from marble.leaderboard.render import to_rich

        run = run_demo(workdir, mert=mert, max_epochs=max_epochs, clips_per_class=clips_per_class, seed=seed,
                       device=device, quiet=quiet)
        console = Console()
        console.print(to_rich(run.leaderboard, full=True, width=console.width))
        for model, r in run.results.items():
            sel = r["selected"]
            console.print(f"{model}: test accuracy {100 * r['test']['accuracy']:.1f} % (chance 25 %), "
                          f"selected layer {sel['layer']}, lr {sel['lr']:g} on validation")
        console.print(f"done in {run.seconds:.0f} s. Results: {run.results_dir}  ·  rerun the table with:\n"
                      f"  marble leaderboard --results-dir {run.results_dir} --tasks-dir {run.tasks_dir} --no-reported --full")
