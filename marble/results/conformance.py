"""Does a constrained-track result follow the full protocol, so that it is comparable with the
published numbers and with other submissions?

``marble probe`` lets a user shrink the sweep for a quick look (``--max-epochs``, ``--layers``,
``--lrs``); such a result is valid and honest (:mod:`marble.results.consistency`) but not a
benchmark number. ``protocol_deviations`` lists every way a result departs from its card's
constrained protocol (PROTOCOL §2-§4): the head, the batch size (and micro-batches per step), the
epoch cap, the LR grid, the layer options (every hidden state and the weighted sum), features
extracted under bf16/fp16 autocast instead of fp32, and a result of an earlier version of its task
card (still readable, but computed as that version defined the task). The leaderboard marks such cells and ``marble leaderboard check
--submission`` rejects them.

Semi-constrained and unconstrained results choose their own head and grid by design, and
published (``reported``) rows are taken as published: neither is checked here.
"""

from __future__ import annotations

import dataclasses
import math

WEIGHTED = "weighted"


def _num_states(result: dict) -> int | None:
    """Hidden states of the encoder: from the result manifest, else from the weighted-sum weights
    (which cover states 1..S-1; state 0 is excluded, PROTOCOL §3)."""
    enc = (result.get("manifest") or {}).get("encoder") or {}
    if isinstance(enc.get("num_states"), int):
        return enc["num_states"]
    ws = result.get("weighted_sum") or {}
    if isinstance(ws.get("weights"), list) and ws["weights"]:
        return len(ws["weights"]) + 1
    return None


def _same_lrs(a, b) -> bool:
    return len(a) == len(b) and all(math.isclose(float(x), float(y), rel_tol=1e-9) for x, y in zip(sorted(a), sorted(b)))


def _fmt_lrs(lrs) -> str:
    return "{" + ", ".join(f"{float(x):g}" for x in sorted(lrs)) + "}"


def protocol_deviations(result: dict, card) -> list[str]:
    """Human-readable deviations of ``result`` from ``card``'s constrained protocol (empty: complete),
    led by any split whose scored files are not the whole split (:mod:`marble.results.accounting`),
    which makes a result of any track incomplete."""
    from marble.results.accounting import incompleteness

    out: list[str] = [f"incomplete data: {d}" for d in incompleteness(result, card)]
    version = result.get("task_version")
    if result.get("source") == "ours" and isinstance(version, int) and version < card.version:
        out.append(f"task card version {version}, the card is now version {card.version}: computed as an earlier "
                   f"edition of the task defined it (docs/fidelity.md); re-run the probe")
    if (result.get("manifest") or {}).get("cache_verified") is False:
        out.append("cache not verified: probed with --no-verify, so nothing shows the features scored are the ones "
                   "extracted (probe again without --no-verify)")
    if result.get("source") != "ours" or result.get("track") != "constrained":
        return out
    tr = card.training
    training = result.get("training") or {}

    head = result.get("head") or {}
    want = dataclasses.asdict(card.head)
    diff = [k for k in ("kind", "hidden", "layers", "dropout") if k in head and head[k] != want[k]]
    if diff:
        out.append("head " + ", ".join(f"{k}={head[k]!r} (card: {want[k]!r})" for k in diff))

    if "batch_size" in training and training["batch_size"] != tr.batch_size:
        out.append(f"batch size {training['batch_size']} (card: {tr.batch_size})")
    if training.get("accumulate", 1) != tr.accumulate and (version is None or version >= card.version):
        out.append(f"{training.get('accumulate', 1)} micro-batches per optimiser step (card: {tr.accumulate})")
    if "max_epochs" in training and training["max_epochs"] != tr.max_epochs:
        out.append(f"max epochs {training['max_epochs']} (card: {tr.max_epochs})")
    if training.get("chunks_per_epoch") is not None and training.get("chunks_per_track") is not None:
        want_chunks = training["chunks_per_track"] * training.get("n_train_tracks", 0)
        if training["chunks_per_epoch"] != want_chunks:
            out.append(f"chunks per epoch {training['chunks_per_epoch']} (protocol: {training['chunks_per_track']} "
                       f"per training track = {want_chunks})")

    sweep = result.get("sweep") or []
    lrs = sorted({float(r["lr"]) for r in sweep})
    if not _same_lrs(lrs, tr.learning_rates):
        out.append(f"learning rates {_fmt_lrs(lrs)} (card: {_fmt_lrs(tr.learning_rates)})")

    layers = {r["layer"] for r in sweep}
    S = _num_states(result)
    wanted = set(range(S)) | ({WEIGHTED} if S > 1 else set()) if S is not None else None
    if wanted is not None and layers != wanted:
        missing = sorted(wanted - layers, key=str)
        out.append(f"layers: {len(missing)} of {len(wanted)} layer options not probed "
                   f"({', '.join(map(str, missing[:6]))}{', ...' if len(missing) > 6 else ''})")
    elif wanted is None and WEIGHTED not in layers:
        out.append("layers: no weighted-sum probe")

    dtype = (result.get("manifest") or {}).get("compute_dtype")
    if dtype not in (None, "fp32"):
        out.append(f"features extracted with {dtype} autocast (protocol: fp32; re-extract with --dtype fp32)")
    if (result.get("manifest") or {}).get("tf32_matmul"):
        out.append("features extracted with TF32 matmuls (protocol: full fp32 matmuls; re-extract without --tf32)")
    return out


def is_complete(result: dict, card) -> bool:
    return not protocol_deviations(result, card)
