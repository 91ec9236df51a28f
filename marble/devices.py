"""``--device`` strings -> ``torch.device``, with an error that says what this machine has.

One place for every command (extract, probe, pretrain, models check): ``auto`` picks CUDA when
present, else CPU; an unknown name, CUDA on a machine without it, or a GPU index beyond the ones
present raise :class:`DeviceError` (a :class:`~marble.errors.MarbleError`: the CLI prints it and
exits 2) before any work starts.
"""

from __future__ import annotations

import torch

from marble.errors import MarbleError


class DeviceError(MarbleError, ValueError):
    pass


def available() -> str:
    """What this machine offers, for error messages."""
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"cpu, cuda (cuda:0..cuda:{n - 1}), auto"
    return "cpu, auto (no CUDA GPU visible on this machine)"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> CUDA if available else CPU; otherwise a checked ``torch.device``."""
    if isinstance(device, torch.device):
        spec = str(device)
    else:
        spec = (device or "auto").strip()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {spec!r} is not a device name; use one of: {available()}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: CUDA is not available on this machine; use --device cpu "
                              "(or install a CUDA build of torch on a GPU machine)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                              f"use one of: {available()}")
    elif dev.type not in ("cpu", "mps"):
        raise DeviceError(f"--device {spec}: marble runs on cpu or cuda; use one of: {available()}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {spec}: MPS is not available on this machine; use one of: {available()}")
    return dev


def set_threads(n: int | None) -> int:
    """``--threads N``: torch's intra-op CPU threads (None keeps torch's default: ``$OMP_NUM_THREADS`` when set,
    else one per physical core, which spins on a machine shared with other work). Returns the number in use."""
    if n is not None:
        if int(n) < 1:
            raise DeviceError(f"--threads {n}: give at least 1")
        torch.set_num_threads(int(n))
    return torch.get_num_threads()
