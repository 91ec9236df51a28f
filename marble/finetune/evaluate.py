"""Scoring a fine-tuned model on validation and test with the card's metrics, exactly as the probes score:

* clip tasks: every window of every file (:class:`marble.finetune.data.EvalClips`) through the model; window
  logits averaged per file, then softmax/sigmoid/identity and the card's metrics
  (:class:`marble.probe.select.Scorer`); a card with group rules (GS) scores per song, its training monitor is
  the best rule each epoch and its reported rule is chosen on validation
  (:func:`marble.probe.clip.evaluate_outputs`);
* frame tasks (gtzan-beat): the whole clip under the card's encoder-piece rule (:func:`marble.audio.encoder_pieces`),
  frame activations decoded by the DBN, the card's beat metrics (:func:`marble.beat.train.score_beats`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from marble.finetune.data import EvalClips


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


class ClipEvaluator:
    """Validation and test of a clip task."""

    def __init__(self, card, items: dict, encoder, device, batch_size: int = 16, memory_gb: float = 2.0):
        from marble.datasets.base import label_array
        from marble.probe.clip import resolve_metrics

        self.card, self.device, self.batch_size = card, torch.device(device), int(batch_size)
        self.clips = {s: EvalClips(card, items[s], encoder, memory_gb / 2) for s in ("valid", "test")}
        self.labels = {s: label_array(card, items[s]) for s in ("valid", "test")}
        self.metrics = resolve_metrics(card.metrics.names)
        self._scorers: dict = {}

    def outputs(self, model, split: str) -> torch.Tensor:
        """Window outputs ``[W, C]`` (float32, CPU) of every scored window of ``split``, in file order."""
        clips = self.clips[split]
        wins = [(i, w) for i in range(len(clips.items)) for w in clips.windows(i)]
        out: list = [None] * len(wins)
        by_len: dict[int, list[int]] = {}
        for k, (_, w) in enumerate(wins):
            by_len.setdefault(len(w), []).append(k)
        with torch.no_grad(), _autocast(self.device):
            for idx in by_len.values():
                for a in range(0, len(idx), self.batch_size):
                    part = idx[a:a + self.batch_size]
                    x = torch.from_numpy(np.stack([wins[k][1] for k in part])).to(self.device)
                    y = model.outputs(x).float().cpu()
                    for j, k in enumerate(part):
                        out[k] = y[j]
        if split not in self._scorers:
            from marble.probe.select import Scorer

            rows = [i for i, _ in wins]
            its = clips.items
            uids = np.array([its[i].uid for i in rows], dtype=object)
            groups = np.array([its[i].group if its[i].group is not None else its[i].uid for i in rows], dtype=object)
            self._scorers[split] = Scorer(self.card.prediction, uids, groups, self.labels[split][rows], self.metrics,
                                          self.card.vocabulary(), f"{self.card.id}/{split}")
        return torch.stack(out) if out else torch.zeros(0, self.card.num_outputs)

    def monitor(self, model) -> float:
        m = self.card.metrics
        ov = self.outputs(model, "valid")
        return float(self._scorers["valid"].monitor(m.main, m.group_rules, m.direction)(ov[None])[0])

    def scores(self, model) -> tuple[dict, dict, str | None]:
        """(valid metrics, test metrics, group rule chosen on validation)."""
        from marble.probe.clip import evaluate_outputs

        ov, ot = self.outputs(model, "valid"), self.outputs(model, "test")
        ev = evaluate_outputs(ov[None], ot[None], self._scorers["valid"], self._scorers["test"], self.card)
        return ev.valid[0], ev.test[0], ev.rule[0]

    def skipped(self, split: str) -> list[dict]:
        return self.clips[split].skipped_entries()


class BeatEvaluator:
    """Validation and test of a frame-binary task (beats): whole clips, DBN decoding, the card's beat metrics."""

    def __init__(self, card, items: dict, encoder, device, batch_size: int = 16, memory_gb: float = 2.0):
        from marble.beat import DBNBeatTracker
        from marble.beat.train import _beats

        self.card, self.device = card, torch.device(device)
        self.fps = float(encoder.frame_rate)
        self.sample_rate = int(encoder.sample_rate)
        self.clips = {s: EvalClips(card, items[s], encoder, memory_gb / 2) for s in ("valid", "test")}
        self.refs = {s: [_beats(it) for it in items[s]] for s in ("valid", "test")}
        self.tracker = DBNBeatTracker(fps=self.fps, device=str(self.device))

    def beats(self, model, split: str) -> tuple[list, list]:
        """(references, estimated beats) of the scored files of ``split``."""
        from marble.audio import encoder_pieces

        a = self.card.audio
        clips = self.clips[split]
        acts, refs = [], []
        with torch.no_grad(), _autocast(self.device):
            for i in range(len(clips.items)):
                wav = clips.clip(i)
                if wav is None:
                    continue
                wav, pieces = encoder_pieces(wav, self.sample_rate, a.piece_seconds, a.tail_samples)
                parts = [model.outputs(torch.from_numpy(wav[s:e])[None].to(self.device))[0, :, 0] for s, e in pieces]
                acts.append(torch.sigmoid(torch.cat(parts).double()).cpu().numpy())
                refs.append(self.refs[split][i])
        return refs, self.tracker.batch(acts)

    def _score(self, model, split: str, names=None) -> dict:
        from marble.beat.train import score_beats

        refs, est = self.beats(model, split)
        return score_beats(self.card, refs, est, self.fps, names)

    def monitor(self, model) -> float:
        main = self.card.metrics.main
        return float(self._score(model, "valid", [main])[main])

    def scores(self, model) -> tuple[dict, dict, None]:
        return self._score(model, "valid"), self._score(model, "test"), None

    def skipped(self, split: str) -> list[dict]:
        return self.clips[split].skipped_entries()


def evaluator(card, items: dict, encoder, device, **kw):
    if card.is_clip_level:
        return ClipEvaluator(card, items, encoder, device, **kw)
    if card.prediction == "frame-binary":
        return BeatEvaluator(card, items, encoder, device, **kw)
    from marble.finetune import FinetuneError

    raise FinetuneError(f"task {card.id!r} ({card.prediction}): fine-tuning runs clip tasks and beat tracking; "
                        "source separation (musdb) is not implemented for the unconstrained track yet")
