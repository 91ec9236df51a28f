"""`make test` and `make test-quick` (issue 23 item 8): CI's `.ci/run` calls the README's test command, the README
says how long each target takes, and the quick target leaves out the slow tests that tests/conftest.py names."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _section() -> str:
    return (ROOT / "README.md").read_text().split("## Run the tests", 1)[1].split("\n## ", 1)[0]


def test_ci_runs_the_readme_test_command():
    block = _section().split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands[0] == "make test"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert ci[-1] == commands[0]


def test_readme_says_how_long_each_target_takes():
    text = " ".join(_section().split())
    assert re.search(r"`make test` .*?\b\d+ min", text), text
    assert re.search(r"`make test-quick` .*?\b\d+ (s|min)\b", text), text


def test_quick_target_leaves_out_the_slow_tests():
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^test-quick:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert rule and '-m "not slow"' in rule.group(1)
    slow = runpy.run_path(str(ROOT / "tests" / "conftest.py"))["SLOW_FILES"]
    present = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    assert slow <= present, f"tests/conftest.py names files that do not exist: {sorted(slow - present)}"
