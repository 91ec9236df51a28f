"""One writer at a time: an advisory lock file that dies with its process (``flock``), so a killed
command never leaves a stale lock behind. A second command waits for the first and then finds its
work done, rather than writing the same files beside it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Callable


def exclusive(path: Path, on_wait: Callable[[str], None]) -> IO:
    """Hold the lock ``path`` (created if needed; it records the holder's pid). When another process
    holds it, ``on_wait(pid)`` is called and the lock is waited for. Close the returned file to release."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            on_wait(fh.read().strip() or "?")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
    except BaseException:
        fh.close()
        raise
    return fh
