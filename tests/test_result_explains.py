"""Results that explain themselves: the manifest records the command line and the versions of python, torch,
transformers, numpy and marble; every score carries its scale; a folder of user-task results gets a leaderboard
of those tasks only."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata

import marble
from marble.demo import TASK_ID, synthesize
from marble.results import read_result
from marble.testing.fixtures import write_gtzan

QUICK = ["--max-epochs", "1", "--layers", "0", "--lrs", "1e-3", "--num-workers", "0", "-q"]


def _marble(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "marble", *args], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_manifest_records_command_and_versions_and_scores_their_scale(tmp_path):
    write_gtzan(tmp_path / "data", per_split=2, seconds=1.5)
    _marble("run", "--model", "handcrafted", "--tasks", "gtzan", "--allow-partial", *QUICK, cwd=tmp_path)
    r = read_result(tmp_path / "results" / "handcrafted" / "gtzan" / "constrained.json")
    m = r["manifest"]
    assert m["command"] == "marble run --model handcrafted --tasks gtzan --allow-partial " + " ".join(QUICK)
    assert m["versions"] == {"python": platform.python_version(), "marble": marble.__version__,
                             "torch": metadata.version("torch"), "transformers": metadata.version("transformers"),
                             "numpy": metadata.version("numpy")}
    assert r["scales"] == {"accuracy": {"unit": "ratio", "table_factor": 100}}


def test_user_tasks_only_leaderboard_has_only_their_columns(tmp_path):
    data_dir, tasks_dir = synthesize(tmp_path, clips_per_class=6, seed=0, max_epochs=2)
    _marble("run", "--model", "handcrafted", "--tasks", TASK_ID, "--tasks-dir", str(tasks_dir),
            "--data-dir", str(data_dir), *QUICK, cwd=tmp_path)
    out = _marble("leaderboard", "--format", "csv", "--tasks-dir", str(tasks_dir), cwd=tmp_path).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("handcrafted,ours,")  # no published rows
    header = lines[0].split(",")
    assert all(h in ("model", "source", "track", "marble_score", "protocol_complete", "marble_top_group", "marble_tie")
               or h.startswith(TASK_ID) for h in header), header
    # with a built-in task beside it, the published rows come back
    write_gtzan(tmp_path / "g", per_split=2, seconds=1.5)
    _marble("run", "--model", "handcrafted", "--tasks", "gtzan", "--data-dir", str(tmp_path / "g"), "--allow-partial",
            *QUICK, cwd=tmp_path)
    out = _marble("leaderboard", "--format", "csv", "--tasks-dir", str(tasks_dir), cwd=tmp_path).stdout
    assert ",reported," in out
