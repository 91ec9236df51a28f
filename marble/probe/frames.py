"""The frame-task half of the probe engine: frame features (cache or frozen encoder), layer options,
module probes (heads that are not batched MLPs, e.g. the open-unmix LSTM) and the result dict.

The rules are the clip sweep's (``marble.probe.sweep``), so every task follows one engine:

* a probe is ``sweep.Probe(layer, lr, seed)``; its initial weights come from
  ``torch.manual_seed(probe.seed)`` and its head's shapes only (:func:`seeded`), never from its
  position in the run, so ``--layers 3`` alone starts layer 3 exactly as the full sweep does;
* its random draws in training (dropout) come from a generator keyed by (probe, epoch, batch)
  (:func:`seeded` with ``sweep.dropout_key``), so neighbours in the sweep cannot shift them;
* validation: strict improvement in the card's direction keeps the checkpoint and resets early
  stopping; NaN never improves (``select.better``); the plateau scheduler follows PyTorch's rule;
* the configuration reported is ``select.pick_best`` of the validation main scores.

This module imports only downwards (cache, encoders via the caller, sweep, select, report); task
loops (``marble.beat.train``, ``marble.separation.train``) import it, and ``marble.probe.sequence``
dispatches to them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from marble.cache.store import CacheError, FrameStore, read_manifest
from marble.devices import matmul_precision
from marble.io import file_sha256
from marble.probe import report
from marble.probe.select import better
from marble.probe.sweep import WEIGHTED, Probe

# ------------------------------------------------------------------------------------------------
# Frame features


def cached_states(manifest: dict, num_states: int) -> list[int]:
    """The hidden-state indices a frame cache holds (the manifest says ``"all"`` or a list)."""
    states = manifest.get("states", "all")
    return list(range(num_states)) if states in (None, "all") else [int(s) for s in states]


class FrameFeatures:
    """Frame features ``[S_sel, T, H]`` (float32, on ``device``) of a whole item for the states in
    ``layers``: read from the frame cache of ``split`` when it holds the item, else computed by the
    encoder under the card's encoder-piece rule (``marble.audio.encoder_pieces``, as ``marble extract``
    does) and rounded through fp16 as the cache stores them, so both paths give the same numbers.
    ``memory_gb`` of on-the-fly features are kept (fp16, CPU) so later epochs do not re-encode them. The
    encoder runs with full fp32 matmuls, as extraction does (PROTOCOL §2)."""

    def __init__(self, encoder, layers: list[int], device: str, cache: Path | None = None, split: str = "valid",
                 memory_gb: float = 4.0, card=None, audio_path=None, manifest: dict | None = None):
        self.encoder, self.layers, self.device = encoder, list(layers), torch.device(device)
        self.card = card
        self.audio_path = audio_path or (lambda item: item.path)
        self.store = None
        self.store_states: list[int] | None = None
        if cache is not None and (Path(cache) / split / "frames").is_dir():
            manifest = read_manifest(cache) if manifest is None else manifest  # the probe passes the one it read
            states = cached_states(manifest, encoder.num_states)
            missing = [layer for layer in self.layers if layer not in states]
            if missing:
                raise CacheError(f"{cache}: the frame cache keeps states {states}, the probes need {missing}; "
                                 "re-extract with --states all (or pass --layers among the cached states)")
            self.store, self.store_states = FrameStore(Path(cache) / split), states
        self.memory_gb = float(memory_gb)
        self._memo: dict[str, torch.Tensor] = {}
        self.encoder_passes = 0
        self.cache_reads = 0

    @property
    def _enc_device(self):
        p = next(iter(list(self.encoder.parameters()) + list(self.encoder.buffers())), None)
        return p.device if p is not None else torch.device("cpu")

    def _pieces(self, wav: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """``prepare`` on the whole input, then the card's encoder-piece rule."""
        from marble.audio import encoder_pieces

        enc, a = self.encoder, getattr(self.card, "audio", None)
        clip = np.asarray(enc.prepare(np.asarray(wav, dtype=np.float32)), dtype=np.float32)
        return encoder_pieces(clip, enc.sample_rate, getattr(a, "piece_seconds", None), getattr(a, "tail_samples", 0),
                              enc.num_frames)

    def encode(self, wavs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Features ``[B, S_sel, T, H]`` of equal-length clips ``[B, n]`` (each ``prepare``d as a clip
        of its own, as the encoder sees a training crop, with the card's tail of zeros)."""
        enc = self.encoder
        x = torch.stack([torch.as_tensor(self._pieces(w)[0]) for w in (wavs.cpu().numpy() if torch.is_tensor(wavs) else wavs)])
        with torch.inference_mode(), matmul_precision(False):
            hs = enc.hidden_states(x.to(self._enc_device), upto=max(self.layers))
        self.encoder_passes += 1
        return hs[:, self.layers].float().to(self.device).clone()

    def whole(self, wav: np.ndarray) -> torch.Tensor:
        """Features ``[S_sel, T, H]`` of a whole track: ``prepare`` on the whole track, the encoder on
        each piece of the card's piece rule, frames concatenated and rounded through fp16 — exactly
        what ``marble extract`` caches."""
        clip, pieces = self._pieces(wav)
        if not pieces:
            raise ValueError(f"a {len(wav) / self.encoder.sample_rate:.3f} s input gives no encoder frame")
        parts = []
        for a, b in pieces:
            with torch.inference_mode(), matmul_precision(False):
                hs = self.encoder.hidden_states(torch.as_tensor(clip[a:b])[None].to(self._enc_device),
                                                upto=max(self.layers))
            self.encoder_passes += 1
            parts.append(hs[0, self.layers].to(torch.float16).float())
        return torch.cat(parts, dim=1).to(self.device)

    def __call__(self, item, wav: np.ndarray | None = None) -> torch.Tensor:
        if item.uid in self._memo:
            return self._memo[item.uid].to(self.device, torch.float32)
        if self.store is not None and self.store.has(item.uid):
            arr = self.store.read(item.uid)
            idx = [self.store_states.index(layer) for layer in self.layers]
            self.cache_reads += 1
            feats = torch.as_tensor(np.asarray(arr[idx], dtype=np.float32))
            self._keep(item.uid, feats)  # fp16 in the cache: kept exactly
            return feats.to(self.device)
        if wav is None:
            from marble.audio import load

            a = self.card.audio if self.card is not None else None
            dur = [d for d in (item.duration, a.crop_seconds if a else None) if d is not None]
            wav = load(self.audio_path(item), self.encoder.sample_rate,
                       offset=item.offset + (a.crop_offset_seconds if a else 0.0), duration=min(dur) if dur else None)
        feats = self.whole(wav)
        self._keep(item.uid, feats)
        return feats

    def _keep(self, uid: str, feats: torch.Tensor) -> None:
        """Keep an item's features (fp16, CPU: what the cache holds, so nothing changes) while ``memory_gb``
        allows, so later epochs neither re-read nor re-encode them."""
        if sum(v.numel() * 2 for v in self._memo.values()) / 1e9 + feats.numel() * 2 / 1e9 <= self.memory_gb:
            self._memo[uid] = feats.to("cpu", torch.float16)


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


def probe_input(layer, x: torch.Tensor, feat_layers: list[int], dim: int) -> torch.Tensor:
    """The input of a probe reading ``layer`` from features whose axis ``dim`` holds ``feat_layers``
    (the weighted sum gets states 1..L stacked on ``dim``)."""
    if layer == WEIGHTED:
        idx = torch.as_tensor([feat_layers.index(s) for s in range(1, max(feat_layers) + 1)], device=x.device)
        return x.index_select(dim, idx)
    return x.select(dim, feat_layers.index(layer))


# ------------------------------------------------------------------------------------------------
# Seeding


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block on the global torch RNG seeded with ``seed``, restoring the caller's RNG after
    (so one probe's draws never move another's)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) & 0xFFFFFFFF)
        yield


