"""Frame-level tasks (``frame-binary``: GTZAN beat; ``separation``: MUSDB18): the constrained-track
layer x LR sweep and the result dict (RESULT_FORMAT) for them.

Entry point: :func:`run`. Frame features come from the frame cache (``FrameStore``) when the file
is there, else from the frozen encoder on the fly. All selected (layer, LR) probes train together
on every batch (one encoder pass / cache read feeds all heads); each probe has its own Adam,
ReduceLROnPlateau and early stopping, and is tested from its best-validation checkpoint.
The task-specific loops live in :mod:`marble.beat.train` and :mod:`marble.separation.train`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marble.cache.store import CacheError, FrameStore, file_sha256, read_manifest
from marble.devices import resolve_device
from marble.encoders.identity import model_cache_dir
from marble.probe import report
from marble.probe.sweep import WEIGHTED

FRAME_PREDICTIONS = ("frame-binary", "separation")


# ------------------------------------------------------------------------------------------------
# Frame features


class FrameFeatures:
    """Frame features ``[S_sel, T, H]`` (float32 torch, on ``device``) of an item, for the states in
    ``layers``: read from the frame cache when present, else computed by the encoder.

    On-the-fly features are kept in memory (fp16, CPU) when all of them fit ``memory_gb``: GTZAN at
    75 Hz is ~3.3 GB per 768-wide state, so all 13 states (~43 GB) are recomputed every epoch but
    one or two states stay resident. A cache read costs disk bandwidth; recomputation costs one
    encoder pass per track and epoch, shared by all probes.
    """

    def __init__(self, encoder, layers: list[int], device: str, cache: Path | None = None, split: str = "train",
                 memory_gb: float = 4.0, card=None):
        self.encoder, self.layers, self.device = encoder, list(layers), torch.device(device)
        self.card = card
        self.store = None
        self.store_states: list[int] | None = None
        if cache is not None and (Path(cache) / split / "frames").is_dir():
            manifest = read_manifest(cache)
            states = manifest.get("states") or manifest.get("frame_states") or list(range(encoder.num_states))
            if all(layer in states for layer in self.layers):
                self.store, self.store_states = FrameStore(Path(cache) / split), list(states)
        self.memory_gb = float(memory_gb)
        self._memo: dict[str, torch.Tensor] = {}
        self.encoder_passes = 0

    def _encode(self, wav: np.ndarray) -> torch.Tensor:
        enc = self.encoder
        x = torch.as_tensor(enc.prepare(wav), dtype=torch.float32, device=next(_params_or_buffers(enc), torch.empty(0)).device)
        with torch.inference_mode():
            hs = enc.hidden_states(x[None], upto=max(self.layers))[0]  # [S, T, H]
        self.encoder_passes += 1
        return hs[self.layers].float()

    def __call__(self, item, wav: np.ndarray | None = None) -> torch.Tensor:
        if self.store is not None and self.store.has(item.uid):
            arr = self.store.read(item.uid)
            idx = [self.store_states.index(layer) for layer in self.layers]
            return torch.as_tensor(np.asarray(arr[idx], dtype=np.float32), device=self.device)
        if item.uid in self._memo:
            return self._memo[item.uid].to(self.device, torch.float32)
        if wav is None:
            from marble.audio import load

            a = self.card.audio if self.card is not None else None
            wav = load(item.path, self.encoder.sample_rate, offset=item.offset + (a.crop_offset_seconds if a else 0.0),
                       duration=item.duration if item.duration is not None else (a.crop_seconds if a else None))
        feats = self._encode(wav)
        size_gb = feats.numel() * 2 / 1e9
        if sum(v.numel() * 2 for v in self._memo.values()) / 1e9 + size_gb <= self.memory_gb:
            self._memo[item.uid] = feats.to("cpu", torch.float16)
        return feats.to(self.device)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Features of a batch of raw chunks ``[B, n]`` (separation training): ``[B, S_sel, T, H]``."""
        enc = self.encoder
        x = torch.stack([torch.as_tensor(enc.prepare(w.cpu().numpy()), dtype=torch.float32) for w in wav])
        x = x.to(next(_params_or_buffers(enc), torch.empty(0)).device)
        with torch.inference_mode():
            hs = enc.hidden_states(x, upto=max(self.layers))
        self.encoder_passes += 1
        return hs[:, self.layers].float().to(self.device).clone()


def _params_or_buffers(module):
    yield from module.parameters()
    yield from module.buffers()


