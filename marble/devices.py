"""``--device`` strings -> ``torch.device``, with an error that says what this machine has.

One place for every command (extract, probe, pretrain, models check): ``auto`` picks CUDA when
present, else CPU; an unknown name, CUDA on a machine without it, or a GPU index beyond the ones
present raise :class:`DeviceError` (a :class:`~marble.errors.MarbleError`: the CLI prints it and
exits 2) before any work starts.
"""

from __future__ import annotations

from contextlib import contextmanager

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


_KEPT: list = []


def keep_freed_memory() -> bool:
    """On glibc (Linux), keep memory blocks of up to 32 MB that the process frees for its next allocations, instead
    of returning them to the system and faulting fresh zeroed pages in again for each new tensor: a CPU training
    step of a MUSDB head allocates and frees ~20 tensors of ~7 MB, and those page faults were ~15 % of its time
    (bench/README.md). Once per process (a mallopt setting: the process keeps up to its peak heap instead of
    shrinking back); False where the C library is not glibc, which then keeps its own policy."""
    if not _KEPT:
        import ctypes

        ok = False
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            ok = bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
        except (OSError, AttributeError):
            pass
        _KEPT.append(ok)
    return _KEPT[0]


@contextmanager
def matmul_precision(tf32: bool = False):
    """fp32 matrix products for the block: full IEEE fp32 (PROTOCOL §2: torch 1.13, which ran the reference,
    computed matmuls in full fp32) or, with ``tf32``, TensorFloat-32 (a speed option the cache manifest records
    and the submission check flags). Set for CUDA (cuBLAS) and the CPU (oneDNN, which also offers reduced-precision
    fp32 matmuls); cuDNN convolutions keep torch's setting (TF32 by default, as in torch 1.13). The caller's
    settings are restored after, through the same (new) torch API, so no legacy/new mix is created."""
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    before = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        yield
    finally:
        for b, prec in zip(backends, before):
            b.fp32_precision = prec