# ------------------------------------------------------------------------------------------------
# Module probes (heads trained one module each, e.g. LSTMs)


@dataclass
class ModuleProbe:
    """One probe of the sweep with an ``nn.Module`` head; ``target`` names what it predicts when a
    task trains one model per target (MUSDB: one per source)."""

    probe: Probe
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    direction: str = "max"
    target: str | None = None
    best_score: float = float("nan")
    best_state: dict | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    epochs: int = 0
    stopped: str = "max_epochs"
    active: bool = True
    history: list = field(default_factory=list)

    @property
    def layer(self):
        return self.probe.layer

    @property
    def lr(self) -> float:
        return self.probe.lr

    def observe(self, score: float, epoch: int, patience: int) -> None:
        """A validation score: strict improvement (card direction, NaN never better) keeps the
        checkpoint; the plateau scheduler steps; ``patience`` epochs without improvement stop it."""
        score = float(score)
        self.history.append(score)
        self.epochs = epoch
        worst = -math.inf if self.direction == "max" else math.inf
        self.scheduler.step(score if math.isfinite(score) else worst)
        if self.best_state is None or better(score, self.best_score, self.direction):
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
            return
        self.bad_epochs += 1
        if self.bad_epochs >= patience:
            self.active, self.stopped = False, "early"

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