# ------------------------------------------------------------------------------------------------
# Layer options: single states and the learned weighted sum


class WeightedStates(torch.nn.Module):
    """The weighted-sum layer option (PROTOCOL §3): softmax over a learnable vector (random normal
    init) over hidden states 1..L, no per-layer norm; ``dim`` is the state axis of its input."""

    def __init__(self, num_mixed: int, dim: int):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.randn(num_mixed))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return (x * torch.softmax(self.logits, 0).view(shape)).sum(self.dim)

    def weights(self) -> list[float]:
        return torch.softmax(self.logits.detach().double(), 0).tolist()


def feature_layers(layers: list, num_states: int) -> list[int]:
    """The hidden states the probes of ``layers`` read (the weighted sum reads states 1..L)."""
    states = {int(layer) for layer in layers if layer != WEIGHTED}
    if WEIGHTED in layers:
        states |= set(range(1, num_states))
    return sorted(states)


def probe_input(probe, x: torch.Tensor, feat_layers: list[int], dim: int) -> torch.Tensor:
    """The input of one probe from features whose axis ``dim`` holds ``feat_layers``."""
    if probe.layer == WEIGHTED:
        idx = torch.as_tensor([feat_layers.index(s) for s in range(1, max(feat_layers) + 1)], device=x.device)
        return x.index_select(dim, idx)
    return x.select(dim, feat_layers.index(probe.layer))


def weighted_summary(probes: list, valid_main: list[float]) -> dict | None:
    """``weighted_sum`` of the result: the softmax weights of the best weighted-sum probe on valid."""
    ws = [i for i, p in enumerate(probes) if p.layer == WEIGHTED]
    if not ws:
        return None
    best = max(ws, key=lambda i: valid_main[i] if np.isfinite(valid_main[i]) else -np.inf)
    return {"lr": probes[best].lr, "weights": probes[best].model[0].weights()}


# ------------------------------------------------------------------------------------------------
# One probe of the sweep


@dataclass
class Probe:
    layer: int | str  # a state index or WEIGHTED
    lr: float
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    best_score: float = -float("inf")
    best_state: dict | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    epochs: int = 0
    stopped: str = "max_epochs"
    active: bool = True
    history: list = field(default_factory=list)

    def observe(self, score: float, epoch: int, patience: int) -> None:
        """Record a validation score: keep the best checkpoint, step the plateau scheduler, stop early."""
        s = score if np.isfinite(score) else -float("inf")
        self.history.append(float(score))
        self.epochs = epoch
        self.scheduler.step(s)
        if s > self.best_score or self.best_state is None:
            self.best_score, self.best_epoch, self.bad_epochs = s, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= patience:
                self.active, self.stopped = False, "early"

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


def make_probes(layers: list, lrs: list[float], build, training, seed: int, device, num_states: int = 0,
                mix_dim: int = 0) -> list[Probe]:
    """One probe per (layer option, LR); a weighted-sum probe is ``WeightedStates`` (over states 1..L on
    axis ``mix_dim`` of its input) followed by the head."""
    probes = []
    for i, layer in enumerate(layers):
        for j, lr in enumerate(lrs):
            torch.manual_seed(seed + 1000 * i + j)
            model = build() if layer != WEIGHTED else torch.nn.Sequential(WeightedStates(num_states - 1, mix_dim), build())
            model = model.to(device)
            opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=training.weight_decay)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=training.scheduler_factor,
                                                               patience=training.scheduler_patience)
            probes.append(Probe(layer, float(lr), model, opt, sched))
    return probes


# ------------------------------------------------------------------------------------------------
# Result dict


def build_result(card, model_name: str, encoder, out: dict, *, track: str, seed: int, device: str, started: float,
                 cache: Path | None) -> dict:
    """The result dict of a frame task, through the same builder as clip tasks (``report``)."""
    cache_manifest = read_manifest(cache) if cache is not None and (Path(cache) / "manifest.json").exists() else None
    manifest = report.build_manifest(
        card=card, cache_manifest=cache_manifest,
        cache_manifest_sha256=file_sha256(Path(cache) / "manifest.json") if cache_manifest else None,
        seed=seed, device=str(device), wall_time_s=time.time() - started, peak_memory_mb=report.peak_memory_mb(device),
        encoder=encoder.identity())
    if not manifest["split_checksums"]:
        from marble.splits import checksums

        src = card.splits.source
        manifest["split_checksums"] = {src: checksums()[src]} if src in checksums() else {}
    training = dict(out["training"], **out.get("manifest_extra", {}))
    return report.build_result(card=card, model=model_name, track=track, selected=out["selected"], valid=out["valid"],
                               test=out["test"], sweep=out["sweep"], weighted_sum=out.get("weighted_sum"), seeds=None,
                               head=dataclasses.asdict(card.head), training=training, manifest=manifest)


