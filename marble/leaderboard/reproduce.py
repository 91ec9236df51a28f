"""``marble reproduce``: re-run a submitted model's probes from one's own feature cache and compare.

The re-run is ``marble probe`` itself (a subprocess, so it is exactly the command users run), with the
settings the submitted result records: its track, seed, number of seeds and, for a reduced run, its
epoch cap, layers and learning rates; a semi-constrained result's head and grid are written back into the
``--config`` file they came from (:func:`semi_constrained_config`); an unconstrained result is re-run by
``marble finetune`` with the method, seed and hyper-parameters it records (:func:`finetune_config`). The report gives per task the submitted and re-computed task
scores (x100 / dB) and their difference, and the selected configuration of each.

Nothing a submission brings is ever loaded: the model to load (or whose cache to read) is the reviewer's
``--model SPEC`` only, never the entry's name (a name like ``models/x@v1/payload.py:Evil`` would import a file
the pull request added), and each re-run must come from the encoder the submission records (its weights hash,
else its identity, :func:`encoder_mismatch`).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from marble.errors import MarbleError
from marble.leaderboard.repo import MODEL_JSON, MODELS, read_model_json
from marble.results.selection import describe


@dataclass
class Reproduced:
    task: str
    track: str
    submitted: float | None
    reproduced: float | None
    submitted_selected: str = ""
    reproduced_selected: str = ""
    metric_diffs: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def score_diff(self) -> float | None:
        if self.submitted is None or self.reproduced is None:
            return None
        return self.reproduced - self.submitted


def find_entry(path: str | os.PathLike) -> Path:
    """``REPO/models/<entry>``, also given as ``REPO/<entry>``."""
    p = Path(path)
    if (p / MODEL_JSON).is_file():
        return p
    alt = p.parent / MODELS / p.name
    if (alt / MODEL_JSON).is_file():
        return alt
    raise MarbleError(f"{p}: not a leaderboard entry (no {MODEL_JSON}); give LEADERBOARD_REPO/models/<model>@<revision>")


def probe_args(result: dict, card) -> list[str]:
    """The ``marble probe`` options that re-create ``result``'s run (beyond model, task, folders)."""
    args = ["--track", result["track"], "--seed", str((result.get("manifest") or {}).get("seed", card.training.seed))]
    seeds = result.get("seeds")
    if seeds and seeds.get("n", 1) > 1:
        args += ["--seeds", str(seeds["n"])]
    training = result.get("training") or {}
    if seeds and seeds.get("n", 1) > 1 and training.get("seed_repeat") == "sweep":
        args.append("--seeds-sweep")  # every seed ran the whole sweep (marble.probe.clip records it)
    if result["track"] == "semi-constrained":
        return args  # head and grid: the --config file of semi_constrained_config
    if result["track"] == "constrained":
        if training.get("max_epochs") not in (None, card.training.max_epochs):
            args += ["--max-epochs", str(training["max_epochs"])]
        sweep = result.get("sweep") or []
        lrs = sorted({float(r["lr"]) for r in sweep})
        if lrs and not (len(lrs) == len(card.training.learning_rates) and
                        all(math.isclose(a, b) for a, b in zip(lrs, sorted(card.training.learning_rates)))):
            args += ["--lrs", ",".join(f"{x:g}" for x in lrs)]
        from marble.results.conformance import protocol_deviations

        if any(d.startswith("layers") for d in protocol_deviations(result, card)):
            args += ["--layers", ",".join(map(str, _sweep_layers(result)))]
    return args


def _sweep_layers(result: dict) -> list:
    return sorted({r["layer"] for r in result.get("sweep") or []},
                  key=lambda x: (isinstance(x, str), x if isinstance(x, int) else 0))


def semi_constrained_config(result: dict) -> str:
    """The ``marble probe --config`` TOML that re-creates a semi-constrained result's head and grid, from
    what the result records (its ``head``, ``training`` and the layers of its sweep); the submitter's own
    file is not part of a submission."""
    import json

    head, training = result.get("head") or {}, result.get("training") or {}
    if not isinstance(head.get("hidden"), list) or not isinstance(head.get("dropout"), (int, float)):
        raise MarbleError(f"{result.get('task')}/semi-constrained: the result records no head.hidden/head.dropout, "
                          "so its head cannot be re-created")
    lines = ["[head]", f"hidden = {json.dumps([int(h) for h in head['hidden']])}",
             f"dropout = {float(head['dropout'])!r}", "", "[training]"]
    from marble.probe.config import TRAIN_KEYS

    for key, kind in TRAIN_KEYS.items():
        if key in training and key != "layers":  # the layers come from the sweep rows
            v = training[key]
            v = [float(x) for x in v] if kind is list else kind(v)
            lines.append(f"{key} = {json.dumps(v)}")
    layers = _sweep_layers(result)
    if layers:
        lines.append(f"layers = {json.dumps(layers)}")
    return "\n".join(lines) + "\n"


def encoder_mismatch(submitted: dict, rerun: dict) -> str | None:
    """Why the re-run's encoder is not the submitted one (None when it is): the weights hash when the
    submission records one, else the whole identity but its display name (a reviewer's local folder may
    carry another name than the hub id the submitter used)."""
    a = (submitted.get("manifest") or {}).get("encoder") or {}
    b = (rerun.get("manifest") or {}).get("encoder") or {}
    if a.get("weights_sha256"):
        if a["weights_sha256"] != b.get("weights_sha256"):
            return (f"weights sha256 {str(b.get('weights_sha256'))[:12]}..., the submission records "
                    f"{a['weights_sha256'][:12]}...")
        return None
    same = lambda d: {k: v for k, v in d.items() if k != "name"}  # noqa: E731
    if same(a) != same(b):
        diff = sorted(k for k in set(same(a)) | set(same(b)) if a.get(k) != b.get(k))
        return f"encoder identity differs from the submission's in {', '.join(diff)}"
    return None


