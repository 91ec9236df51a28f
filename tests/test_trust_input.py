"""Trust, round 3 (issue 22), bad input: nonsense settings in a task card or a semi-constrained config are refused
when they load, and malformed metadata tables give an ``error:`` line instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from marble.registry import CardError, load_card
from marble.testing.fixtures import write_folder_dataset

HERE = Path(__file__).parent
PLUGIN = str(HERE / "extract_plugin.py") + ":ToyEncoder"
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("factor", ["0.0", "2.0", "1.0", "-0.5", "nan"])
def test_a_scheduler_factor_outside_0_1_is_refused(tmp_path, factor):
    """Issue 22 partial: `scheduler_factor` 0.0 (the LR drops to 0 on the first plateau) or 2.0 (it doubles) was
    accepted in a card."""
    from marble.probe.config import ConfigError, load_config
    from marble.registry import get_card
    from tests.test_registry import MINIMAL

    p = tmp_path / "bad.toml"
    p.write_text(MINIMAL.format(id="bad") + f"\n[training]\nscheduler_factor = {factor}\n")
    with pytest.raises(CardError, match=rf"{p}: key 'training.scheduler_factor': .* strictly between 0 and 1"):
        load_card(p)
    cfg = tmp_path / "head.toml"
    cfg.write_text(f"[head]\nhidden = [16]\ndropout = 0.1\n\n[training]\nscheduler_factor = {factor}\n")
    with pytest.raises(ConfigError, match="scheduler_factor .* strictly between 0 and 1"):
        load_config(cfg, get_card("gtzan"))


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.splitlines()[0] + "\n", "the table has a header but no rows"),
    (lambda t: t.replace("audio/train_000.wav", "audio/tr\x00ain_000.wav"), "holds a NUL byte"),
])
def test_metadata_that_crashed_extract_is_an_error_line(tmp_path, edit, expected):
    """Issue 22 partials: a metadata CSV with only a header (a crash while merging an empty split) and a NUL byte
    in a metadata path (``ValueError: embedded null byte``) were tracebacks."""
    card = write_folder_dataset(tmp_path / "data", per_split=2)
    meta = tmp_path / "data" / "mydata" / "metadata.csv"
    meta.write_text(edit(meta.read_text()))
    r = subprocess.run([sys.executable, "-m", "marble", "extract", "--model", PLUGIN, "--task", str(card), "--data-dir",
                        str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                        "--num-workers", "0", "-q"], capture_output=True, text=True, timeout=300, env=ENV)
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out
    assert out.strip().startswith("error:") and str(meta) in out and expected in out, out