def make_module_probes(probes: list[Probe], build, training, device, direction: str, num_states: int = 0,
                       mix_dim: int = 0, target: str | None = None) -> list[ModuleProbe]:
    """One module per probe, initialised under :func:`seeded` ``(probe.seed)``: head first, then
    (weighted sum) the mixing logits — as the batched clip sweep does."""
    out = []
    for p in probes:
        with seeded(p.seed):
            head = build()
            model = head if p.layer != WEIGHTED else torch.nn.Sequential(WeightedStates(num_states - 1, mix_dim), head)
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=training.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=direction, factor=training.scheduler_factor,
                                                           patience=training.scheduler_patience)
        out.append(ModuleProbe(p, model, opt, sched, direction, target))
    return out


# ------------------------------------------------------------------------------------------------
# Result dict


def frame_manifest(card, encoder, *, seed: int, device: str, started: float, cache: Path | None,
                   cache_verified: bool | None = None, cache_manifest: tuple[dict | None, str | None] | None = None) -> dict:
    """The run manifest of a frame task: its frame cache's, or the encoder's identity when features were computed
    on the fly (then the split checksums come from the shipped split file). ``cache_manifest``: the cache manifest
    and its sha256 as the probe read them (None: read them here)."""
    if cache_manifest is None:
        has_cache = cache is not None and (Path(cache) / "manifest.json").exists()
        cm = read_manifest(cache) if has_cache else None
        cache_manifest = (cm, file_sha256(Path(cache) / "manifest.json") if cm else None)
    cm, cm_sha256 = cache_manifest
    manifest = report.build_manifest(
        card=card, cache_manifest=cm, cache_manifest_sha256=cm_sha256 if cm else None,
        seed=seed, device=str(device), wall_time_s=time.time() - started, peak_memory_mb=report.peak_memory_mb(device),
        encoder=encoder.identity(), cache_verified=cache_verified)
    if not manifest["split_checksums"]:
        from marble.splits import checksums

        src = card.splits.source
        manifest["split_checksums"] = {src: checksums()[src]} if src in checksums() else {}
    return manifest


def build_result(card, model_name: str, encoder, out: dict, *, track: str, seed: int, device: str, started: float,
                 cache: Path | None, data: dict | None = None, cache_verified: bool | None = None,
                 cache_manifest: tuple[dict | None, str | None] | None = None) -> dict:
    """The result dict of a frame trainer that selects its own configuration (``out``: sweep, selected, valid,
    test, training), through the same builder as clip tasks (``report``)."""
    manifest = frame_manifest(card, encoder, seed=seed, device=device, started=started, cache=cache,
                              cache_verified=cache_verified, cache_manifest=cache_manifest)
    training = dict(out["training"], **out.get("manifest_extra", {}))
    return report.build_result(card=card, model=model_name, track=track, selected=out["selected"], valid=out["valid"],
                               test=out["test"], sweep=out["sweep"], weighted_sum=out.get("weighted_sum"), seeds=None,
                               head=dataclasses.asdict(card.head), training=training, manifest=manifest, data=data)
