"""The per-file check behind ``marble leaderboard check [--submission]`` and ``marble submit``.

One place decides whether a result file may enter the leaderboard: it must read back valid
(schema + consistency with its card and its own sweep, :func:`marble.results.read_result`), its sidecars must
hold (hashes; the test metrics recompute from the per-item outputs, :mod:`marble.results.artifacts`) and, for
a submission, follow the full constrained protocol (:mod:`marble.results.conformance`) and carry the
seal of marble's result writer. Every check
added to those layers reaches both commands through :func:`check_file`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FileCheck:
    """What the check found in one file: ``errors`` make it invalid, ``deviations`` make it a
    reduced (not comparable) run; ``result`` is the parsed result when it read back valid."""

    path: Path
    result: dict | None = None
    errors: list[str] = field(default_factory=list)
    deviations: list[str] = field(default_factory=list)
    #: a valid computed result without the writer's seal (hand-made, or from an older marble): it cannot
    #: show that no number was edited, so it is not accepted as a submission
    unsealed: bool = False

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def accepted(self) -> bool:
        """Fit for a leaderboard submission: valid and the full protocol."""
        return not self.errors and not self.deviations and not self.unsealed

    @property
    def what(self) -> str:
        r = self.result or {}
        return f"{r.get('source')} {r.get('model')} / {r.get('task')} / {r.get('track')}"

    def reasons(self) -> list[str]:
        """``"<file>: <reason>"`` lines for a refused submission (empty when accepted)."""
        out = [e if e.startswith(f"{self.path}: ") else f"{self.path}: {e}" for e in self.errors]
        data = [d for d in self.deviations if d.startswith("incomplete data")]
        sweep = [d for d in self.deviations if not d.startswith("incomplete data")]
        if data:
            out.append(f"{self.path}: not every file of the task was scored ({self.what}); fix or replace the files "
                       "named, re-extract and re-probe: " + "; ".join(data))
        if sweep:
            out.append(f"{self.path}: not a complete constrained-track run ({self.what}); re-run as the protocol "
                       "says (`marble extract` in fp32, `marble probe` without --max-epochs/--layers/--lrs): "
                       + "; ".join(sweep))
        if self.unsealed:
            out.append(f"{self.path}: field 'manifest.content_sha256': missing; `marble probe` puts this content "
                       "hash on every result it writes (it shows edits made after writing, it is not a signature), so "
                       "this file was made or rewritten by other means; submit files exactly as `marble probe` wrote "
                       "them")
        return out


def check_file(path: str | os.PathLike, cards: dict) -> FileCheck:
    """Read and check one result file against ``cards`` (``marble.registry.all_cards()``)."""
    from marble.results import SEAL, ResultError, read_result
    from marble.results.conformance import protocol_deviations

    out = FileCheck(Path(path))
    try:
        out.result = read_result(path, cards=cards)
    except ResultError as e:
        out.errors = [f"{e.path}: {err}" for err in e.errors]
        return out
    from marble.results.artifacts import artifact_errors

    out.errors = [f"{out.path}: {e}" for e in artifact_errors(path, out.result, cards[out.result["task"]])]
    if out.errors:
        return out
    out.deviations = protocol_deviations(out.result, cards[out.result["task"]])
    out.unsealed = out.result["source"] == "ours" and not (out.result.get("manifest") or {}).get(SEAL)
    return out
