"""Task cards: the declarative description of a benchmark task, and where cards are found.

A card is a TOML file. Every behavioural difference between tasks is a field here, never an
``if task == ...`` elsewhere. Cards are validated on load: unknown keys, wrong types and missing
fields raise :class:`CardError` naming the file and the key.

Cards are discovered, in order of precedence (a later source may not redefine an earlier id):
built-in cards (``tasks/`` in the source tree, shipped in the wheel as ``marble/cards``), cards in
``--tasks-dir`` / ``$MARBLE_TASKS_DIR`` (``os.pathsep``-separated), and entry points of the group
``marble.tasks`` (each resolving to a directory of cards or a single card path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from marble.errors import MarbleError
from marble.paths import relative_inside
from marble.settings import TASKS_ENV

PREDICTION_TYPES = ("multiclass", "multilabel", "regression", "frame-binary", "separation")
CLIP_PREDICTIONS = ("multiclass", "multilabel", "regression")
PROTOCOLS = ("marble-v1",)
SPLITS = ("train", "valid", "test")
DEFAULT_LRS = [5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]
#: a task id names cache and result folders: one path component, never '..' or absolute
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CardError(MarbleError, ValueError):
    """A task card is malformed; the message names the file and the key."""


class UnknownTaskError(MarbleError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


# --------------------------------------------------------------------------------------------
# Schema: nested dataclasses; the validator walks their type hints.


@dataclass(frozen=True)
class Labels:
    """Where the label vocabulary comes from: inline ``values``, a ``source`` ("file.json:key" in
    the shipped split data), or a ``count`` of integer classes (label = class index)."""

    values: list[str] | None = None
    source: str | None = None
    count: int | None = None


@dataclass(frozen=True)
class Splits:
    """Which shipped (or user) file defines the split, relative to ``marble/splits/data``; for a
    user folder task it is relative to the dataset root."""

    source: str
    names: list[str] = field(default_factory=lambda: list(SPLITS))
    # files of the official list left out by design (uid or file name -> why); a result may lack them
    # and still be complete, e.g. GTZAN's corrupt jazz.00054
    excluded: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Audio:
    """Input handling (PROTOCOL §2): crop before resampling, non-overlapping windows, a last
    window shorter than ``window_seconds`` kept only if it is at least ``min_window_seconds``.
    ``zscore``: the task's own preprocessing, z-normalise every item (VocalSet: every 3 s chunk) in
    the file's rate before resampling and before any encoder, whatever the encoder's own input
    normalisation (the reference did it when it cut the chunks). Frame tasks: ``piece_seconds`` and
    ``tail_samples`` are the encoder-piece rule of whole items (``marble.audio.encoder_pieces``: that
    many zero samples appended once at the encoder rate, consecutive pieces from the start; default
    90 s, no tail), the same for cached and on-the-fly features; the tail is appended to training
    chunks too."""

    crop_offset_seconds: float = 0.0
    crop_seconds: float | None = None
    window_seconds: float | None = None
    min_window_seconds: float = 1.0
    train_chunk_seconds: float | None = None
    zscore: bool = False
    piece_seconds: float | None = None
    tail_samples: int = 0


@dataclass(frozen=True)
class Head:
    """The probe head, a key of ``marble.probe.heads.HEADS`` and its shape."""

    kind: str = "mlp"  # mlp | openunmix
    hidden: int = 512
    layers: int = 1
    dropout: float = 0.2
    bidirectional: bool = False


@dataclass(frozen=True)
class Training:
    batch_size: int = 64
    learning_rates: list[float] = field(default_factory=lambda: list(DEFAULT_LRS))
    weight_decay: float = 0.0
    scheduler_factor: float = 0.5
    scheduler_patience: int = 5
    early_stop_patience: int = 20
    max_epochs: int = 100
    loss: str = "cross-entropy"  # cross-entropy | bce | mse
    seed: int = 1234
    label_widening: int = 0  # frame tasks: frames next to a positive are positive too
    # micro-batches of batch_size accumulated into one optimiser step (MUSDB: 8 x 32, the reference's 8 DDP ranks)
    accumulate: int = 1
    # what early stopping / the LR scheduler watch: the card's main metric on valid, or the valid loss
    monitor: str = "main"  # main | loss


@dataclass(frozen=True)
class Metrics:
    main: str
    names: list[str]
    direction: str = "max"
    # metrics averaged (x100 for ratios) into the task's MARBLE score (PROTOCOL §5)
    aggregate: list[str] = field(default_factory=list)
    # song-level aggregation rules chosen on validation (GS); empty = score per file
    group_rules: list[str] = field(default_factory=list)
    # metric name -> column of leaderboard/reference_results.csv
    reference_columns: dict[str, str] = field(default_factory=dict)
    # one model per label (MUSDB: per source), each selected on its own: label -> its metrics, the first one
    # its selection score; the main metric is then the mean of those first metrics over the labels
    per_source: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """Where a dataset's files live below the data root, and the column layout of a user
    (folder) dataset's metadata file."""

    subdir: str
    metadata: str | None = None
    path_column: str = "path"
    label_column: str = "label"
    split_column: str = "split"
    label_separator: str = ";"
    url: str | None = None