# ------------------------------------------------------------------------------------------------
# Entry point


def run(card, model_spec: str, *, cache_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
        results_dir: str | os.PathLike | None = "results", device: str = "cpu", layers: list[int] | None = None,
        lrs: list[float] | None = None, max_epochs: int | None = None, seed: int | None = None,
        track: str = "constrained", encoder=None, items: dict | None = None, name: str | None = None,
        **options) -> dict:
    """Train and select the constrained-track probes of a frame-level task; returns the result dict
    and writes it to ``<results_dir>/<encoder-slug>/<task>/<track>.json`` (unless ``results_dir``
    is None).

    ``layers``/``lrs``/``max_epochs`` restrict the sweep (recorded under ``training``); ``encoder``
    passes an already-built encoder (else ``load_encoder(model_spec)``); ``name`` is the model's name
    in the result (default: the encoder's name); ``items`` maps split ->
    list of Items (else the dataset loader of the card reads ``data_dir``). Task options:
    beat: ``batch_size``, ``memory_gb``; separation: ``batch_size``, ``chunks_per_epoch``,
    ``eval_chunk_seconds``, ``reconstruction`` ("phase" | "wiener"), ``museval`` (bool).
    """
    if card.prediction not in FRAME_PREDICTIONS:
        raise ValueError(f"task {card.id!r} is {card.prediction}: marble.probe.sequence runs only frame-level tasks "
                         f"({', '.join(FRAME_PREDICTIONS)})")
    started = time.time()
    device = str(resolve_device(device))
    if encoder is None:
        from marble.encoders import load_encoder

        encoder = load_encoder(model_spec, device=device)
    encoder.eval()
    # one identity per model (marble.encoders.identity): the cache key of the spelling (or of the encoder
    # load_encoder built), the encoder's own name in the result
    key_of = model_spec if isinstance(model_spec, str) and not getattr(encoder, "cache_key", None) else encoder
    model_name = getattr(encoder, "name", None) or str(model_spec)
    if items is None:
        from marble.datasets import get_dataset

        ds = get_dataset(card, data_dir, allow_partial=True)
        items = {s: ds.items(s) for s in ("train", "valid", "test")}
    for s in ("train", "valid", "test"):
        if not items.get(s):
            raise ValueError(f"task {card.id}: split {s!r} has no items (data dir {data_dir}); run `marble data check {card.id}`")
    all_layers = list(range(encoder.num_states))
    layers = list(all_layers + [WEIGHTED] if layers is None else layers)
    bad = [layer for layer in layers if layer not in all_layers and layer != WEIGHTED]
    if bad:
        raise ValueError(f"layers {bad} outside 0..{encoder.num_states - 1} for encoder {model_name}")
    lrs = [float(x) for x in (card.training.learning_rates if lrs is None else lrs)]
    max_epochs = int(card.training.max_epochs if max_epochs is None else max_epochs)
    seed = int(card.training.seed if seed is None else seed)
    cache = model_cache_dir(cache_dir, key_of, card.id) if cache_dir is not None else None
    if cache is not None and not cache.exists():
        cache = None
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    common = dict(card=card, encoder=encoder, items=items, layers=layers, lrs=lrs, max_epochs=max_epochs,
                  seed=seed, device=device, cache=cache, options=options)
    if card.prediction == "frame-binary":
        from marble.beat.train import train_beat as train
    else:
        from marble.separation.train import train_separation as train
    out = train(**common)
    result = build_result(card, name or model_name, encoder, out, track=track, seed=seed, device=device, started=started,
                          cache=cache)
    if results_dir is not None:
        report.write_result(report.result_path(results_dir, name or model_name, card.id, track), result)
    return result


def pick(sweep_probes: list[Probe]) -> int:
    """Index of the probe with the best validation main score (first on ties: lower layer, lower LR)."""
    scores = [p.best_score for p in sweep_probes]
    return int(np.argmax(scores))


__all__ = ["run", "FrameFeatures", "Probe", "WeightedStates", "feature_layers", "probe_input", "weighted_summary",
           "make_probes", "build_result", "CacheError"]