def finetune_config(result: dict) -> str:
    """The ``marble finetune --config`` TOML that re-creates an unconstrained result's run, from the
    hyper-parameters it records (``training.finetune``, :func:`marble.finetune.config.to_toml`)."""
    from marble.finetune.config import KEYS, to_toml

    rec = (result.get("training") or {}).get("finetune")
    if not isinstance(rec, dict) or not set(KEYS) <= set(rec):
        raise MarbleError(f"{result.get('task')}/unconstrained: the result records no complete training.finetune "
                          "table (it was not written by `marble finetune`), so its run cannot be re-created")
    return to_toml(rec)


def reproduce(entry: str | os.PathLike, *, tasks: list[str] | None = None, model: str | None = None,
              cache_dir: str | os.PathLike = "cache", out: str | os.PathLike | None = None, device: str = "cpu",
              data_dir: str | os.PathLike | None = None, tasks_dir: str | os.PathLike | None = None,
              cards: dict | None = None) -> list[Reproduced]:
    from marble.leaderboard.table import _cell
    from marble.registry import all_cards
    from marble.results import ResultError, read_result

    if not model:
        raise MarbleError("reproduce needs --model SPEC: the encoder you trust (hub id, checkpoint folder, plug-in "
                          "file.py:Class) whose feature cache to probe; a submitted entry's name is never loaded")
    folder = find_entry(entry)
    info = read_model_json(folder / MODEL_JSON)
    if info["source"] != "ours":
        raise MarbleError(f"{folder}: published numbers (source: reported) have no run to reproduce")
    cards = cards or all_cards(tasks_dir)
    files = sorted(folder.glob("*/*.json"))
    have = sorted({f.parent.name for f in files})
    if tasks:
        unknown = [t for t in tasks if t not in have]
        if unknown:
            raise MarbleError(f"{folder}: no submitted result for task(s) {', '.join(unknown)} (have: {', '.join(have)})")
        files = [f for f in files if f.parent.name in tasks]
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="marble-reproduce-")
        out = tmp.name
    rows = []
    try:
        for f in files:
            sub = read_result(f, cards=cards)
            card = cards[sub["task"]]
            if sub["track"] == "unconstrained":  # fine-tuned on the audio: `marble finetune` with the recorded settings
                config = Path(out) / f"{sub['task']}.finetune.toml"
                config.parent.mkdir(parents=True, exist_ok=True)
                config.write_text(finetune_config(sub))
                cmd = [sys.executable, "-m", "marble", "finetune", "--model", model, "--name", info["name"],
                       "--task", sub["task"], "--method", str((sub.get("training") or {}).get("method")),
                       "--results-dir", str(out), "--device", device, "--fresh", "-q", "--config", str(config),
                       "--seed", str((sub.get("manifest") or {}).get("seed", card.training.seed))]
            else:
                cmd = [sys.executable, "-m", "marble", "probe", "--model", model, "--name", info["name"],
                       "--task", sub["task"], "--cache-dir", str(cache_dir), "--results-dir", str(out),
                       "--device", device, "--fresh", *probe_args(sub, card)]
            if sub["track"] == "semi-constrained":
                config = Path(out) / f"{sub['task']}.semi-constrained.toml"
                config.parent.mkdir(parents=True, exist_ok=True)
                config.write_text(semi_constrained_config(sub))
                cmd += ["--config", str(config)]
            if data_dir is not None:
                cmd += ["--data-dir", str(data_dir)]
            if tasks_dir is not None:
                cmd += ["--tasks-dir", str(tasks_dir)]
            row = Reproduced(sub["task"], sub["track"], _cell(sub, card, None).score, None, describe(sub))
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
                row.error = lines[-1] if lines else f"marble probe exited {p.returncode}"
                rows.append(row)
                continue
            from marble.results import result_path

            try:
                new = read_result(result_path(out, info["name"], sub["task"], sub["track"]), cards=cards)
            except ResultError as e:
                row.error = str(e)
                rows.append(row)
                continue
            mismatch = encoder_mismatch(sub, new)
            if mismatch:
                row.error = f"--model {model} is not the submitted encoder ({mismatch})"
                rows.append(row)
                continue
            row.reproduced = _cell(new, card, None).score
            row.reproduced_selected = describe(new)
            from marble.metrics import SCALE

            row.metric_diffs = {m: (new["test"][m] - sub["test"][m]) * SCALE[m] for m in sub["test"]
                                if isinstance(sub["test"].get(m), (int, float)) and isinstance(new["test"].get(m), (int, float))}
            rows.append(row)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return rows


def format_report(rows: list[Reproduced]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"{'task':<20} {'track':<16} {'submitted':>10} {'reproduced':>11} {'diff':>8}  selected (submitted -> reproduced)"]
    for r in rows:
        diff = "-" if r.score_diff is None else f"{r.score_diff:+.2f}"
        tail = f"error: {r.error}" if r.error else f"{r.submitted_selected} -> {r.reproduced_selected}"
        lines.append(f"{r.task:<20} {r.track:<16} {fmt(r.submitted):>10} {fmt(r.reproduced):>11} {diff:>8}  {tail}")
    return "\n".join(lines)


__all__ = ["Reproduced", "encoder_mismatch", "find_entry", "format_report", "probe_args", "reproduce"]