@dataclass(frozen=True)
class TaskCard:
    id: str
    version: int
    protocol: str
    name: str
    dataset: str
    prediction: str
    source: Source
    labels: Labels
    splits: Splits
    metrics: Metrics
    audio: Audio = field(default_factory=Audio)
    head: Head = field(default_factory=Head)
    training: Training = field(default_factory=Training)
    description: str = ""
    decisions: dict[str, str] = field(default_factory=dict)
    # the unconstrained track's hyper-parameters for this task (marble.finetune.config.KEYS; optional
    # [finetune.lora] / [finetune.full] / [finetune.head] sub-tables), checked by marble.finetune.config
    finetune: dict[str, Any] = field(default_factory=dict)
    # filled in by the loader, not part of the TOML
    path: Path | None = field(default=None, compare=False)
    origin: str = field(default="builtin", compare=False)

    @property
    def is_clip_level(self) -> bool:
        return self.prediction in CLIP_PREDICTIONS

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path else ""

    def vocabulary(self) -> list[str]:
        """The ordered label names (class index i has name ``vocabulary()[i]``)."""
        from marble.splits import load_vocabulary

        return load_vocabulary(self)

    @property
    def num_outputs(self) -> int:
        return len(self.vocabulary())


_NOT_IN_TOML = {"path", "origin"}


