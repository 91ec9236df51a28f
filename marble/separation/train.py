"""MUSDB18, constrained track (PROTOCOL §4, the reference prober and its script ``probe_musdb18.sh``):
one open-unmix-style model per source for every (layer, LR) of the sweep, each selected on its own.

* **training**: ``chunks_per_track`` (64) random chunks of ``audio.train_chunk_seconds`` (6 s) per
  training track and epoch; each source of a chunk comes from its own track (random track mixing,
  every track equally often per source and epoch, as the reference's dataset gives each training
  track 64 chunks an epoch) at a random offset, gain U(0.25, 1.25), channels swapped with
  probability 1/2; the mixture is the sum of the four augmented stems (the reference's
  vocal-free drums/bass/other mixtures are a bug not followed, docs/fidelity.md). The mono mixture
  goes through the frozen encoder once per micro-batch and feeds every model. Target: the source's
  mono magnitude STFT; loss MSE. **An optimiser step sees ``batch_size x accumulate`` chunks**
  (32 x 8 = 256, the reference's 8 DDP ranks x 32): the step's chunks are split evenly into
  ``accumulate`` micro-batches (each a DDP rank's batch: BatchNorm statistics per micro-batch), the
  gradient is the mean of the micro-batches' gradients; ceil(5,504 / 256) = 22 steps an epoch.
  The models' steps run side by side on the CPU's cores (:mod:`marble.separation.workers`, every torch
  operation single-threaded: a model's numbers do not depend on the core count, the encoder's features aside);
  the head runs in its frames-major layout against frames-major targets (:func:`frames_magnitudes`), the same
  gradients bit for bit.
  Draws come from ``numpy default_rng([seed, epoch])`` and each model's dropout from its own
  (probe, epoch, micro-batch, source) seed, so a model trains the same whatever else runs beside it.
* **monitor** (``training.monitor = "main"``): each model's validation global SDR of its own
  reconstruction (the reference's ``--monitor valid_sdr``, mode max): its own plateau scheduler,
  early stopping and best checkpoint.
* **reconstruction**: whole tracks (encoder frames from the frame cache, else the encoder under the
  card's piece rule; missing frames zero-filled; the LSTM over the whole track, streamed), Wiener EM
  per source model on the target and its residual (``marble.separation.separate_targets``),
  inverse STFT, scored at 24 kHz against the references resampled to 24 kHz (MDX global SDR).
* **selection**: per source (``metrics.per_source``), the (layer, LR) whose model of that source has
  the best validation SDR; test (and museval) are computed for the four selected models only; the
  MUSDB score is the mean of their four test SDRs.
* **shipped probe and test scores**: the four selected models are shipped as one probe file
  (:meth:`marble.probe.shipped.ShippedProbe.from_modules`: each model's weights, its layer or mixing weights, the
  head's arguments, the STFT/Wiener settings); the test tracks are scored by the models rebuilt from that file's
  bytes through :func:`separate_track`, the reconstruction ``marble predict`` runs on new audio, so its stems of a
  test mixture score exactly the shipped SDRs. :func:`test_outputs`: each test track's SDR (and museval median) per
  source, from that source's selected model, float64; the reported test metrics are computed from them
  (``marble.metrics.separation.FROM_TRACK_SCORES``), so ``marble leaderboard check`` recomputes them exactly and
  ``marble compare`` resamples the tracks.
* **a first-class sweep** (``marble.probe.sequence.run`` on the engine of ``marble.probe.runs``): the models of
  any seeds train in one pass (each seed its own chunk draws), under the card's plan or a semi-constrained
  ``--config`` (the LSTM's size, dropout, schedule); the whole sweep state (every model's weights, optimiser,
  scheduler, best checkpoint and counters) is saved every ``checkpoint_every`` epochs and a rerun resumes it
  to the same result; ``--seeds N`` trains each source's selected (layer, LR) again with more seeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from marble.devices import keep_freed_memory
from marble.probe.frames import FrameFeatures, ModuleProbe, feature_layers, make_module_probes, probe_input, seeded
from marble.probe.heads import head_kind
from marble.probe.select import pick_best
from marble.probe.sweep import WEIGHTED, Probe, dropout_key
from marble.separation import (N_FFT, SAMPLE_RATE, WIENER_EPS, WIENER_FRAMES, WIENER_ITERATIONS, align_frames,
                               mono_magnitude, num_frames, separate_targets, settings)
from marble.separation.stems import MIXTURE, TrackStems, chunk_samples, chunk_schedule, read_mixture, training_chunk
from marble.separation.workers import ModelWorkers, each

CHUNKS_PER_TRACK = 64  # the reference's samples per track and epoch (86 x 64 = 5,504 chunks)
GROUP_BYTES = 1 << 30  # estimates of the models separated together on one track (float32 outputs and their copies)


class EvalTrack:
    """One whole validation/test track at the encoder rate: the stereo mixture (``mixture.wav``, or
    stem 0 of a ``.stem.mp4``) and the stereo references, read when needed."""

    def __init__(self, item, stems: TrackStems):
        self.item, self.stems = item, stems

    def mixture(self) -> torch.Tensor:
        """``[2, T]`` at the encoder rate; a wav mixture is read as ``marble predict`` reads its input
        (:func:`marble.separation.stems.read_mixture`)."""
        if self.stems.is_wav:
            return torch.as_tensor(read_mixture(self.item.path, self.stems.sample_rate)[0])
        return torch.as_tensor(self.stems.read(MIXTURE))

    def reference(self, source: str) -> np.ndarray:
        return self.stems.read(source)  # [C, T]


def _models_input(mp: ModuleProbe, x: torch.Tensor, feat_layers, frames: int) -> torch.Tensor:
    """Encoder features ``[B, S_sel, T, H]`` -> one model's input ``[B, frames, H]`` (T cut or
    zero-filled to the STFT frames, as the reference pads; the weighted sum mixes on axis 1)."""
    xi = probe_input(mp.layer, x, feat_layers, 1)  # [B, T, H] or [B, S-1, T, H]
    return align_frames(xi, frames, dim=-2, fill="zero")


def _head_step(model: torch.nn.Module, x: torch.Tensor, mix_mag: torch.Tensor, state=None, draws=None):
    """One block through a per-source model (weighted sum first when it has one), LSTM state carried; with
    ``draws`` (training: the context of the LSTM's dropout draws) mixture and output are frames-major ``[B, T, F]``
    (the head's ``frames``), else ``[B, F, T]``."""
    if isinstance(model, torch.nn.Sequential):  # WeightedStates -> head
        model, x = model[1], model[0](x)
    if draws is None:
        return model.step(x, mix_mag, state)
    return model.frames(x, mix_mag, state, draws)


def mse_gradient(pred: torch.Tensor, target: torch.Tensor, parts: int) -> torch.Tensor:
    """The gradient of ``mean((pred - target) ** 2) / parts`` with respect to ``pred``, element for element the one
    autograd's chain computes (``(1 / parts) / numel`` times ``2 * (pred - target)``; scaling by 2 is exact), in one
    pass instead of the loss's four forward and backward passes over the head's ``[B, N, F]`` output, whose value
    nothing reads (tests/test_separation.py checks it against autograd bit for bit)."""
    scale = torch.ones((), dtype=pred.dtype, device=pred.device) / parts / pred.numel()  # MeanBackward(DivBackward(1))
    return (pred - target).mul_(2 * scale)


def frames_magnitudes(wav: torch.Tensor, workers: ModelWorkers | None = None) -> torch.Tensor:
    """Training targets: the mono magnitude STFT of ``wav`` ``[..., C, n]`` frames-major, ``[..., N, F]`` (the
    head's :meth:`~marble.separation.head.OpenUnmixHead.frames` layout), one signal at a time (in ``workers``): each
    signal's STFT stays cache-sized (about twice as fast as the whole batch at once) and its numbers are the
    batch's on one thread, bit for bit."""
    flat = wav.reshape(-1, *wav.shape[-2:])
    out = torch.stack(each(lambda w: mono_magnitude(w).T, flat, workers))
    return out.reshape(*wav.shape[:-2], *out.shape[-2:])


def streamed_head(m, x: torch.Tensor, feat_layers, device):
    """``mags(first, mix_mag [F, n]) -> [F, n]`` for ``separate_target``: the model ``m.model`` (reading ``m.layer``)
    on the frames of one block of ``x`` (``[1, S_sel, N, H]`` aligned to the STFT frames), its LSTM state carried."""
    state = [None]

    def mags(a: int, mix_mag: torch.Tensor) -> torch.Tensor:
        n = mix_mag.shape[-1]
        xb = probe_input(m.layer, x[:, :, a:a + n].to(device), feat_layers, 1)
        y, state[0] = _head_step(m.model, xb, mix_mag[None].to(device), state[0])
        return y[0]

    return mags


def separate_track(mix: torch.Tensor, x: torch.Tensor, models: list, feat_layers: list[int], device,
                   workers: ModelWorkers | None = None):
    """Each model's estimate of one track, in order (numpy float32 ``[C, T]``, a generator): ``mix`` the stereo
    mixture ``[C, T]`` on ``device``, ``x`` its encoder features ``[1, S_sel, frames, H]`` (states ``feat_layers``),
    cut or zero-filled to the STFT frames (encoder frame i <-> STFT frame i); each of ``models`` (a ``ModuleProbe``
    or a shipped probe's :class:`~marble.probe.shipped.TargetModel`: ``.model`` reading ``.layer``) streamed through
    :func:`marble.separation.separate_targets`, as many at once as fit ``GROUP_BYTES`` of estimates (each
    estimate is, bit for bit, the one the model gives alone). The trainer's validation and test scoring and
    ``marble predict`` both separate here."""
    x = align_frames(x, num_frames(mix.shape[-1]), dim=-2, fill="zero")
    size = max(1, int(GROUP_BYTES // (mix.numel() * 4 * 2)))
    for g in range(0, len(models), size):
        heads = [streamed_head(m, x, feat_layers, device) for m in models[g:g + size]]
        yield from (e.cpu().numpy() for e in separate_targets(mix, heads, workers=workers))


def global_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """MDX-2021 global SDR of one source of one track (``[C, T]`` each), the card's ``sdr_*``."""
    from marble.metrics.separation import sdr_per_track

    return float(sdr_per_track([reference[None].transpose(0, 2, 1)], [estimate[None].transpose(0, 2, 1)],
                               labels=["target"])[0, 0])


@dataclass
class SweepState:
    """Everything a MUSDB sweep carries from one epoch to the next: the models ``[row][source]``
    (each with its optimiser, scheduler, best checkpoint and early-stopping counters) and the next
    epoch. Training draws depend on (seed, epoch) and dropout on (probe, epoch, micro-batch, source)
    only, so no random generator state needs keeping: :func:`save_state` and :func:`resume_state`
    carry the rest."""

    models: list[list[ModuleProbe]]
    epoch: int = 0

    @property
    def flat(self) -> list[ModuleProbe]:
        return [m for row in self.models for m in row]


_COUNTERS = ("best_score", "best_epoch", "bad_epochs", "epochs", "stopped", "active", "history")


def save_state(path, state: SweepState, fingerprint: str) -> None:
    """The sweep state at ``path`` (atomic: a crash mid-write leaves the previous one), loadable with
    ``weights_only``: every model's weights, optimiser, scheduler, best checkpoint and counters."""
    from marble.io import atomic_open

    def cpu(d):
        return {k: v.detach().cpu() for k, v in d.items()}

    models = [{"model": cpu(m.model.state_dict()), "optimizer": m.optimizer.state_dict(),
               "scheduler": m.scheduler.state_dict(), "best_state": m.best_state,
               **{k: getattr(m, k) for k in _COUNTERS}} for m in state.flat]
    with atomic_open(path) as f:
        torch.save({"kind": "separation", "fingerprint": fingerprint, "epoch": state.epoch, "models": models}, f)


def resume_state(path, fingerprint: str, state: SweepState) -> bool:
    """Load the sweep state saved at ``path`` into ``state`` (freshly built for the same probes); False when
    there is none. A state of another configuration, or one that does not fit, is refused, never resumed."""
    from marble.probe.sweep import StateFileError, check_fingerprint, read_state_file

    if path is None or not Path(path).exists():
        return False
    saved = read_state_file(path)
    check_fingerprint(path, saved.get("fingerprint"), fingerprint)
    if saved.get("kind") != "separation" or len(saved.get("models", ())) != len(state.flat):
        raise StateFileError(f"{path}: not the saved state of this separation sweep; rerun with --fresh")
    for m, d in zip(state.flat, saved["models"]):
        m.model.load_state_dict(d["model"])
        m.optimizer.load_state_dict(d["optimizer"])
        m.scheduler.load_state_dict(d["scheduler"])
        m.best_state = d["best_state"]
        for k in _COUNTERS:
            setattr(m, k, d[k])
    state.epoch = int(saved["epoch"])
    return True


class Separation:
    """The data and settings of one MUSDB sweep (tracks, features, chunk counts) and its steps.
    ``options``: ``plan`` (a ``RunPlan``: head and schedule; default the card's), ``batch_size``,
    ``accumulate``, ``chunks_per_epoch``, ``memory_gb``, ``targets`` (per probe, the sources to train; default
    all four)."""

    def __init__(self, card, encoder, items, probes: list[Probe], device, cache, options):
        from marble.probe.config import card_plan

        tr = card.training
        if tr.monitor != "main":
            raise ValueError(f"task {card.id!r}: separation models monitor their own validation SDR "
                             f"(training.monitor = 'main'), not {tr.monitor!r}")
        if int(encoder.sample_rate) != SAMPLE_RATE:
            raise ValueError(f"MUSDB probes use STFT hop 320 at 24 kHz (75 Hz frames); encoder {encoder.name!r} runs "
                             f"at {encoder.sample_rate} Hz")
        self.card, self.encoder, self.probes, self.device = card, encoder, list(probes), device
        self.plan = options.get("plan") or card_plan(card)
        self.sources = card.vocabulary()
        self.targets = options.get("targets") or [self.sources] * len(self.probes)
        self.batch_size = int(options.get("batch_size", self.plan.train.batch_size))
        self.accumulate = int(options.get("accumulate", tr.accumulate))
        self.chunk_s = float(card.audio.train_chunk_seconds or 6.0)
        self.train_stems = [TrackStems(it, self.sources, encoder.sample_rate) for it in items["train"]]
        self.chunks_per_epoch = int(options.get("chunks_per_epoch", CHUNKS_PER_TRACK * len(self.train_stems)))
        self.evals = {s: [EvalTrack(it, TrackStems(it, self.sources, encoder.sample_rate, mixture=True))
                          for it in items[s]] for s in ("valid", "test")}
        self.layers = list(dict.fromkeys(p.layer for p in probes))
        self.feat_layers = feature_layers(self.layers, encoder.num_states)
        self.train_feats = FrameFeatures(encoder, self.feat_layers, device, None, "train", 0.0, card)
        self.feats = {s: FrameFeatures(encoder, self.feat_layers, device, cache, s, options.get("memory_gb", 2.0), card,
                                       manifest=options.get("cache_manifest"))
                      for s in ("valid", "test")}
        self.seeds = list(dict.fromkeys(p.seed for p in probes))
        self.cache_manifest = options.get("cache_manifest")
        self._audio: dict = {}
        self._audio_bytes, self._audio_budget = 0, float(options.get("audio_memory_gb", 4.0)) * 1e9
        self.workers = ModelWorkers.for_device(device, options.get("workers"))  # models side by side on the CPU
        if torch.device(device).type == "cpu":
            keep_freed_memory()  # every step allocates and frees ~7 MB tensors: reuse their pages

    @property
    def chunks_per_step(self) -> int:
        return self.batch_size * self.accumulate

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.chunks_per_epoch / self.chunks_per_step)

    def new_state(self) -> SweepState:
        kind = head_kind(self.card)
        if kind.build is None:
            raise ValueError(f"task {self.card.id!r}: head kind {kind.kind!r} is not a separation head")

        from marble.registry import Head

        head = Head(**{f.name: self.plan.head[f.name] for f in dataclasses.fields(Head) if f.name in self.plan.head})
        card = dataclasses.replace(self.card, head=head)  # the plan's head (semi-constrained: the --config's)

        def build():
            return kind.build(card, self.encoder.dim, N_FFT // 2 + 1)

        tr, enc = self.plan.train, self.encoder
        return SweepState([[make_module_probes([p], build, tr, self.device, "max", enc.num_states, 1, target=s)[0]
                            for s in targets] for p, targets in zip(self.probes, self.targets)])

    # -- training ---------------------------------------------------------------------------------

    def train_epoch(self, state: SweepState, epoch: int) -> None:
        """One epoch of every active model: ``steps_per_epoch`` optimiser steps of up to
        ``chunks_per_step`` chunks, each step's chunks in ``accumulate`` micro-batches. The models of
        one seed share their chunks, drawn from ``default_rng([seed, epoch])``."""
        for seed in self.seeds:
            active = [m for m in state.flat if m.active and m.probe.seed == seed]
            if not active:
                continue
            rng = np.random.default_rng([seed, epoch, 0x5E9])
            schedule = chunk_schedule(len(self.train_stems), self.chunks_per_epoch, len(self.sources), rng)
            for m in active:
                m.model.train()
            n = chunk_samples(self.train_stems, self.chunk_s)
            chunks = np.empty((self.chunks_per_step, len(self.sources), 2, n), dtype=np.float32)  # every step's
            for step in range(self.steps_per_epoch):
                rows = schedule[step * self.chunks_per_step:(step + 1) * self.chunks_per_step]
                for i, r in enumerate(rows):
                    training_chunk(self.train_stems, self.chunk_s, rng, r, out=chunks[i])
                self.train_step(active, chunks[:len(rows)], epoch, step)

    def train_step(self, active: list[ModuleProbe], chunks: np.ndarray, epoch: int, step: int) -> None:
        """One optimiser step of each model in ``active`` on ``chunks`` ``[n, K, C, T]``: split evenly
        into ``accumulate`` micro-batches (as 8 DDP ranks split a step), each model's gradient the mean
        of its micro-batches' MSE gradients. Leaves the models' train/eval modes as they are."""
        micro = [idx for idx in np.array_split(np.arange(len(chunks)), self.accumulate) if len(idx)]
        for m in active:
            m.optimizer.zero_grad(set_to_none=True)
        for j, idx in enumerate(micro):
            batch = torch.as_tensor(chunks[idx], device=self.device)  # [B, K, C, n]
            mix = batch.sum(1)  # [B, C, n]
            x = self.train_feats.encode(mix.mean(1))  # [B, S_sel, T, H]
            mix_mag = frames_magnitudes(mix, self.workers)  # [B, N, F], frames-major as the head computes
            targets = frames_magnitudes(batch, self.workers)  # [B, K, N, F]

            def one(m: ModuleProbe) -> None:  # every model's turn ends before the next micro-batch
                k = self.sources.index(m.target)
                key = dropout_key(m.probe, epoch, step * self.accumulate + j, k)

                @contextlib.contextmanager
                def draws():  # the LSTM's dropout: one model at a time on torch's global generator, seeded
                    with self.workers.rng, seeded(key):
                        yield

                inp = _models_input(m, x, self.feat_layers, mix_mag.shape[-2])
                pred = _head_step(m.model, inp, mix_mag, draws=draws)[0]  # [B, N, F]
                pred.backward(mse_gradient(pred.detach(), targets[:, k], len(micro)))

            self.workers.map(one, active)
        self.workers.map(lambda m: m.optimizer.step(), active)

    # -- validation and test ----------------------------------------------------------------------

    def track(self, split: str, t: int) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Track ``t`` of ``split``: its mixture ``[C, T]`` on the device and its references (numpy
        ``[C, T]`` per source). Validation tracks are read once and kept while they fit
        ``audio_memory_gb``, since every epoch scores them again."""
        if (split, t) in self._audio:
            return self._audio[split, t]
        ev = self.evals[split][t]
        data = ev.mixture().to(self.device), {s: ev.reference(s) for s in self.sources}
        size = data[0].numel() * 4 + sum(r.nbytes for r in data[1].values())
        if split == "valid" and self._audio_bytes + size <= self._audio_budget:
            self._audio[split, t] = data
            self._audio_bytes += size
        return data

    def score(self, split: str, models: list, museval: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-track global SDR ``[len(models), n_tracks]`` of each model's own reconstruction of its
        source on ``split`` (and museval's per-track median SDR with ``museval``); ``models``: ``ModuleProbe``s, or a
        shipped probe's rebuilt ``TargetModel``s. Track by track (its audio kept while ``audio_memory_gb`` allows, its
        features by ``FrameFeatures``), separated by :func:`separate_track`."""
        from marble.metrics.separation import museval_sdr_per_track

        tracks = self.evals[split]
        sdr = np.zeros((len(models), len(tracks)))
        mus = np.full((len(models), len(tracks)), np.nan) if museval else None
        for m in models:
            m.model.eval()
        with torch.no_grad():
            for t, ev in enumerate(tracks):
                mix, refs = self.track(split, t)  # [C, n] on the device
                x = self.feats[split](ev.item)[None]  # [1, S_sel, T, H]
                est = separate_track(mix, x, models, self.feat_layers, self.device, self.workers)
                for j, (m, e) in enumerate(zip(models, est)):
                    ref = refs[m.target]
                    e = e[:, :ref.shape[1]]
                    sdr[j, t] = global_sdr(ref, e)
                    if museval:
                        mus[j, t] = museval_sdr_per_track([ref.T[None]], [e.T[None]], labels=[m.target],
                                                          rate=SAMPLE_RATE)[0, 0]
        return sdr, mus

    def validate_epoch(self, state: SweepState, epoch: int) -> None:
        """Each active model's validation SDR (mean over tracks) -> its scheduler, early stopping and checkpoint."""
        active = [m for m in state.flat if m.active]
        sdr, _ = self.score("valid", active)
        for m, v in zip(active, sdr.mean(1)):
            m.observe(v, epoch + 1, self.plan.train.early_stop_patience)


def _median(x: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmedian(x))


def train_separation(card, encoder, items, probes: list[Probe], max_epochs: int, device, cache, options) -> dict:
    """Train the four source models of every probe (any layers, LRs and seeds) in one pass, each on its own
    validation SDR. ``options`` as :class:`Separation`'s, and ``state_path`` (the sweep state, saved every
    ``checkpoint_every`` epochs and resumed when its ``fingerprint`` matches), ``on_epoch``,
    ``stop_after_epoch`` (tests). Returns ``{"run": Separation, "state": SweepState}`` with every model at its
    best checkpoint (:func:`sweep_outputs` selects and scores them), or ``{"interrupted": True}`` when
    ``stop_after_epoch`` ended the pass early."""
    run = Separation(card, encoder, items, probes, device, cache, options)
    state = run.new_state()
    path, fp, stop = options.get("state_path"), options.get("fingerprint", ""), options.get("stop_after_epoch")
    resume_state(path, fp, state)
    every = max(1, int(options.get("checkpoint_every", 1)))
    on_epoch = options.get("on_epoch")
    while state.epoch < max_epochs and any(m.active for m in state.flat):
        if stop is not None and state.epoch >= stop:
            return {"interrupted": True}
        epoch = state.epoch
        run.train_epoch(state, epoch)
        run.validate_epoch(state, epoch)
        state.epoch = epoch + 1
        if path is not None and (state.epoch % every == 0 or not any(m.active for m in state.flat)):
            save_state(path, state, fp)
        if on_epoch is not None:
            finite = [m.best_score for m in state.flat if math.isfinite(m.best_score)]
            on_epoch(state.epoch, sum(m.active for m in state.flat), max(finite) if finite else float("nan"))
    for m in state.flat:
        m.restore()
        m.model.eval()
    return {"run": run, "state": state}


def sweep_outputs(out: dict, n_grid: int, *, seed: int, seeds: int, seeds_sweep: bool, museval: bool, max_epochs: int,
                  train_extra, track: str | None = None, model: str | None = None) -> dict:
    """The result parts of a finished pass (``train_separation``'s ``out``; probes seed-major, ``n_grid`` a seed):
    the first seed's grid selected per source (table, selection, valid and test) and, with ``seeds`` > 1, the
    seed repeats: each seed's own sweep and selection (``seeds_sweep``), or each source's selected (layer, LR)
    trained again with seeds seed+1 .. seed+N-1 (``train_extra(probes, targets)`` trains those probes' models of
    the sources that selected them). A seed's value is its MUSDB score, the mean of its four test SDRs. ``track`` and
    ``model`` name the result in the shipped probe (``parts["probe"]``)."""
    from marble.probe.report import seed_summary

    run, state = out["run"], out["state"]
    card, main = run.card, run.card.metrics.main
    parts = _result(run, state, card, max_epochs, museval, rows=range(n_grid), track=track, model=model)
    parts["seeds"] = None
    if seeds <= 1:
        return parts
    if seeds_sweep:
        n_seeds = len(run.probes) // n_grid
        values = [parts["test"][main]] + [_result(run, state, card, max_epochs, False,
                                                  rows=range(b * n_grid, (b + 1) * n_grid))["test"][main]
                                          for b in range(1, n_seeds)]
        parts["seeds"] = seed_summary([run.probes[b * n_grid].seed for b in range(n_seeds)], values, main)
        return parts
    chosen: dict = {}  # (layer, LR) -> the sources that selected it
    for s in run.sources:
        sel = parts["selected"]["per_source"][s]
        chosen.setdefault((sel["layer"], sel["lr"]), []).append(s)
    extra = [Probe(layer, lr, seed + i) for i in range(1, seeds) for layer, lr in chosen]
    more = train_extra(extra, [srcs for _ in range(1, seeds) for srcs in chosen.values()])
    values = [parts["test"][main]]
    for i in range(1, seeds):
        models = [m for p, row in zip(more["run"].probes, more["state"].models) if p.seed == seed + i for m in row]
        by_source = dict(zip([m.target for m in models], more["run"].score("test", models)[0].mean(1)))
        values.append(float(np.mean([by_source[s] for s in run.sources])))
    parts["seeds"] = seed_summary([seed + i for i in range(seeds)], values, main)
    return parts


def _result(run: Separation, state: SweepState, card, max_epochs: int, use_museval: bool, rows=None,
            track: str | None = None, model: str | None = None) -> dict:
    """Per-source selection on validation SDR among the probes ``rows`` (default all), the four selected models
    shipped as one probe (``probe``), test (and museval) of the models rebuilt from its bytes, the result dict."""
    from marble.probe.shipped import ShippedProbe

    rows = list(range(len(run.probes)) if rows is None else rows)
    probes, sources, models = [run.probes[i] for i in rows], run.sources, [state.models[i] for i in rows]
    per_source = card.metrics.per_source  # source -> [its SDR metric, its museval metric]
    main = card.metrics.main
    # each model's validation SDR at its kept epoch (its checkpoint's own reconstruction, scored then: the same
    # number a re-scoring gives, bit for bit); a model never validated (no epoch run) is scored now
    flat = [m for row in models for m in row]
    unseen = [m for m in flat if not m.history]
    fresh = dict(zip(map(id, unseen), run.score("valid", unseen)[0].mean(1))) if unseen else {}
    valid_sdr = np.array([fresh[id(m)] if id(m) in fresh else m.best_score for m in flat]).reshape(len(probes),
                                                                                                  len(sources))
    sel = [pick_best(list(valid_sdr[:, k]), card.metrics.direction) for k in range(len(sources))]
    chosen = [models[sel[k]][k] for k in range(len(sources))]
    # the shipped probe's bytes are what `marble predict` applies; the test scores come from the models they rebuild
    shipped = ShippedProbe.from_bytes(ShippedProbe.from_modules(chosen, card=card, track=track, model=model,
                                                                cache_manifest=run.cache_manifest,
                                                                encoder=run.encoder,
                                                                extra={"separation": settings()}).to_bytes())
    test_sdr, test_mus = run.score("test", shipped.modules(run.device), museval=use_museval)
    valid_mus = run.score("valid", chosen, museval=True)[1] if use_museval else None
    # the test metrics are computed from the per-track scores the result ships (docs/leaderboard.md), by the
    # functions `marble leaderboard check` recomputes them with
    outputs = test_outputs([ev.item.uid for ev in run.evals["test"]], sources, test_sdr, test_mus)
    test = outputs.metrics(card.metrics.names)

    rows_valid = [{main: float(np.mean(valid_sdr[i]))} for i in range(len(probes))]
    rows_test = [{main: None} for _ in probes]
    for i in range(len(probes)):
        for k, s in enumerate(sources):
            sdr_m, mus_m = per_source[s]
            rows_valid[i][sdr_m] = float(valid_sdr[i, k])
            rows_valid[i][mus_m] = _median(valid_mus[k]) if use_museval and sel[k] == i else None
            rows_test[i][sdr_m] = test[sdr_m] if sel[k] == i else None
            rows_test[i][mus_m] = test[mus_m] if sel[k] == i else None
        if all(sel[k] == i for k in range(len(sources))):
            rows_test[i][main] = test[main]
    valid = {main: float(np.mean([valid_sdr[sel[k], k] for k in range(len(sources))]))}
    for k, s in enumerate(sources):
        for name in per_source[s]:
            valid[name] = rows_valid[sel[k]][name]
    valid = {n: valid[n] for n in card.metrics.names}
    sweep = []
    for i, p in enumerate(probes):
        ms = models[i]
        sweep.append({"layer": p.layer, "lr": p.lr, "valid": {n: rows_valid[i][n] for n in card.metrics.names},
                      "test": {n: rows_test[i][n] for n in card.metrics.names},
                      "best_epoch": max(m.best_epoch for m in ms), "epochs": max(m.epochs for m in ms),
                      "stopped": "early" if all(m.stopped == "early" for m in ms) else "max_epochs"})
    selected = {"per_source": {s: {"layer": probes[sel[k]].layer, "lr": probes[sel[k]].lr,
                                   "valid_score": float(valid_sdr[sel[k], k]), "best_epoch": chosen[k].best_epoch,
                                   "epochs": chosen[k].epochs, "metrics": list(per_source[s])}
                                for k, s in enumerate(sources)},
                "valid_score": valid[main], "group_rule": None}
    weighted_sum, ws_per_source = None, None
    ws = [i for i, p in enumerate(probes) if p.layer == WEIGHTED]
    if ws:
        wb = ws[pick_best([rows_valid[i][main] for i in ws], card.metrics.direction)]
        weighted_sum = {"lr": probes[wb].lr, "weights": list(np.mean([m.model[0].weights() for m in models[wb]], axis=0))}
        ws_per_source = {}
        for k, s in enumerate(sources):
            wk = ws[pick_best([valid_sdr[i, k] for i in ws], card.metrics.direction)]
            ws_per_source[s] = {"lr": probes[wk].lr, "weights": models[wk][k].model[0].weights()}
    training = {**run.plan.training, "learning_rates": list(dict.fromkeys(p.lr for p in probes)),
                "layers": list(dict.fromkeys(p.layer for p in probes)), "max_epochs": max_epochs,
                "batch_size": run.batch_size,
                "accumulate": run.accumulate, "chunks_per_step": run.chunks_per_step,
                "steps_per_epoch": run.steps_per_epoch, "chunks_per_epoch": run.chunks_per_epoch,
                "chunks_per_track": CHUNKS_PER_TRACK, "n_train_tracks": len(run.train_stems),
                "train_chunk_seconds": run.chunk_s,
                "models": "one open-unmix-style head per source and (layer, LR), selected per source",
                "per_source_epochs": {f"{probes[i].layer}|{probes[i].lr!r}": {m.target: [m.best_epoch, m.epochs, m.stopped]
                                                                            for m in models[i]} for i in range(len(probes))},
                "monitor_score": "each model's validation global SDR of its own source (mode max)",
                "reconstruction": f"per-source Wiener EM (target + residual), {WIENER_ITERATIONS} iteration, "
                                  f"eps {WIENER_EPS:g}, "
                                  f"blocks of {WIENER_FRAMES} frames",
                "target": "mono magnitude STFT n_fft 2048 hop 320 at 24 kHz", "scoring_rate": SAMPLE_RATE,
                "augmentation": {"random_track_mixing": True, "gain": [0.25, 1.25], "channel_swap": True},
                "eval_features": "frame cache" if run.feats["valid"].store is not None else
                                 "encoder on the fly (the card's piece rule)",
                "test_scored_for": "the selected model of each source only (null elsewhere)",
                "weighted_sum": "weights = mean over the four source models of the best weighted row" if ws else None,
                "weighted_sum_per_source": ws_per_source,
                "museval_for": "the selected model of each source only" if use_museval else "not computed"}
    return {"sweep": sweep, "selected": selected, "valid": valid, "test": test, "weighted_sum": weighted_sum,
            "training": training, "test_outputs": outputs, "probe": shipped}


def test_outputs(keys: list[str], sources: list[str], sdr: np.ndarray, museval: np.ndarray | None):
    """The per-track test scores a MUSDB result ships (:class:`marble.results.artifacts.TestOutputs`, per-item
    scores), keyed by track uid: ``estimate`` [tracks, sources] the global SDR of each source's selected model
    (``sdr`` is [sources, tracks], float64) and, when museval ran, ``museval`` [tracks, sources] its per-track
    median SDR (NaN where museval could not score a track)."""
    from marble.results.artifacts import TestOutputs

    extra = {} if museval is None else {"museval": np.ascontiguousarray(np.asarray(museval, np.float64).T)}
    return TestOutputs(keys, None, np.ascontiguousarray(np.asarray(sdr, np.float64).T), "track", tuple(sources),
                       extra=extra)


test_outputs.__test__ = False  # not a pytest test
