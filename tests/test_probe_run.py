"""``marble.probe.run.run_probe``: clip-only options given to a frame task are refused, not dropped."""

from __future__ import annotations

import pytest

from marble.probe.run import run_probe
from marble.registry import get_card


@pytest.mark.parametrize("option", [{"seeds": 5}, {"seeds": 3}, {"checkpoint_every": 1}, {"fresh": True},
                                    {"seeds_sweep": True}, {"config": "head.toml"}])
def test_frame_task_refuses_clip_options(option, tmp_path):
    with pytest.raises(ValueError, match="apply to clip tasks only"):
        run_probe(get_card("gtzan-beat"), "m", cache_dir=tmp_path, results_dir=tmp_path, **option)
