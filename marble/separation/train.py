"""MUSDB18, constrained track (PROTOCOL §4, the reference probe script): one open-unmix-style model
per source for every (layer, LR) of the sweep.

* **training**: ``chunks_per_track`` (64) random chunks of ``audio.train_chunk_seconds`` (6 s) per
  training track and epoch, each source from a random track at a random offset, gain U(0.25, 1.25),
  channels swapped with probability 1/2; the mono sum goes through the frozen encoder once per
  batch and feeds every model. Target: the source's mono magnitude STFT; loss MSE. The draws come
  from ``numpy default_rng([seed, epoch])`` and each model's dropout from its own (probe, epoch,
  batch) seed, so a model trains the same whatever else runs beside it.
* **monitor** (``training.monitor = "loss"``, as open-unmix's training script): each model's MSE on
  the whole validation tracks; its own plateau scheduler, early stopping and best checkpoint.
* **selection and scores**: a (layer, LR) row separates whole tracks with its four models (encoder
  frames from the frame cache, else the encoder in pieces of <= 90 s; the LSTM over the whole
  track), Wiener EM with a residual (``marble.separation.separate_track``), inverse STFT, and is
  scored at 24 kHz against the references resampled to 24 kHz (MDX global SDR; museval median SDR
  for the selected row). The row with the best validation ``sdr_mean`` is reported; test metrics
  are computed for that row only (null = not computed elsewhere).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from marble.probe.frames import FrameFeatures, ModuleProbe, feature_layers, make_module_probes, probe_input, seeded
from marble.probe.heads import head_kind
from marble.probe.select import pick_best
from marble.probe.sweep import WEIGHTED, Probe, dropout_key
from marble.separation import N_FFT, SAMPLE_RATE, align_frames, mono_magnitude, num_frames, separate_track
from marble.separation.stems import TrackStems, training_chunk

CHUNKS_PER_TRACK = 64  # the reference's samples per track and epoch (86 x 64 = 5,504 chunks)


class EvalTrack:
    """One whole validation/test track at the encoder rate: stereo ``mixture.wav`` and the stereo
    references (both at 24 kHz), read when needed (never all tracks at once)."""

    def __init__(self, item, stems: TrackStems):
        self.item, self.stems = item, stems

    def mixture(self) -> torch.Tensor:
        from marble.audio import AudioError

        if self.stems.is_wav:
            import soundfile as sf

            x, sr = sf.read(str(self.item.path), dtype="float32", always_2d=True)
            if x.shape[1] == 1:
                x = np.repeat(x, 2, axis=1)
            x = self.stems._resample(np.ascontiguousarray(x.T)) if sr == self.stems.native_rate else None
            if x is None:
                raise AudioError(self.item.path, f"mixture rate {sr} differs from the stems' {self.stems.native_rate}")
            return torch.as_tensor(x)
        return torch.as_tensor(sum(self.stems.read(s) for s in self.stems.sources))

    def references(self) -> np.ndarray:
        return np.stack([self.stems.read(s) for s in self.stems.sources])  # [K, C, T]


def _models_input(mp: ModuleProbe, x: torch.Tensor, feat_layers, frames: int) -> torch.Tensor:
    """Encoder features ``[B, S_sel, T, H]`` -> one model's input ``[B, frames, H]`` (T aligned to
    the STFT frames; the weighted sum mixes on axis 1)."""
    xi = probe_input(mp.layer, x, feat_layers, 1)  # [B, T, H] or [B, S-1, T, H]
    return align_frames(xi, frames, dim=-2)


def _head_step(model: torch.nn.Module, x: torch.Tensor, mix_mag: torch.Tensor, state):
    """One block through a per-source model (weighted sum first when it has one), LSTM state carried."""
    if isinstance(model, torch.nn.Sequential):  # WeightedStates -> head
        return model[1].step(model[0](x), mix_mag, state)
    return model.step(x, mix_mag, state)


def streamed_heads(row: list[ModuleProbe], x: torch.Tensor, feat_layers, device):
    """``mags(first, mix_mag [F, n]) -> [K, F, n]`` for ``separate_track``: the row's per-source models
    on the frames of one block of ``x`` (``[1, S_sel, N, H]`` aligned to the STFT frames)."""
    states = [None] * len(row)

    def mags(a: int, mix_mag: torch.Tensor) -> torch.Tensor:
        n = mix_mag.shape[-1]
        xb = x[:, :, a:a + n].to(device)
        out = []
        for k, m in enumerate(row):
            y, states[k] = _head_step(m.model, probe_input(m.layer, xb, feat_layers, 1), mix_mag[None].to(device),
                                      states[k])
            out.append(y[0])
        return torch.stack(out).cpu()

    return mags


def train_separation(card, encoder, items, probes: list[Probe], max_epochs: int, device, cache, options) -> dict:
    tr = card.training
    if tr.monitor != "loss":
        raise ValueError(f"task {card.id!r}: separation probes monitor each model's validation loss "
                         f"(training.monitor = 'loss'), not {tr.monitor!r}")
    if int(encoder.sample_rate) != SAMPLE_RATE:
        raise ValueError(f"MUSDB probes use STFT hop 320 at 24 kHz (75 Hz frames); encoder {encoder.name!r} runs at "
                         f"{encoder.sample_rate} Hz")
    sources = card.vocabulary()
    K = len(sources)
    batch_size = int(options.get("batch_size", tr.batch_size))
    chunk_s = float(card.audio.train_chunk_seconds or 6.0)
    use_museval = bool(options.get("museval", True))
    train_stems = [TrackStems(it, sources, encoder.sample_rate) for it in items["train"]]
    chunks_per_epoch = int(options.get("chunks_per_epoch", CHUNKS_PER_TRACK * len(train_stems)))
    evals = {s: [EvalTrack(it, TrackStems(it, sources, encoder.sample_rate)) for it in items[s]] for s in ("valid", "test")}
    layers = list(dict.fromkeys(p.layer for p in probes))
    feat_layers = feature_layers(layers, encoder.num_states)
    train_feats = FrameFeatures(encoder, feat_layers, device, None, "train", 0.0, card)
    feats = {s: FrameFeatures(encoder, feat_layers, device, cache, s, options.get("memory_gb", 2.0), card)
             for s in ("valid", "test")}
    n_bins = N_FFT // 2 + 1
    monitor_direction = "min"  # a loss

    kind = head_kind(card)
    if kind.build is None:
        raise ValueError(f"task {card.id!r}: head kind {kind.kind!r} is not a separation head")

    def build():
        return kind.build(card, encoder.dim, n_bins)

    models: list[list[ModuleProbe]] = [  # [row][source]
        [make_module_probes([p], build, tr, device, monitor_direction, encoder.num_states, 1, target=s)[0]
         for s in sources] for p in probes]
    flat = [m for row in models for m in row]
    seed = probes[0].seed

    def eval_features(split: str, ev: EvalTrack):
        x = feats[split](ev.item)  # [S_sel, T, H]
        mix = ev.mixture().to(device)  # [C, n]
        mix_mag = mono_magnitude(mix)[None]  # [1, F, N]
        return x[None], mix, mix_mag

    def valid_losses(active: list[ModuleProbe]) -> list[float]:
        tot = np.zeros(len(active))
        for m in active:
            m.model.eval()
        with torch.no_grad():
            for ev in evals["valid"]:
                x, _, mix_mag = eval_features("valid", ev)
                target = {s: mono_magnitude(torch.as_tensor(ev.stems.read(s), device=device))[None] for s in sources}
                for k, m in enumerate(active):
                    pred = m.model(_models_input(m, x, feat_layers, mix_mag.shape[-1]), mix_mag)
                    tot[k] += float(torch.mean((pred - target[m.target]) ** 2))
        return list(tot / max(1, len(evals["valid"])))

    for epoch in range(max_epochs):
        active = [m for m in flat if m.active]
        if not active:
            break
        rng = np.random.default_rng([seed, epoch, 0x5E9])
        for b in range(math.ceil(chunks_per_epoch / batch_size)):
            n = min(batch_size, chunks_per_epoch - b * batch_size)
            batch = torch.as_tensor(np.stack([training_chunk(train_stems, chunk_s, rng) for _ in range(n)]),
                                    device=device)  # [B, K, C, n]
            mix = batch.sum(1)  # [B, C, n]
            x = train_feats.encode(mix.mean(1))  # [B, S_sel, T, H]
            mix_mag = mono_magnitude(mix)  # [B, F, N]
            targets = mono_magnitude(batch)  # [B, K, F, N]
            for m in active:
                m.model.train()
                m.optimizer.zero_grad(set_to_none=True)
                with seeded(dropout_key(m.probe, epoch, b, sources.index(m.target))):
                    pred = m.model(_models_input(m, x, feat_layers, mix_mag.shape[-1]), mix_mag)
                loss = torch.mean((pred - targets[:, sources.index(m.target)]) ** 2)
                loss.backward()
                m.optimizer.step()
        for m, v in zip(active, valid_losses(active)):
            m.observe(v, epoch + 1, tr.early_stop_patience)
        on_epoch = options.get("on_epoch")
        if on_epoch is not None:
            on_epoch(epoch + 1, sum(m.active for m in flat), float("nan"))

    for m in flat:
        m.restore()
        m.model.eval()

    sdr_names = [f"sdr_{s}" for s in sources]
    museval_names = [f"museval_sdr_{s}" for s in sources]

    def score(split: str, rows: list[int], with_museval: bool) -> list[dict]:
        """All card metrics of each row in ``rows``, track by track (bounded memory)."""
        from marble.metrics.separation import museval_sdr_per_track, sdr_per_track

        sdr = [[] for _ in rows]
        mus = [[] for _ in rows]
        with torch.no_grad():
            for ev in evals[split]:
                x = feats[split](ev.item)[None]  # [1, S_sel, T, H]
                mix = ev.mixture()  # [C, n]
                x = align_frames(x, num_frames(mix.shape[-1]), dim=-2)  # encoder frame i <-> STFT frame i
                ref = ev.references()  # [K, C, n]
                for r_i, r in enumerate(rows):
                    est = separate_track(mix, streamed_heads(models[r], x, feat_layers, device)).numpy()  # [K, C, n]
                    r_t, e_t = ref.transpose(0, 2, 1), est.transpose(0, 2, 1)[:, : ref.shape[2]]
                    sdr[r_i].append(sdr_per_track([r_t], [e_t], labels=sources)[0])
                    if with_museval:
                        mus[r_i].append(museval_sdr_per_track([r_t], [e_t], labels=sources, rate=SAMPLE_RATE)[0])
        out = []
        for r_i in range(len(rows)):
            per = np.mean(np.asarray(sdr[r_i]), axis=0)
            d = {"sdr_mean": float(np.mean(per)), **{n: float(v) for n, v in zip(sdr_names, per)}}
            if with_museval:
                with np.errstate(all="ignore"):
                    med = np.nanmedian(np.asarray(mus[r_i]), axis=0)
                d.update({n: float(v) for n, v in zip(museval_names, med)})
            else:
                d.update(dict.fromkeys(museval_names))
            out.append(d)
        return out

    all_rows = list(range(len(probes)))
    valid = score("valid", all_rows, False)
    main = card.metrics.main
    best = pick_best([v[main] for v in valid], card.metrics.direction)
    if use_museval:
        valid[best] = score("valid", [best], True)[0]
    test_best = score("test", [best], use_museval)[0]
    empty = dict.fromkeys(card.metrics.names)
    sweep = []
    for i, p in enumerate(probes):
        ms = models[i]
        sweep.append({"layer": p.layer, "lr": p.lr, "valid": valid[i], "test": test_best if i == best else dict(empty),
                      "best_epoch": max(m.best_epoch for m in ms), "epochs": max(m.epochs for m in ms),
                      "stopped": "early" if all(m.stopped == "early" for m in ms) else "max_epochs"})
    bp = probes[best]
    selected = {"layer": bp.layer, "lr": bp.lr, "valid_score": valid[best][main], "best_epoch": sweep[best]["best_epoch"],
                "epochs": sweep[best]["epochs"], "group_rule": None}
    weighted_sum = None
    ws = [i for i, p in enumerate(probes) if p.layer == WEIGHTED]
    if ws:
        wb = ws[pick_best([valid[i][main] for i in ws], card.metrics.direction)]
        per_source = {m.target: m.model[0].weights() for m in models[wb]}
        weighted_sum = {"lr": probes[wb].lr, "weights": list(np.mean(list(per_source.values()), axis=0))}
    training = {**dataclasses.asdict(tr), "learning_rates": list(dict.fromkeys(p.lr for p in probes)), "layers": layers,
                "max_epochs": max_epochs, "batch_size": batch_size, "chunks_per_epoch": chunks_per_epoch,
                "chunks_per_track": CHUNKS_PER_TRACK, "n_train_tracks": len(train_stems),
                "train_chunk_seconds": chunk_s, "models": "one open-unmix-style head per source and (layer, LR)",
                "per_source_epochs": {f"{probes[i].layer}|{probes[i].lr!r}": {m.target: [m.best_epoch, m.epochs, m.stopped]
                                                                            for m in models[i]} for i in all_rows},
                "reconstruction": "Wiener EM, 1 iteration, residual source, blocks of 300 frames (norbert)",
                "target": "mono magnitude STFT n_fft 2048 hop 320 at 24 kHz", "scoring_rate": SAMPLE_RATE,
                "augmentation": {"random_track_mixing": True, "gain": [0.25, 1.25], "channel_swap": True},
                "eval_features": "frame cache" if feats["valid"].store is not None else "encoder on the fly, pieces <= 90 s",
                "test_scored_for": "selected row only (null elsewhere)",
                "weighted_sum": "weights = mean over the four source models" if ws else None,
                "weighted_sum_per_source": per_source if ws else None,
                "museval_for": "selected row only" if use_museval else "not computed"}
    passes = train_feats.encoder_passes + sum(f.encoder_passes for f in feats.values())
    return {"sweep": sweep, "selected": selected, "valid": valid[best], "test": test_best, "weighted_sum": weighted_sum,
            "training": training, "manifest_extra": {"encoder_passes": passes}}