def _check_type(value: Any, tp: Any, where: str) -> Any:
    if tp is Any:  # checked by the table's own owner (the [finetune] table: marble.finetune.config)
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except CardError as e:
                errors.append(str(e))
        raise CardError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise CardError(f"key '{where}': expected a list, got {type(value).__name__} {value!r}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise CardError(f"key '{where}': expected a table, got {type(value).__name__}")
        return {_check_type(k, args[0], where): _check_type(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise CardError(f"key '{where}': expected a table [{where}], got {type(value).__name__}")
        return _build(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CardError(f"key '{where}': expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CardError(f"key '{where}': expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise CardError(f"key '{where}': expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise CardError(f"key '{where}': expected a string, got {type(value).__name__} {value!r}")
        return value
    if tp is Path:
        return Path(value)
    raise CardError(f"key '{where}': unsupported type {tp}")  # pragma: no cover - schema bug


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_IN_TOML}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise CardError(f"unknown key '{key}' (allowed here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise CardError(f"missing required key '{key}'")
            continue
        kwargs[name] = _check_type(data[name], hints[name], key)
    return cls(**kwargs)


def _relative_inside(value: str | None, key: str) -> None:
    """A card path (dataset subfolder, split or metadata file) must stay below its base folder."""
    # "official:<path>": a file of the dataset's own download (NSynth's examples.json), inside it all the same
    if value is not None and relative_inside(value.removeprefix("official:"), empty=True) is None:
        raise CardError(f"key '{key}': {value!r} must be a relative path inside its folder (no absolute path, no '..')")


def _semantic_checks(card: TaskCard) -> None:
    if not TASK_ID.fullmatch(card.id) or card.id in (".", ".."):
        raise CardError(f"key 'id': {card.id!r} is not a task id (letters, digits, '.', '_' and '-', starting with a "
                        "letter or digit; it names folders, so no '/' or '..')")
    _relative_inside(card.source.subdir, "source.subdir")
    _relative_inside(card.source.metadata, "source.metadata")
    _relative_inside(card.splits.source, "splits.source")
    tr = card.training
    for i, lr in enumerate(tr.learning_rates):
        if not math.isfinite(lr) or lr <= 0:
            raise CardError(f"key 'training.learning_rates[{i}]': {lr!r} is not a positive, finite learning rate")
    for key in ("max_epochs", "batch_size", "accumulate"):
        if getattr(tr, key) < 1:
            raise CardError(f"key 'training.{key}': {getattr(tr, key)} must be at least 1")
    for key in ("scheduler_patience", "early_stop_patience", "label_widening"):
        if getattr(tr, key) < 0:
            raise CardError(f"key 'training.{key}': {getattr(tr, key)} must not be negative")
    if not math.isfinite(tr.weight_decay) or tr.weight_decay < 0:
        raise CardError(f"key 'training.weight_decay': {tr.weight_decay!r} must be a finite, non-negative number")
    if not (math.isfinite(tr.scheduler_factor) and 0 < tr.scheduler_factor < 1):
        raise CardError(f"key 'training.scheduler_factor': {tr.scheduler_factor!r} must lie strictly between 0 and 1 "
                        "(the factor the learning rate is multiplied by on a plateau: 0 stops learning, 1 or more "
                        "never lowers it)")
    if not 0 <= card.head.dropout < 1 or card.head.hidden < 1 or card.head.layers < 1:
        raise CardError(f"table 'head': dropout must lie in [0, 1), hidden and layers at least 1 (got {card.head})")
    a = card.audio
    if a.tail_samples < 0:
        raise CardError(f"key 'audio.tail_samples': {a.tail_samples} must not be negative")
    for key in ("crop_offset_seconds", "crop_seconds", "window_seconds", "min_window_seconds", "train_chunk_seconds",
                "piece_seconds"):
        v = getattr(a, key)
        if v is not None and (not math.isfinite(v) or v < 0 or (v == 0 and key not in ("crop_offset_seconds", "min_window_seconds"))):
            raise CardError(f"key 'audio.{key}': {v!r} must be a finite, positive number of seconds")
    if card.prediction not in PREDICTION_TYPES:
        raise CardError(f"key 'prediction': {card.prediction!r} is not one of {PREDICTION_TYPES}")
    if card.protocol not in PROTOCOLS and not card.protocol.startswith("user"):
        raise CardError(f"key 'protocol': {card.protocol!r} is not one of {PROTOCOLS} (or 'user-...')")
    n = sum(x is not None for x in (card.labels.values, card.labels.source, card.labels.count))
    if n != 1:
        raise CardError("table 'labels': give exactly one of 'values', 'source' or 'count'")
    if card.metrics.main not in card.metrics.names:
        raise CardError(f"key 'metrics.main': {card.metrics.main!r} is not listed in 'metrics.names'")
    if card.metrics.direction not in ("max", "min"):
        raise CardError("key 'metrics.direction': must be 'max' or 'min'")
    from marble.metrics import METRICS  # late: metrics import sklearn

    for m in card.metrics.names + card.metrics.aggregate:
        if m not in METRICS:
            raise CardError(f"key 'metrics.names': unknown metric {m!r} (known: {', '.join(sorted(METRICS))})")
    for m in card.metrics.aggregate + list(card.metrics.reference_columns):
        if m not in card.metrics.names:
            raise CardError(f"key 'metrics.aggregate': {m!r} is not listed in 'metrics.names'")
    ps = card.metrics.per_source
    if ps:
        labels = card.labels.values or []
        if sorted(ps) != sorted(labels):
            raise CardError(f"key 'metrics.per_source': names {sorted(ps)} must be the labels {labels}")
        for s, names in ps.items():
            if not names or any(m not in card.metrics.names or m == card.metrics.main for m in names):
                raise CardError(f"key 'metrics.per_source.{s}': {names} must be metrics of 'metrics.names' other "
                                f"than the main one")
    from marble.probe.heads import head_kind  # late: the registry of heads

    try:
        head_kind(card)
    except ValueError as e:
        raise CardError(f"key 'head.kind': {e}") from None
    if card.training.monitor not in ("main", "loss"):
        raise CardError(f"key 'training.monitor': {card.training.monitor!r} is not 'main' or 'loss'")
    if card.training.loss not in ("cross-entropy", "bce", "mse"):
        raise CardError(f"key 'training.loss': {card.training.loss!r} is not cross-entropy, bce or mse")
    if not card.training.learning_rates:
        raise CardError("key 'training.learning_rates': give at least one learning rate")
    for s in card.splits.names:
        if s not in SPLITS:
            raise CardError(f"key 'splits.names': {s!r} is not one of {SPLITS}")
    from marble.finetune.config import table_errors  # late: the fine-tuning hyper-parameters' owner

    errors = table_errors(card.finetune)
    if errors:
        raise CardError(errors[0])


def read_toml(path: str | os.PathLike, error: type[Exception] = CardError, what: str = "task card") -> dict:
    """Parse a TOML file; a missing file or a syntax error raises ``error`` naming the file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: not valid TOML: {e}") from None


def load_card(path: str | os.PathLike, origin: str = "user") -> TaskCard:
    """Read and validate one card; any problem raises CardError naming the file."""
    path = Path(path)
    data = read_toml(path)
    try:
        card = _build(TaskCard, data)
        _semantic_checks(card)
    except CardError as e:
        raise CardError(f"{path}: {e}") from None
    return dataclasses.replace(card, path=path, origin=origin)


# --------------------------------------------------------------------------------------------
# Discovery


def builtin_cards_dir() -> Path:
    """The shipped cards: ``tasks/`` in the source tree, reached through the ``marble/cards``
    symlink, which setuptools packs as real files into the wheel."""
    return Path(__file__).resolve().parent / "cards"


def _card_files(directory: Path) -> list[Path]:
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise CardError(f"{directory}: tasks directory does not exist")
    return sorted(directory.glob("*.toml"))


def _extra_sources(tasks_dir: str | os.PathLike | None) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for raw in [str(tasks_dir) if tasks_dir else None, os.environ.get(TASKS_ENV)]:
        if raw:
            out += [(Path(p), f"dir:{p}") for p in raw.split(os.pathsep) if p]
    for ep in metadata.entry_points(group="marble.tasks"):
        obj = ep.load()
        obj = obj() if callable(obj) else obj
        out.append((Path(str(obj)), f"entry-point:{ep.name}"))
    return out


def all_cards(tasks_dir: str | os.PathLike | None = None) -> dict[str, TaskCard]:
    """Every card, built-ins first; a duplicate id is an error naming both files. One card file found through
    two sources (``--tasks-dir`` and ``$MARBLE_TASKS_DIR`` naming one folder, relatively and absolutely, or via a
    link) is one card."""
    cards: dict[str, TaskCard] = {}
    sources = [(builtin_cards_dir(), "builtin")] + _extra_sources(tasks_dir)
    seen: set[Path] = set()
    for directory, origin in sources:
        for path in _card_files(directory):
            real = path.resolve()
            if real in seen:  # the same file reached twice (--tasks-dir and $MARBLE_TASKS_DIR, relative and absolute)
                continue
            seen.add(real)
            card = load_card(path, origin=origin)
            if card.id in cards:
                raise CardError(f"{path}: task id {card.id!r} is already defined by {cards[card.id].path}")
            cards[card.id] = card
    return cards


def get_card(task: str, tasks_dir: str | os.PathLike | None = None) -> TaskCard:
    """A card by id, or by path to a .toml file."""
    if task.endswith(".toml") and Path(task).exists():
        return load_card(task)
    cards = all_cards(tasks_dir)
    if task not in cards:
        from marble.suggest import did_you_mean

        raise UnknownTaskError(
            f"unknown task {task!r}.{did_you_mean(task, list(cards))} Known tasks: {', '.join(sorted(cards))}. "
            "User tasks load from --tasks-dir, $MARBLE_TASKS_DIR or the 'marble.tasks' entry point."
        )
    return cards[task]


def select_cards(tasks: str | list[str] | tuple[str, ...], tasks_dir: str | os.PathLike | None = None) -> list[TaskCard]:
    """``"all"`` (the built-in benchmark tasks, in card order), ``"gtzan,emo"``, a list of ids or card
    paths -> their cards, each once; an unknown id is an :class:`UnknownTaskError`."""
    items = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t).strip() for t in tasks]
    items = [t for t in items if t]
    if not items:
        raise UnknownTaskError("no task given: pass task ids separated by commas, e.g. gtzan,emo, or all")
    out: dict[str, TaskCard] = {}
    for t in items:
        if t == "all":
            for card in all_cards(tasks_dir).values():
                if card.origin == "builtin":
                    out.setdefault(card.id, card)
        else:
            card = get_card(t, tasks_dir)
            out.setdefault(card.id, card)
    return list(out.values())
