"""Ranks and process groups: sharding extraction work over ranks, data-parallel training (pretraining, fine-tuning).

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` set) a torch.distributed process group is
opened (gloo on CPU, nccl on CUDA) and used for barriers. Ranks started separately on several
machines that share only the cache folder (``RANK``/``WORLD_SIZE`` set by hand or by a job array,
no ``MASTER_ADDR``) work too: the cache folder is the only rendezvous the pipeline needs, and the
barriers fall back to waiting for files. Unit ``k`` of a split belongs to rank ``k % world``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable


@dataclass
class Shard:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: bool = False  # a torch.distributed process group is open

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, unit: int) -> bool:
        return unit % self.world == self.rank

    def barrier(self) -> None:
        if self.group:
            import torch.distributed as dist

            dist.barrier()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def from_env(device: str = "cpu") -> Shard:
    """The shard of this process. Opens a process group when launched by torchrun (or when one is
    already open); otherwise rank/world come from the environment alone (default 0/1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), True)
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    local = _env_int("LOCAL_RANK", 0)
    if world > 1 and os.environ.get("MASTER_ADDR") and dist.is_available():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        timeout = timedelta(seconds=float(os.environ.get("MARBLE_DIST_TIMEOUT_S", 7 * 24 * 3600)))
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout)
        return Shard(rank, world, local, True)
    return Shard(rank, world, local, False)


def open_group(device: str, error: type[Exception], command: str) -> Shard:
    """The shard of a data-parallel training process (pretraining, fine-tuning): a process group under torchrun,
    else rank 0 of 1. RANK/WORLD_SIZE without MASTER_ADDR (ranks that could not all-reduce) raise ``error``
    naming the torchrun form of ``command`` (``"pretrain run"``)."""
    try:
        shard = from_env(device)
    except ValueError as e:
        raise error(f"{e}; launch data-parallel training with torchrun") from None
    if shard.world > 1 and not shard.group:
        raise error(f"RANK={shard.rank} WORLD_SIZE={shard.world} but no process group (MASTER_ADDR unset): "
                    f"data-parallel training needs one; launch with `torchrun --nproc-per-node N -m marble {command} "
                    "...` or unset RANK/WORLD_SIZE")
    return shard


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float | None = None, poll_s: float = 0.5) -> None:
    """Poll ``predicate`` (a file-system check) until true; raise TimeoutError naming ``what``."""
    if timeout_s is None:
        timeout_s = float(os.environ.get("MARBLE_WAIT_TIMEOUT_S", 7 * 24 * 3600))
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
