"""docs/encoders.md: its worked example passes `marble models check`, and the same class without num_frames
fails with the message the page shows, naming the missing method."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "encoders.md"


def _example() -> str:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)[0]


def _check(tmp_path, source: str):
    (tmp_path / "my_encoder.py").write_text(source)
    return subprocess.run([sys.executable, "-m", "marble", "models", "check", "my_encoder.py:MyEncoder"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_worked_example_passes_the_check(tmp_path):
    r = _check(tmp_path, _example())
    assert r.returncode == 0 and "all checks passed" in r.stdout, r.stdout + r.stderr


def test_missing_method_is_named(tmp_path):
    broken = re.sub(r"    def num_frames\(self, num_samples\):\n        return num_samples // 160\n\n", "", _example())
    broken = broken.replace("self.num_frames(wav.shape[-1])", "wav.shape[-1] // 160")
    assert "def num_frames" not in broken
    r = _check(tmp_path, broken)
    assert r.returncode == 1
    shown = re.search(r"^(FAIL methods: .*)$", DOC.read_text(), flags=re.M).group(1)
    assert shown in r.stderr, r.stderr


def test_encoder_docstrings():
    from marble.encoders.base import Encoder

    for member in (Encoder, Encoder.hidden_states, Encoder.num_frames, Encoder.prepare, Encoder.identity):
        assert member.__doc__ and len(member.__doc__.split()) > 5, member
