"""Ctrl-C (issue 23 item 2): `marble probe` and `marble run` stop with "interrupted; N of M tasks finished ..., rerun
the same command to resume" and exit 130; the rerun keeps the finished task and says it resumes the interrupted
sweep (that a resumed sweep equals an uninterrupted one is test_probe_run's SIGKILL test). Real processes, a real
SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from marble.registry import get_card

from probe_helpers import synth_split, write_cache

MODEL = "toy/enc-v1"


def _caches(root):
    rng = np.random.default_rng(0)
    # gtzan: tiny, done in seconds; emo: big enough that its sweep is still running when Ctrl-C comes
    write_cache(root, MODEL, get_card("gtzan"), {s: synth_split(n, 10, 3, 8, rng, prefix=s[0], signal_state=2)
                                                 for s, n in (("train", 40), ("valid", 20), ("test", 20))})
    write_cache(root, MODEL, get_card("emo"), {s: synth_split(n, 2, 3, 64, rng, prefix=s[0], signal_state=2,
                                                              prediction="regression", strength=0.3)
                                               for s, n in (("train", 1500), ("valid", 300), ("test", 300))})


@pytest.mark.parametrize("command", ["probe", "run"])
def test_ctrl_c_says_what_finished_and_the_rerun_says_what_it_resumed(tmp_path, command):
    _caches(tmp_path / "cache")
    res = tmp_path / "res"

    def cmd(results):
        return [sys.executable, "-m", "marble", command, "--model", MODEL, "--tasks", "gtzan,emo", "--cache-dir",
                str(tmp_path / "cache"), "--results-dir", str(results), "--max-epochs", "12", "--layers", "1,2",
                "--lrs", "1e-3", *(["--checkpoint-every", "1"] if command == "probe" else [])]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    state = res / "toy__enc-v1" / "emo" / "constrained.state.pt"
    with open(tmp_path / "err", "w") as err:
        # a terminal's Ctrl-C reaches a process whose SIGINT is at its default; a test run started in the background
        # of a non-interactive shell (`make test &`) inherits SIGINT ignored, which Python then keeps ignoring
        proc = subprocess.Popen(cmd(res), stdout=subprocess.DEVNULL, stderr=err, env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 300
        while not state.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, (tmp_path / "err").read_text()
    err = " ".join((tmp_path / "err").read_text().split())
    assert "interrupted; 1 of 2 tasks finished" in err and "rerun the same command to resume" in err, err
    assert "Traceback" not in err
    assert (res / "toy__enc-v1" / "gtzan" / "constrained.json").is_file() and state.exists()

    again = subprocess.run(cmd(res), capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    out = " ".join(again.stderr.split())
    assert "gtzan: result kept" in out
    assert f"emo: resuming the sweep saved in {state}" in out, out
    assert (res / "toy__enc-v1" / "emo" / "constrained.json").is_file() and not state.exists()
