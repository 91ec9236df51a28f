"""What every bench script measures the same way: wall time, process CPU time (this process and its
waited-for children, e.g. DataLoader decode workers) and the peak GPU memory of a block of work.

On a shared machine wall time follows the load of others; process CPU time does not (much), so the
CPU figures and the CPU cost model (``marble run --plan``) use it. On a GPU the wall time is the figure.
"""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measured:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_gpu_mb: float | None = None

    def as_dict(self) -> dict:
        d = {"wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3)}
        if self.peak_gpu_mb is not None:
            d["peak_gpu_mb"] = round(self.peak_gpu_mb, 1)
        return d


@contextmanager
def measure(device="cpu"):
    """``with measure(dev) as m: ...`` fills ``m`` when the block ends (the device queue drained first)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    m = Measured()
    w0, c0 = time.perf_counter(), cpu_seconds()
    try:
        yield m
    finally:
        sync(dev)
        m.wall_s, m.cpu_s = time.perf_counter() - w0, cpu_seconds() - c0
        if dev.type == "cuda":
            m.peak_gpu_mb = torch.cuda.max_memory_allocated(dev) / 2**20


class PhaseClock:
    """Time spent inside named functions while a block runs: ``PhaseClock({"decoding": (module, "name")})``
    wraps each function found (reentrant calls counted once) and restores it on exit; a target that does not
    exist (the code moved) is reported in ``missing`` rather than failing the measurement."""

    def __init__(self, targets: dict[str, list[tuple[object, str]]], device="cpu"):
        self.targets, self.device = targets, torch.device(device)
        self.wall = {k: 0.0 for k in targets}
        self.cpu = {k: 0.0 for k in targets}
        self.missing: list[str] = []
        self._saved: list[tuple[object, str, object]] = []
        self._depth = 0

    def _wrap(self, phase: str, fn):
        clock = self

        def timed(*a, **k):
            if clock._depth:
                return fn(*a, **k)
            clock._depth += 1
            sync(clock.device)
            w, c = time.perf_counter(), cpu_seconds()
            try:
                return fn(*a, **k)
            finally:
                sync(clock.device)
                clock.wall[phase] += time.perf_counter() - w
                clock.cpu[phase] += cpu_seconds() - c
                clock._depth -= 1

        return timed

    def __enter__(self):
        for phase, places in self.targets.items():
            for owner, attr in places:
                fn = getattr(owner, attr, None)
                if fn is None:
                    self.missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
                    continue
                self._saved.append((owner, attr, fn))
                setattr(owner, attr, self._wrap(phase, fn))
        return self

    def __exit__(self, *exc):
        for owner, attr, fn in reversed(self._saved):
            setattr(owner, attr, fn)
        self._saved.clear()
        return False
