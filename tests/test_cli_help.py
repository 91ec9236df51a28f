"""The README's promise: every command's --help has examples (and the root help lists every command)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from marble.cli import app


def _commands():
    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        if path:
            out.append(path)  # groups too: `marble data --help`, `marble leaderboard --help`
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, path + [name])

    walk(root, [])
    return out


COMMANDS = _commands()


def test_every_command_is_found():
    names = {" ".join(c) for c in COMMANDS}
    assert {"extract", "probe", "run", "plot layers", "plot compare", "leaderboard check", "models check"} <= names


@pytest.mark.parametrize("command", [" ".join(c) for c in COMMANDS])
def test_help_has_examples(command):
    out = CliRunner().invoke(app, [*command.split(), "--help"], terminal_width=160).output
    assert "Example" in out, f"`marble {command} --help` has no examples:\n{out}"
