"""The shipped probe: a result's selected probe as one safetensors file, reusable on new audio.

``<track>.probe.safetensors`` beside the result holds the head exactly as trained (``w0``, ``b0``, ... as float32
``[in, out]`` / ``[out]``, the batched sweep's layout) and, for the weighted-sum probe, ``mix``: the raw
mixing logits over hidden states 1..L (their softmax is ``weighted_sum.weights``). Its metadata (strings) says
what the head expects and means: task and card version, model and encoder identity, the layer, the label
vocabulary, the prediction type, the GS group rule, and how the features were made (card audio settings,
``max_chunk_seconds``, compute dtype), so ``marble predict`` can make the same features and read the outputs.

Evaluation (:meth:`ShippedProbe.window_outputs`) runs in float64 and the estimates are rounded once to float32:
BLAS sums a matrix product in an order that depends on how many rows it is given, so a float32 head would give
a window slightly different outputs when scored beside different windows; in float64 those differences stay far
below float32's resolution. The result's test outputs and its reported test metrics are computed through this
path, so ``marble predict`` on the same features reproduces them.

A frame task's probe (GTZAN beat, ``frame-binary``) is the same file: its head maps each frame's features to a
logit, and the metadata adds ``frame_rate`` and ``decoder`` (the DBN settings, ``marble.beat.dbn``) that turn the
activations into beat times (:func:`marble.beat.train.shipped_beats`, the one path of the result's test outputs and
``marble predict``). Its head runs on one track's frames at a time in both places, so the matrix products have the
same shapes and the beat times are identical.

A module probe (MUSDB, ``separation``: one open-unmix-style LSTM model per source, each with its own selected layer
or weighted sum and LR) is the same file too (:meth:`ShippedProbe.from_modules`): each model's state dict under its
source's prefix (``vocals.fc1.weight``, ..., ``vocals.mix``: the raw mixing logits of a weighted-sum model), and
metadata ``modules`` (per source, in vocabulary order: layer, LR, seed, mixing weights), ``head`` (the registry
kind and the arguments that rebuild the model: input dim, bins, hidden, layers, dropout, bidirectional) and
``separation`` (STFT and Wiener settings, :func:`marble.separation.settings`). :meth:`ShippedProbe.modules`
rebuilds the models; the result's test scores come from those rebuilt models through
:func:`marble.separation.train.separate_track`, the reconstruction ``marble predict`` runs on new audio.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from marble.probe.select import FileIndex, estimates
from marble.probe.sweep import WEIGHTED

FORMAT = "marble-probe/1"


@dataclass
class TargetModel:
    """One model of a module probe, rebuilt: what it predicts (MUSDB: a source), the hidden state it reads (or
    ``weighted``) and the module (eval mode)."""

    target: str
    layer: int | str
    model: torch.nn.Module


def encoder_meta(cache_manifest: dict | None, encoder=None) -> dict:
    """The encoder identity a probe records: the frame cache's, else (features computed on the fly) the encoder's own,
    as JSON gives it back; ``marble predict`` refuses another encoder with it."""
    import json

    cm = (cache_manifest or {}).get("encoder")
    if cm or encoder is None:
        return cm or {}
    return json.loads(json.dumps(encoder.identity(), sort_keys=True, default=str))


def _card_meta(card, *, track: str | None, model: str | None, cache_manifest: dict | None, encoder=None) -> dict:
    """The metadata every shipped probe carries: task and card version, model, how the features were made."""
    from dataclasses import asdict

    cm = cache_manifest or {}
    return {"format": FORMAT, "task": card.id, "task_version": card.version, "task_sha256": card.sha256 or None,
            "protocol": card.protocol, "track": track, "model": model, "prediction": card.prediction,
            "vocabulary": list(card.vocabulary()), "encoder": encoder_meta(cache_manifest, encoder),
            "audio": asdict(card.audio), "max_chunk_seconds": cm.get("max_chunk_seconds"),
            "compute_dtype": cm.get("compute_dtype")}


@dataclass
class ShippedProbe:
    tensors: dict[str, torch.Tensor]
    meta: dict

    # ---- facts
    @property
    def layer(self) -> int | str | None:
        """The hidden state the head reads (or ``weighted``); None for a module probe (each model has its own)."""
        return self.meta.get("layer")

    @property
    def vocabulary(self) -> list[str]:
        return list(self.meta["vocabulary"])

    @property
    def prediction(self) -> str:
        return self.meta["prediction"]

    @property
    def group_rule(self) -> str | None:
        return self.meta.get("group_rule")

    @property
    def is_modules(self) -> bool:
        """One rebuilt module per target (MUSDB) rather than a stacked MLP head."""
        return "modules" in self.meta

    @property
    def n_layers(self) -> int:
        return sum(1 for k in self.tensors if k.startswith("w"))

    @property
    def mixing_weights(self) -> list[float] | None:
        mix = self.tensors.get("mix")
        return None if mix is None else torch.softmax(mix.double(), 0).tolist()

    # ---- building, saving, loading
    @classmethod
    def from_sweep(cls, params: dict[str, torch.Tensor], index: int, probe, *, card, track: str, model: str,
                   group_rule: str | None, cache_manifest: dict | None, extra: dict | None = None,
                   encoder=None) -> "ShippedProbe":
        """Probe ``index`` of a batched sweep's parameters (``SweepOutcome.best_params``; ``probe.layer``: the hidden
        state it reads, or ``weighted``). ``extra``: task-specific metadata (a frame task's frame rate and decoder);
        ``encoder``: its identity is recorded when there is no cache manifest (features computed on the fly)."""
        L = sum(1 for k in params if k.startswith("w"))
        tensors = {}
        for i in range(L):
            tensors[f"w{i}"] = params[f"w{i}"][index].detach().float().cpu().contiguous()
            tensors[f"b{i}"] = params[f"b{i}"][index].detach().float().cpu().contiguous()
        if probe.layer == WEIGHTED:
            tensors["mix"] = params["mix"][index].detach().float().cpu().contiguous()
        meta = {
            **_card_meta(card, track=track, model=model, cache_manifest=cache_manifest, encoder=encoder),
            "layer": probe.layer if probe.layer == WEIGHTED else int(probe.layer), "lr": float(probe.lr),
            "seed": int(probe.seed), "group_rule": group_rule,
            "hidden": [int(tensors[f"w{i}"].shape[1]) for i in range(L - 1)],
            "num_states": int(params["mix"].shape[1]) + 1, "dim": int(tensors["w0"].shape[0]),
            **(extra or {}),
        }
        return cls(tensors, meta)

    @classmethod
    def from_modules(cls, models: list, *, card, track: str | None, model: str | None, cache_manifest: dict | None,
                     encoder, extra: dict | None = None) -> "ShippedProbe":
        """A module probe from its trained models (``models``: ``ModuleProbe``s, one per target, each with its
        ``probe`` (layer, LR, seed) and module: the head, or ``Sequential(WeightedStates, head)``), in the card's
        vocabulary order. The head's ``config`` rebuilds it (``marble.probe.heads``: ``rebuild``)."""
        from marble.probe.heads import head_kind

        tensors, modules, configs = {}, {}, set()
        for m in models:
            head, mix = (m.model[1], m.model[0].logits) if isinstance(m.model, torch.nn.Sequential) else (m.model, None)
            for k, v in head.state_dict().items():
                tensors[f"{m.target}.{k}"] = v.detach().cpu().contiguous()
            if mix is not None:
                tensors[f"{m.target}.mix"] = mix.detach().float().cpu().contiguous()
            modules[m.target] = {"layer": m.layer if m.layer == WEIGHTED else int(m.layer), "lr": float(m.lr),
                                 "seed": int(m.probe.seed),
                                 "weights": None if mix is None else torch.softmax(mix.detach().double(), 0).tolist()}
            configs.add(tuple(sorted(head.config.items())))
        if len(configs) != 1 or list(modules) != list(card.vocabulary()):
            raise ValueError(f"task {card.id}: a module probe ships one model per target ({card.vocabulary()}) "
                             f"of one head configuration; got {list(modules)}, {len(configs)} configurations")
        config = dict(configs.pop())
        meta = {**_card_meta(card, track=track, model=model, cache_manifest=cache_manifest, encoder=encoder),
                "group_rule": None, "modules": modules, "head": {"kind": head_kind(card).kind, **config},
                "num_states": int(encoder.num_states), "dim": config["in_dim"], **(extra or {})}
        return cls(tensors, meta)

    def to_bytes(self) -> bytes:
        from marble.results.artifacts import to_safetensors

        return to_safetensors(self.tensors, self.meta)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "probe") -> "ShippedProbe":
        from marble.results.artifacts import from_safetensors

        return cls(*from_safetensors(data, FORMAT, where, torch=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ShippedProbe":
        return cls.from_bytes(Path(path).read_bytes(), str(path))

    # ---- applying
    def modules(self, device="cpu") -> list[TargetModel]:
        """A module probe's models, rebuilt from the shipped weights (eval mode, on ``device``), in vocabulary order.
        Building them draws no random number the caller sees (their initial values are overwritten anyway)."""
        from marble.probe.frames import WeightedStates, seeded
        from marble.probe.heads import HEADS

        spec = dict(self.meta.get("head") or {})
        kind = HEADS.get(spec.pop("kind", None))
        if not self.is_modules or kind is None or kind.rebuild is None:
            raise ValueError(f"the {self.meta.get('task')} probe is not a module probe marble can rebuild "
                             f"(head {self.meta.get('head')!r})")
        out = []
        for target in self.vocabulary:  # the metadata's JSON has its keys sorted: the vocabulary keeps the order
            info = self.meta["modules"][target]
            prefix = f"{target}."
            state = {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix) and k != prefix + "mix"}
            with seeded(0):
                head = kind.rebuild(spec)
                mix = self.tensors.get(prefix + "mix")
                model = head if mix is None else torch.nn.Sequential(WeightedStates(len(mix), 1), head)
            head.load_state_dict(state)
            if mix is not None:
                with torch.no_grad():
                    model[0].logits.copy_(mix)
            out.append(TargetModel(target, info["layer"], model.to(device).eval()))
        return out

    def window_outputs(self, X: torch.Tensor, chunk: int = 4096, states: list[int] | None = None) -> torch.Tensor:
        """Head outputs (logits / values) [W, C] in float64 for features ``X`` [W, S, H] (clip windows, or a
        track's frames) whose axis 1 holds hidden ``states`` (default: all, 0..S-1)."""
        L = self.n_layers
        ws = [self.tensors[f"w{i}"].to(X.device, torch.float64) for i in range(L)]
        bs = [self.tensors[f"b{i}"].to(X.device, torch.float64) for i in range(L)]
        mix = self.tensors.get("mix")
        weights = None if mix is None else torch.softmax(mix.to(X.device, torch.float64), 0)
        if states is None:
            pick = slice(1, None) if weights is not None else int(self.layer)
        else:
            need = list(range(1, len(weights) + 1)) if weights is not None else [int(self.layer)]
            if any(s not in states for s in need):
                raise ValueError(f"the probe reads hidden states {need}; the features hold {list(states)}")
            pos = [list(states).index(s) for s in need]
            pick = pos if weights is not None else pos[0]
        outs = []
        with torch.no_grad():
            for s in range(0, X.shape[0], chunk):
                xb = X[s:s + chunk]
                h = (torch.einsum("wsh,s->wh", xb[:, pick].double(), weights) if weights is not None
                     else xb[:, pick].double())
                for i in range(L):
                    h = torch.addmm(bs[i], h, ws[i])
                    if i < L - 1:
                        h = torch.relu(h)
                outs.append(h)
        return torch.cat(outs, 0) if outs else torch.zeros(0, ws[-1].shape[1], dtype=torch.float64)

    def estimates(self, X: torch.Tensor, files: FileIndex, groups: FileIndex | None = None) -> np.ndarray:
        """What the metrics consume, float32 [F, C] (per file, or per song under the probe's group rule):
        window outputs averaged per file and activated in float64, rounded once."""
        out = self.window_outputs(X)[None]
        return estimates(out, files, groups, self.prediction, self.group_rule)[0].astype(np.float32)


def test_outputs(probe: ShippedProbe, X: torch.Tensor, scorer):
    """The probe's :class:`~marble.results.artifacts.TestOutputs` on a split (``scorer``: its
    :class:`marble.probe.select.Scorer`), keyed by file uid, or by song under a group rule."""
    from marble.results.artifacts import TestOutputs

    rule = probe.group_rule
    est = probe.estimates(X, scorer.files, scorer.groups)
    keys = scorer.groups.keys if rule else scorer.files.keys
    return TestOutputs(list(keys), scorer.reference(rule), est, "song" if rule else "file", tuple(probe.vocabulary),
                       rule)


test_outputs.__test__ = False  # not a pytest test
