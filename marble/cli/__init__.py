"""The ``marble`` command line. One thin module per command group; all logic lives in the library."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="marble",
    help=(
        "MARBLE benchmark toolkit: extract layer-wise features from a frozen music encoder, probe every layer "
        "under the constrained protocol, and build the leaderboard.\n\n"
        "Quick start (no data, no network):  marble demo\n\n"
        "Typical run:\n\n"
        "  marble data check gtzan --data-dir ~/data   (get data: marble data download TASK; prove it: marble data verify TASK)\n\n"
        "  marble extract --model m-a-p/MERT-v1-95M --task gtzan --data-dir ~/data\n\n"
        "  marble probe --model m-a-p/MERT-v1-95M --task gtzan --track constrained\n\n"
        "  marble leaderboard\n\n"
        "Fine-tune (the unconstrained track):  marble finetune --model m-a-p/MERT-v1-95M --task gtzan --method lora\n\n"
        "Folders: --data-dir, --cache-dir and --results-dir default to $MARBLE_DATA_DIR, $MARBLE_CACHE_DIR and "
        "$MARBLE_RESULTS_DIR, else ./data, ./cache and ./results.\n\n"
        "Exit codes: 0 done; 1 a check found problems (data check/verify/download, models check, leaderboard check, "
        "reproduce beyond --tolerance); 2 bad input (an 'error:' "
        "line names the file and the fix); 3 an existing cache does not match (extract --overwrite); 130 "
        "interrupted (finished work is kept)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# command modules, each with register(app); a module missing from a partial install is skipped
_COMMANDS = ["tasks", "data", "models", "extract", "probe", "finetune", "run", "leaderboard", "submit", "compare", "predict", "card", "plot", "pretrain", "demo"]


def _register_all() -> None:
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"marble.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"marble.cli.{name}":
                continue
            raise
        module.register(app)


def _print_version(value: bool) -> None:
    # a parse-time callback: it runs (and exits) before click asks for a command
    if value:
        from marble import __version__

        typer.echo(f"marble {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the toolkit version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    pass


_register_all()


def main() -> None:
    """Entry point: marble's own errors (bad input, missing data/cache, malformed files) print their
    message, which names the file and the fix, and exit 2; Ctrl-C keeps committed work, says what finished
    (:class:`marble.errors.Interrupted`) and exits 130."""
    import sys

    from marble.errors import MarbleError

    try:
        app()
    except MarbleError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt as e:  # outside a command (typer turns one inside into exit status 130)
        _say_interrupted(e)
        sys.exit(130)
    except SystemExit as e:
        interrupt = _interrupt_behind(e) if e.code == 130 else None
        if interrupt is not None:
            _say_interrupted(interrupt)
        raise


def _interrupt_behind(exit_exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C typer turned into ``Exit(130)`` (``raise Exit(130) from interrupt``), if that is what this exit is."""
    inner = exit_exc.__context__
    cause = getattr(inner, "__cause__", None)
    return cause if isinstance(cause, KeyboardInterrupt) else None


def _say_interrupted(e: KeyboardInterrupt) -> None:
    from marble.errors import Interrupted

    msg = str(e) if isinstance(e, Interrupted) else ("interrupted; finished work is kept on disk, rerun the same "
                                                      "command to resume")
    typer.echo(f"\n{msg}", err=True)
