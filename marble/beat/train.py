"""GTZAN beat tracking, constrained track (PROTOCOL §4): every (layer, LR) frame MLP trains in one
batched pass (the clip sweep's stacked heads, Adam and dropout, ``marble.probe.sweep``).

* **training input**: at every epoch each training track gives one random crop of
  ``audio.train_chunk_seconds`` (10 s), cut before resampling and encoded as a clip of its own, so
  the encoder sees 10 s of context as in the reference. The crops of a batch go through the frozen
  encoder together, once, and feed all probes. Crops are drawn by ``numpy default_rng([seed,
  epoch])``: every probe of a seed sees the same crops, whatever else runs beside it. Crops are
  encoded on the fly (not cached): caching K crops per track costs K x 6.6 GB for MERT-95M on
  GTZAN and still repeats crops; the measured costs are in bench/README.md.
* **targets**: frame ``round(frame_rate * (t - crop start))`` of each beat, widened by
  ``training.label_widening`` frames; BCE averaged over every frame of the batch.
* **validation/test**: the first 30 s of each track (frame cache of ``marble extract``, else the encoder
  in pieces of <= 90 s); ``sigmoid(logit)`` in float64 decoded by the DBN at the frame rate; annotated
  beats at or after the end of the evaluated audio are dropped from the references.
* **scores**: the card's main metric (the pooled F-measure, references at frame resolution) is the
  monitor and the selection score; the per-track mir_eval F is reported beside it.
* **shipped probe**: the selected probe's head, its layer or mixing weights, the frame rate and the DBN settings
  are saved beside the result (:class:`marble.probe.shipped.ShippedProbe`); its test outputs, and the reported
  test scores, come from :func:`shipped_beats`, the path ``marble predict`` takes on new audio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings

import numpy as np
import torch

from marble.beat import DBNBeatTracker, beat_targets
from marble.probe.frames import FrameFeatures, feature_layers
from marble.probe.shipped import ShippedProbe
from marble.probe.sweep import (WEIGHTED, BatchedHeads, Checkpoints, Probe, adam_step, dropout_key, dropout_mask,
                                initial_state, observe, predict, probe_losses, resume_state)

CHUNK_ROWS = 512  # frames per micro-step (bounds activation memory: probes x 512 x hidden floats a tensor)


def _beats(item) -> np.ndarray:
    if "beats" not in (item.extra or {}):
        raise ValueError(f"{item.path}: item {item.uid!r} has no extra['beats'] (GTZAN-Rhythm JAMS annotation)")
    return np.asarray(item.extra["beats"], dtype=np.float64)


def evaluated_seconds(item, card) -> float:
    """Length (s) of the audio a validation/test track is evaluated on: the card's crop (GTZAN beat: the
    first 30 s) or less where the file ends sooner (read from the header, nothing decoded)."""
    from marble.audio import info

    sr, n = info(item.path)
    start = item.offset + card.audio.crop_offset_seconds
    return min(d for d in (max(n / sr - start, 0.0), item.duration, card.audio.crop_seconds) if d is not None)


def evaluated_references(item, card) -> np.ndarray:
    """The reference beats of an evaluated track: annotated beats at or after the end of the evaluated audio are
    dropped, as the reference's label slicing drops them (they could never be matched; PROTOCOL §4, third
    edition)."""
    beats = _beats(item)
    return beats[beats < evaluated_seconds(item, card)]


def score_beats(card, refs: list[np.ndarray], ests: list[np.ndarray], fps: float, names=None) -> dict[str, float]:
    """The card's beat metrics; those in ``FRAME_RESOLUTION_METRICS`` get references rounded to frames."""
    from marble.metrics import METRICS
    from marble.metrics.beat import FRAME_RESOLUTION_METRICS, at_frame_resolution

    quantised = at_frame_resolution(refs, fps)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for m in names or card.metrics.names:
            r = quantised if m in FRAME_RESOLUTION_METRICS else refs
            out[m] = float(METRICS[m](r, ests, labels=card.vocabulary()))
    return out


