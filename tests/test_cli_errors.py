"""What a user meets on a mistake: one `error:` line naming the file/fix, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args, expected",
    [
        (["probe", "--model", "handcrafted", "--task", "gtzn"], "unknown task 'gtzn'. Did you mean 'gtzan'?"),
        (["probe", "--model", "handcrafted", "--task", "gtzan", "--cache-dir", "{tmp}/none"],
         "no feature cache for model 'handcrafted' and task 'gtzan'; run `marble extract"),
        (["extract", "--model", "handcrafted", "--task", "gtzan", "--data-dir", "{tmp}/none", "--cache-dir", "{tmp}/c"],
         "none of the 442 files found"),
        (["leaderboard", "check", "{tmp}/bad.json"], "not valid JSON"),
        (["extract", "--model", "handcrafted", "--task", "gtzan", "--device", "tpu"], "--device 'tpu' is not a device name"),
        (["probe", "--model", "handcrafted", "--task", "gtzan", "--device", "gpu0"], "--device 'gpu0' is not a device name"),
        (["models", "check", "handcrafted", "--device", "xla"], "--device xla: marble runs on cpu or cuda"),
        (["pretrain", "run", "--audio-dir", "{tmp}", "--out", "{tmp}/run", "--device", "tpu"],
         "--device 'tpu' is not a device name"),
    ],
)
def test_user_errors_exit_2_without_traceback(tmp_path, args, expected):
    (tmp_path / "bad.json").write_text("{not json")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run([sys.executable, "-m", "marble", *args], capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert expected in " ".join(out.split()), out
    assert "Traceback" not in out


def test_cuda_requests_are_checked_against_the_machine(monkeypatch):
    import torch

    from marble.devices import DeviceError, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="CUDA is not available on this machine; use --device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"has 2 CUDA device\(s\); use one of: cpu, cuda \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
