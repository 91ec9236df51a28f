"""The per-model work of a MUSDB sweep on several CPU cores.

A sweep's source models are independent of one another: each trains on the micro-batch every model shares and
reconstructs the validation tracks on its own. Their training steps and reconstructions run in a pool of
threads (torch releases the GIL inside its kernels), each torch operation single-threaded, so that every model's
numbers are bit for bit those of a one-thread run whatever the number of workers (tests/test_separation.py).
Splitting one large operation across torch's intra-op threads, as the models did before, rounds the elements at
the split points differently (vectorised body against scalar tail), so the results depended on the thread count;
single-threaded operations on several models at once use the cores at least as well for these small heads and
slices of the Wiener EM. On a GPU the device runs the models' kernels: one worker.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch


class ModelWorkers:
    """``map(fn, items)`` over models in ``workers`` threads (in order; one worker runs the plain loop), with torch's
    intra-op threads set to 1 meanwhile; ``rng``: the lock a step holds while it draws from torch's global
    generator (dropout), which the threads share."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self.rng = threading.Lock()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="marble-model") if self.workers > 1 else None

    @classmethod
    def for_device(cls, device, workers: int | None = None) -> "ModelWorkers":
        """One worker per CPU thread torch was given (``--threads``), or ``workers``; one on other devices."""
        if torch.device(device).type != "cpu":
            return cls(1)
        return cls(workers if workers is not None else torch.get_num_threads())

    def map(self, fn, items) -> list:
        """``[fn(x) for x in items]``, in threads; each thread runs under the caller's grad mode (thread-local in
        torch: a worker would otherwise record graphs under the caller's ``no_grad``)."""
        items = list(items)
        with single_threaded_ops():
            if self._pool is None or len(items) < 2:
                return [fn(x) for x in items]
            grad = torch.is_grad_enabled()

            def run(x):
                with torch.set_grad_enabled(grad):
                    return fn(x)

            return list(self._pool.map(run, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self):
        self.close()


def each(fn, items, workers: ModelWorkers | None = None) -> list:
    """``[fn(x) for x in items]`` in ``workers`` (default: one, the plain loop with single-threaded operations)."""
    return (workers or ModelWorkers(1)).map(fn, items)


@contextmanager
def single_threaded_ops():
    """torch's intra-op CPU threads set to 1 for the block (the encoder and everything else keep theirs)."""
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)