class CropSource:
    """Random training crops of ``seconds`` (cut before resampling, PROTOCOL §2) and their targets."""

    def __init__(self, items, encoder, seconds: float, widen: int):
        from marble.audio import info

        self.items, self.encoder, self.seconds, self.widen = list(items), encoder, float(seconds), int(widen)
        self.beats = [_beats(it) for it in self.items]
        self.durations = []
        for it in self.items:
            sr, n = info(it.path)
            self.durations.append(max(n / sr - it.offset, 0.0) if it.duration is None else it.duration)

    def starts(self, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(track order, crop start per track) of one epoch: depends on (seed, epoch) only."""
        rng = np.random.default_rng([seed, epoch, 0xBEA7])
        order = rng.permutation(len(self.items))
        u = rng.random(len(self.items))
        room = np.maximum(np.asarray(self.durations) - self.seconds, 0.0)
        return order, u * room

    def batch(self, idx, starts) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(wav at the encoder rate, beat times relative to the crop)]`` for tracks ``idx``."""
        from marble.audio import load

        out = []
        for j in idx:
            it, s = self.items[j], float(starts[j])
            wav = load(it.path, self.encoder.sample_rate, offset=it.offset + s, duration=self.seconds)
            out.append((wav, self.beats[j] - s))
        return out


def _encode_groups(feats: FrameFeatures, crops) -> list[torch.Tensor]:
    """Features ``[S_sel, T, H]`` per crop; crops of equal length share one encoder batch."""
    out: list = [None] * len(crops)
    by_len: dict[int, list[int]] = {}
    for i, (w, _) in enumerate(crops):
        by_len.setdefault(len(w), []).append(i)
    for idx in by_len.values():
        f = feats.encode(np.stack([crops[i][0] for i in idx]))
        for k, i in enumerate(idx):
            out[i] = f[k]
    return out


def train_beat(card, encoder, items, probes: list[Probe], max_epochs: int, device, cache, options) -> dict:
    """Train every probe of ``probes`` (any layers, LRs and seeds) in one batched pass and score each one's best
    checkpoint on valid and test. ``options``: ``plan`` (a ``RunPlan``: head and schedule; default the card's),
    ``batch_size`` (tracks a batch; default the plan's), ``memory_gb``, ``on_epoch``, ``state_path`` (the sweep
    state, saved every ``checkpoint_every`` epochs and resumed when its ``fingerprint`` matches),
    ``stop_after_epoch`` (tests). Returns ``{"scored": [runs.Scored per probe], "training": {...}, "probe": f(i, track=,
    model=) -> probe i as a :class:`~marble.probe.shipped.ShippedProbe`, "test_outputs": f(shipped probe) -> its
    per-track test outputs (:func:`shipped_beats`)}``, or
    ``{"interrupted": True}`` when ``stop_after_epoch`` ended the pass early."""
    from marble.probe.config import card_plan
    from marble.probe.runs import Scored

    tr = card.training
    if tr.monitor != "main":
        raise ValueError(f"task {card.id!r}: beat probes monitor the main metric (training.monitor = 'main'), "
                         f"not {tr.monitor!r}")
    plan = options.get("plan") or card_plan(card, max_epochs)
    cfg = dataclasses.replace(plan.train, max_epochs=int(max_epochs),
                              batch_size=int(options.get("batch_size", plan.train.batch_size)),
                              loss=tr.loss, direction=card.metrics.direction)
    crop_s = float(card.audio.train_chunk_seconds or card.audio.crop_seconds or 10.0)
    fps = float(encoder.frame_rate)
    layers = list(dict.fromkeys(p.layer for p in probes))
    feat_layers = feature_layers(layers, encoder.num_states)
    if WEIGHTED in layers:  # the stacked heads mix states 1..L from an array holding 0..L
        feat_layers = list(range(encoder.num_states))
    train_feats = FrameFeatures(encoder, feat_layers, device, None, "train", 0.0, card)
    feats = {s: FrameFeatures(encoder, feat_layers, device, cache, s, options.get("memory_gb", 4.0), card,
                               manifest=options.get("cache_manifest"))
             for s in ("valid", "test")}
    tracker = DBNBeatTracker(fps=fps, device=device)
    refs = {s: [evaluated_references(it, card) for it in items[s]] for s in ("valid", "test")}
    crops = CropSource(items["train"], encoder, crop_s, tr.label_widening)
    main, direction = card.metrics.main, card.metrics.direction
    # heads index positions in feat_layers; keys (dropout, seeds) stay the probes' own
    local = [Probe(p.layer if p.layer == WEIGHTED else feat_layers.index(p.layer), p.lr, p.seed) for p in probes]
    heads = BatchedHeads(local, cfg, len(feat_layers))
    dims = [encoder.dim, *cfg.hidden, 1]
    L = len(dims) - 1
    names = [f"w{i}" for i in range(L)] + [f"b{i}" for i in range(L)] + ["mix"]
    P = len(probes)
    seed_of = np.array([p.seed for p in probes])
    state_path, stop = options.get("state_path"), options.get("stop_after_epoch")
    state = resume_state(state_path, options.get("fingerprint", ""), device)
    if state is None:
        state = initial_state(probes, cfg, dims, encoder.num_states, device)
        state.fingerprint = options.get("fingerprint", "")
    checkpoints = Checkpoints(state_path, int(options.get("checkpoint_every", 1)))

    def activations(split: str, params, sel) -> list[list[np.ndarray]]:
        out = [[] for _ in sel]
        for it in items[split]:
            x = feats[split](it).transpose(0, 1)  # [T, S_sel, H]
            logits = predict(heads, params, x, sel)  # [P_sel, T, 1]
            act = torch.sigmoid(logits[..., 0].double()).cpu().numpy()
            for k in range(len(sel)):
                out[k].append(act[k])
        return out

    def decode(acts) -> list[list[np.ndarray]]:
        flat = tracker.batch([a for per in acts for a in per])
        n = len(acts[0]) if acts else 0
        return [flat[k * n:(k + 1) * n] for k in range(len(acts))]

    while True:
        active = np.array([i for i in range(P) if state.stopped[i] is None])
        if len(active) == 0 or (stop is not None and state.epoch >= stop):
            break
        epoch = state.epoch  # 0-based index of the epoch about to run
        act_t = torch.as_tensor(active, device=device)
        wp = {k: state.params[k][act_t].clone().requires_grad_(k != "mix" or bool(heads.is_weighted[active].any()))
              for k in names}
        m1 = {k: state.exp_avg[k][act_t].clone() for k in names}
        m2 = {k: state.exp_avg_sq[k][act_t].clone() for k in names}
        steps = np.array([state.steps[i] for i in active], dtype=np.float64)
        lrs = np.array([state.lrs[i] for i in active], dtype=np.float64)
        # the probes of one seed share their crops: one group per seed, positions into ``active``
        act_seeds = seed_of[active]
        groups = [np.flatnonzero(act_seeds == s) for s in np.unique(act_seeds)]
        draws = {int(s): crops.starts(int(s), epoch) for s in np.unique(act_seeds)}
        req = [k for k in names if wp[k].requires_grad]
        for b in range(math.ceil(len(crops.items) / cfg.batch_size)):
            grads = {k: torch.zeros_like(wp[k]) for k in req}
            for g in groups:
                order, starts = draws[int(act_seeds[g[0]])]
                batch = crops.batch(order[b * cfg.batch_size:(b + 1) * cfg.batch_size], starts)
                _accumulate(grads, req, wp, heads, cfg, dims, probes, active, g, len(groups) == 1, batch,
                            _encode_groups(train_feats, batch), fps, crops.widen, epoch, b, device)
            steps += 1
            with torch.no_grad():
                adam_step({k: wp[k] for k in req}, grads, {k: m1[k] for k in req}, {k: m2[k] for k in req},
                          steps, lrs, cfg)
        with torch.no_grad():
            for k in names:
                state.params[k][act_t] = wp[k].detach()
                state.exp_avg[k][act_t] = m1[k]
                state.exp_avg_sq[k][act_t] = m2[k]
            for j, i in enumerate(active):
                state.lrs[i] = float(lrs[j])
            beats = decode(activations("valid", state.params, active))
        scores = [score_beats(card, refs["valid"], est, fps, [main])[main] for est in beats]
        improved = [i for j, i in enumerate(active) if observe(state, i, scores[j], epoch, int(steps[j]), cfg)]
        if improved:
            imp = torch.as_tensor(improved, device=device)
            for k in names:
                state.best_params[k][imp] = state.params[k][imp]
        state.epoch = epoch + 1
        checkpoints.after_epoch(state)
        on_epoch = options.get("on_epoch")
        if on_epoch is not None:
            finite = [v for v in state.es_best if math.isfinite(v)]
            best = (max if direction == "max" else min)(finite) if finite else float("nan")
            on_epoch(state.epoch, sum(s is None for s in state.stopped), best)
    if any(s is None for s in state.stopped) and stop is not None:
        return {"interrupted": True}

    # every probe from its best checkpoint on valid and test (the selected one's test scores are then recomputed
    # through its shipped probe: ``test_outputs`` below)
    everyone = np.arange(P)
    results = {}
    stage = getattr(options.get("on_epoch"), "stage", None)  # marble.progress.SweepProgress: a line for this part
    with (stage(f"{card.id}: every probe's best checkpoint on valid and test", 2, "split") if stage
          else contextlib.nullcontext()) as st:
        for split in ("valid", "test"):
            with torch.no_grad():
                beats = decode(activations(split, state.best_params, everyone))
            results[split] = [score_beats(card, refs[split], est, fps) for est in beats]
            if st is not None:
                st.update(1)
    mix = torch.softmax(state.best_params["mix"].double(), -1).cpu().tolist()
    scored = [Scored(results["valid"][i], results["test"][i], results["valid"][i][main], state.best_epoch[i],
                     state.epochs[i], state.stopped[i] or "interrupted", None, mix[i] if p.layer == WEIGHTED else None)
              for i, p in enumerate(probes)]
    training = {**plan.training, "layers": layers, "max_epochs": max_epochs, "batch_size": cfg.batch_size,
                "train_crop_seconds": crop_s, "decoder": {"kind": "dbn", **tracker.config()},
                "train_features": f"random {crop_s:g} s crops, numpy default_rng([seed, epoch]), encoded on the fly",
                "eval_features": "frame cache" if feats["valid"].store is not None else "encoder on the fly, whole tracks",
                "monitor": f"{main} on valid (DBN-decoded beats, references at frame resolution)"}
    extra = {"frame_rate": fps, "decoder": training["decoder"]}

    def shipped(i: int, *, track: str, model: str):
        return ShippedProbe.from_sweep(state.best_params, i, probes[i], card=card, track=track, model=model,
                                       group_rule=None, cache_manifest=options.get("cache_manifest"), extra=extra,
                                       encoder=encoder)

    def selected_outputs(probe):
        beats = shipped_beats(probe, (feats["test"](it) for it in items["test"]), feat_layers, device)
        return test_outputs(items["test"], refs["test"], beats, fps)

    return {"scored": scored, "training": training, "probe": shipped, "test_outputs": selected_outputs}


def shipped_beats(probe, features, states: list[int], device="cpu") -> list[np.ndarray]:
    """Beat times (float64 s) of tracks through a shipped beat probe (:class:`marble.probe.shipped.ShippedProbe`):
    each track's frames ``[S, T, H]`` (``features``, an iterable; axis 0 holds hidden ``states``) through its head in
    float64, one track at a time, the sigmoid in float64, then the DBN with the settings the probe records. A result's
    test outputs and ``marble predict`` both come from here, so the same features give the same beats."""
    settings = {k: v for k, v in (probe.meta.get("decoder") or {}).items() if k != "kind"}
    if (probe.meta.get("decoder") or {}).get("kind") != "dbn":
        raise ValueError(f"the probe records decoder {probe.meta.get('decoder')!r}; a beat probe decodes with 'dbn'")
    acts = [torch.sigmoid(probe.window_outputs(f.transpose(0, 1), states=states)[:, 0]).cpu().numpy()
            for f in features]
    return DBNBeatTracker(device=device, **settings).batch(acts)


def test_outputs(items, refs: list[np.ndarray], beats: list[np.ndarray], fps: float):
    """A probe's per-track test outputs (:class:`marble.results.artifacts.TestOutputs`), keyed by uid: the evaluated
    reference beats and the decoded beat times (float64 s), with the frame rate the pooled F rounds references to."""
    from marble.results.artifacts import TestOutputs

    return TestOutputs([it.uid for it in items], [np.asarray(r, np.float64) for r in refs],
                       [np.asarray(b, np.float64) for b in beats], "track", (), None, fps)


test_outputs.__test__ = False  # not a pytest test


def _accumulate(grads, req, wp, heads, cfg, dims, probes, active, g, whole, batch, fs, fps, widen, epoch, b,
                device) -> None:
    """Add the batch-mean loss gradients of the active probes at positions ``g`` (one seed: one batch of crops) to
    ``grads``, in micro-steps of ``CHUNK_ROWS`` frames: a fixed size, so a probe's gradients (their summation order)
    and dropout masks (slices of the batch's mask) do not depend on which other probes train beside it."""
    L = len(dims) - 1
    X = torch.cat([f.transpose(0, 1) for f in fs])  # [rows, S_sel, H]
    y = torch.cat([torch.as_tensor(beat_targets(beats, f.shape[1], fps, widen)) for (_, beats), f in zip(batch, fs)]).to(X.device)
    n = X.shape[0]
    sel = active[g]
    gt = torch.as_tensor(g, device=device)
    pick = (lambda t: t) if whole else (lambda t: t[gt])  # noqa: E731
    weighted = torch.as_tensor(np.flatnonzero(heads.is_weighted[sel]), device=device)
    for s in range(0, n, CHUNK_ROWS):
        rows = torch.arange(s, min(s + CHUNK_ROWS, n), device=X.device)
        x = heads.inputs(X, rows, sel, pick(wp["mix"]))
        masks = None
        if cfg.dropout > 0:
            masks = [dropout_mask([dropout_key(probes[i], epoch, b, li) for i in sel], len(rows), dims[li + 1],
                                  cfg.dropout, device, row_offset=s) for li in range(L - 1)]
        out = heads.forward(x, [pick(wp[f"w{i}"]) for i in range(L)], [pick(wp[f"b{i}"]) for i in range(L)], masks,
                            weighted=weighted)
        yb = y[rows][None, :, None].expand(len(sel), len(rows), 1)
        loss = probe_losses(out, yb, cfg.loss).sum() * (len(rows) / n)
        for k, gr in zip(req, torch.autograd.grad(loss, [wp[k] for k in req], allow_unused=True)):
            if gr is not None:
                grads[k] += gr
