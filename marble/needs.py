"""What a task needs beyond the core install, checked before any work (``marble probe``/``run``/``extract``) and
shown by ``marble tasks``: the optional packages its metrics import (``marble.metrics.NEEDS``) and the decoders its
audio files need (MUSDB's ``.stem.mp4`` layout: stempeg and the ffmpeg program). A missing one is one error line
naming the extra that installs it, instead of an ImportError after minutes of training."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

from marble.errors import MarbleError

#: optional package -> the extra of pyproject.toml that installs it
EXTRA_OF = {"museval": "separation", "musdb": "separation", "stempeg": "separation"}
#: audio file suffix -> (package, program) that decode it (marble.separation.stems reads stems with stempeg)
DECODERS = {".stem.mp4": ("stempeg", "ffmpeg")}


class MissingDependencyError(MarbleError, ImportError):
    """An optional package or program a task needs is not installed."""


@dataclass(frozen=True)
class Need:
    what: str  # a package (import name) or a program
    kind: str  # package | program
    why: str

    def present(self) -> bool:
        if self.kind == "program":
            return shutil.which(self.what) is not None
        try:
            return importlib.util.find_spec(self.what) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
            return False

    def fix(self) -> str:
        if self.kind == "program":
            return f"install the {self.what} program (e.g. apt-get install {self.what})"
        extra = EXTRA_OF.get(self.what)
        return f"pip install 'marble-benchmark[{extra}]'" if extra else f"pip install {self.what}"


def needs(card, items: dict | None = None, *, metrics: bool = True) -> list[Need]:
    """What ``card`` needs: its metrics' packages (unless ``metrics=False``: extraction scores nothing), and, given
    its items (split -> Items), their decoders."""
    from marble.metrics import NEEDS

    out: dict[str, Need] = {}
    for name in card.metrics.names if metrics else ():
        if name in NEEDS:
            mod = NEEDS[name]
            prev = out.get(mod)
            out[mod] = Need(mod, "package", f"{prev.why}, {name}" if prev else f"metric {name}")
    for split_items in (items or {}).values():
        for it in split_items:
            for suffix, (package, program) in DECODERS.items():
                if str(it.path).endswith(suffix):
                    out.setdefault(package, Need(package, "package", f"decoding {suffix} files"))
                    out.setdefault(program, Need(program, "program", f"decoding {suffix} files (through {package})"))
    return list(out.values())


def extras(card) -> list[str]:
    """The extras of pyproject.toml a task needs whatever its data layout (``marble tasks``): its metrics'."""
    return sorted({EXTRA_OF[n.what] for n in needs(card) if n.what in EXTRA_OF})


def check(cards, items: dict | None = None, *, metrics: bool = True) -> None:
    """Raise one :class:`MissingDependencyError` listing what every task in ``cards`` needs and lacks
    (``items``: task id -> split -> Items, for the decoders), before any work."""
    lines = []
    for card in cards:
        missing = [n for n in needs(card, (items or {}).get(card.id), metrics=metrics) if not n.present()]
        if missing:
            lines.append(f"task {card.id} needs " + "; ".join(f"{n.what} ({n.why}): {n.fix()}" for n in missing))
    if lines:
        raise MissingDependencyError("; ".join(lines))


__all__ = ["Need", "needs", "extras", "check", "MissingDependencyError", "EXTRA_OF", "DECODERS"]
