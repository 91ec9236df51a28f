"""The network a fine-tuning run trains: the encoder (LoRA adapters, every weight, or frozen) and the card's
head on a learned weighted sum of its hidden states (or one state).

* Hidden states follow marble's one convention (:func:`marble.encoders.hf.walk_hidden_states`: state 0 the
  input of the first layer, state ``i`` the output of layer ``i``, a pre-LN model's last state after the final
  LayerNorm), here with gradients. LayerDrop and SpecAugment masking are not applied.
* Clip tasks pool each state over time (as the cached features of the constrained track), frame tasks keep
  the frames; the head is the card's MLP (``head.hidden`` x ``head.layers``, ReLU, dropout) on the
  weighted sum (softmax over a random-normal vector, states 1..L, :class:`marble.probe.frames.WeightedStates`)
  or on one state. Its initial weights come from ``torch.manual_seed(seed)`` and its shapes only, in the order
  of the constrained probe's (:func:`marble.probe.sweep.init_params`): the MLP's linear layers, then the
  mixing vector.
* ``lora``: ``peft.get_peft_model`` on the transformers backbone (LoRA B starts at zero, so step 0 is the
  frozen model exactly); every base weight stays frozen. ``full``: every backbone weight trains but the conv
  feature encoder (unless ``freeze_feature_encoder = false``) and the masking embedding (unused), with
  layer-wise LR decay as an option. ``head``: the encoder's own ``hidden_states`` under ``no_grad``, in eval
  mode (any marble encoder, plug-ins included).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from marble.finetune import FinetuneError
from marble.finetune.config import WEIGHTED, FinetuneConfig
from marble.probe.frames import WeightedStates, seeded


class Head(nn.Module):
    """The card's MLP on the weighted sum of states 1..L (or on one state). Input: states on axis 1,
    ``[B, S, H]`` (clip) or ``[B, S, T, H]`` (frames); output ``[B, C]`` or ``[B, T, C]``."""

    def __init__(self, card, num_states: int, dim: int, out_dim: int, layer, seed: int):
        super().__init__()
        h = card.head
        if h.kind != "mlp":
            raise FinetuneError(f"task {card.id!r}: head kind {h.kind!r}; fine-tuning trains the mlp head of clip and "
                                "beat tasks (separation heads are not implemented for the unconstrained track yet)")
        if layer != WEIGHTED and not 0 <= int(layer) < num_states:
            raise FinetuneError(f"layer {layer}: the encoder has states 0..{num_states - 1}")
        self.layer = layer
        with seeded(seed):
            mods: list[nn.Module] = []
            width = dim
            for _ in range(h.layers):
                mods += [nn.Linear(width, h.hidden), nn.ReLU(), nn.Dropout(h.dropout)]
                width = h.hidden
            mods.append(nn.Linear(width, out_dim))
            self.mlp = nn.Sequential(*mods)
            self.mix = WeightedStates(num_states - 1, dim=1) if layer == WEIGHTED else None

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = self.mix(states[:, 1:]) if self.mix is not None else states[:, int(self.layer)]
        return self.mlp(x)

    def weights(self) -> list[float] | None:
        return self.mix.weights() if self.mix is not None else None


def backbone_of(encoder):
    """The transformers model of a wav2vec 2.0-family marble encoder (MERT, HuBERT, wav2vec 2.0, data2vec)."""
    from marble.encoders.hf import HFSpeechEncoder

    if not isinstance(encoder, HFSpeechEncoder):
        raise FinetuneError(f"encoder {getattr(encoder, 'name', encoder)!r} ({type(encoder).__name__}): lora and full "
                            "fine-tune the transformers wav2vec 2.0-family encoders (MERT, HuBERT, wav2vec 2.0, "
                            "data2vec-audio); any encoder runs with --method head")
    return encoder.model


class TunedModel(nn.Module):
    """Encoder + head as one module: what trains, what DistributedDataParallel wraps, and what evaluates.

    ``forward(groups)`` takes a list of ``[B_i, T_i]`` batches of equal-length prepared clips (clips of unequal
    length are never padded: MERT's first group norm normalises over time) and returns their outputs, so that
    one DDP forward covers a whole micro-batch."""

    def __init__(self, encoder, card, cfg: FinetuneConfig, seed: int, spec: str | None = None):
        super().__init__()
        self.encoder = encoder
        self.method = cfg.method
        self.frames = not card.is_clip_level
        self.layer = cfg.layer
        self.upto = None if cfg.layer == WEIGHTED else int(cfg.layer)
        # the backbone is the encoder's own transformers model (and peft's wrapper of it): plain attributes, so that
        # the module tree holds each weight once (under encoder.) and DDP sees it once
        object.__setattr__(self, "peft", None)
        object.__setattr__(self, "backbone", None)
        out_dim = card.num_outputs
        self.head = Head(card, encoder.num_states, encoder.dim, out_dim, cfg.layer, seed)
        encoder.requires_grad_(False)
        if cfg.method == "head":
            return
        backbone = backbone_of(encoder)
        if cfg.method == "lora":
            backbone = self._add_lora(backbone, cfg, seed, spec)
        else:
            for name, p in backbone.named_parameters():
                p.requires_grad_(not (name.startswith("feature_extractor.") and cfg.freeze_feature_encoder)
                                 and not name.startswith("masked_spec_embed"))
        if self.upto is not None:  # layers above the chosen state get no gradient: frozen (DDP needs no unused)
            for layer in backbone.encoder.layers[self.upto:]:
                layer.requires_grad_(False)
            if getattr(backbone.config, "do_stable_layer_norm", False) and self.upto < len(backbone.encoder.layers):
                backbone.encoder.layer_norm.requires_grad_(False)
        if cfg.gradient_checkpointing:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        object.__setattr__(self, "backbone", backbone)

    def _add_lora(self, backbone, cfg: FinetuneConfig, seed: int, spec: str | None):
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as e:  # pragma: no cover - a core dependency
            raise FinetuneError(f"--method lora needs the peft package ({e}); pip install peft") from None
        lc = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=list(cfg.lora_targets), bias="none")
        if spec:  # peft records the model's own name as the adapter's base model
            backbone.config._name_or_path = str(spec)
        try:
            with seeded(seed + 1), warnings.catch_warnings():  # LoRA A's init: from the seed, not from what ran before
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                object.__setattr__(self, "peft", get_peft_model(backbone, lc))
        except ValueError as e:
            names = sorted({n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)})
            raise FinetuneError(f"lora_targets {cfg.lora_targets}: {str(e).splitlines()[0]}; linear modules of this "
                                f"encoder: {', '.join(names)}") from None
        return self.peft.get_base_model()

    @property
    def trains_encoder(self) -> bool:
        return self.backbone is not None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone is None:
            self.encoder.eval()  # the frozen baseline: the encoder as marble extract runs it
        return self

    def states(self, wav: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, S, T, H]`` (states ``0..upto`` for a chosen layer) of prepared clips ``[B, T]``."""
        if self.backbone is None:
            with torch.no_grad():
                return self.encoder.hidden_states(wav, upto=self.upto)
        from marble.encoders.hf import walk_hidden_states

        p = next(self.backbone.parameters())
        return walk_hidden_states(self.backbone, wav.to(device=p.device, dtype=p.dtype), self.upto, grad=True)

    def outputs(self, wav: torch.Tensor) -> torch.Tensor:
        hs = self.states(wav).float()
        return self.head(hs if self.frames else hs.mean(2))

    def forward(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.outputs(w) for w in groups]

    # -- what trains --------------------------------------------------------------------------------

    def param_groups(self, cfg: FinetuneConfig, lr: float) -> list[dict]:
        """AdamW groups: the head at its LR; the adapters (lora) at ``lr``; under full every backbone layer ``i``
        of ``L`` at ``lr x decay^(L - i)``, the stages before the first layer at ``lr x decay^L``, a pre-LN
        final LayerNorm at ``lr``."""
        groups = [{"params": [p for p in self.head.parameters() if p.requires_grad], "lr": cfg.head_lr_for(lr),
                   "name": "head"}]
        if self.backbone is None:
            return groups
        named = [(n, p) for n, p in self.backbone.named_parameters() if p.requires_grad]
        if self.method == "lora" or cfg.layer_decay == 1.0:
            groups.append({"params": [p for _, p in named], "lr": float(lr), "name": "encoder"})
            return groups
        num_layers = len(self.backbone.encoder.layers)
        depth: dict[int, list] = {}
        for n, p in named:
            d = num_layers + 1  # feature extractor, projection, positional conv, post-LN input norm
            if n.startswith("encoder.layers."):
                d = num_layers - int(n.split(".")[2])  # layer i (1-based) = index i - 1
            elif n.startswith("encoder.layer_norm") and getattr(self.backbone.config, "do_stable_layer_norm", False):
                d = 1  # the pre-LN final norm sits after the last layer
            depth.setdefault(d, []).append(p)
        for d in sorted(depth):
            groups.append({"params": depth[d], "lr": float(lr) * cfg.layer_decay ** (d - 1), "name": f"encoder-{d}"})
        return groups

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trained tensor (head; adapters or encoder weights), detached, by name."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in state]
        if missing or any(n not in params for n in state):
            raise FinetuneError(f"checkpoint does not match the model ({len(missing)} trained tensors missing, e.g. "
                                f"{missing[:2]}); it was written by another configuration: rerun with --fresh")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    def counts(self) -> dict[str, int]:
        """Trainable and total parameters (encoder + head)."""
        total = sum(p.numel() for p in self.parameters())
        return {"trainable_parameters": sum(p.numel() for p in self.parameters() if p.requires_grad),
                "total_parameters": total, "head_parameters": sum(p.numel() for p in self.head.parameters())}

    # -- what is kept --------------------------------------------------------------------------------

    def save_artefacts(self, folder: Path) -> dict[str, dict]:
        """The trained parts beside the result: ``head.safetensors``; the LoRA adapter as peft writes it
        (``adapter/adapter_config.json`` + ``adapter_model.safetensors``, ``PeftModel.from_pretrained`` loads
        it onto the base model); under full the whole encoder as a checkpoint folder ``marble extract
        --model`` loads. Returns ``{name: {"path", "sha256"}}`` relative to ``folder``'s parent."""
        from safetensors.torch import save

        from marble.io import atomic_open, file_sha256

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        head = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        with atomic_open(folder / "head.safetensors") as f:
            f.write(save(head, metadata={"format": "pt", "layer": str(self.layer)}))
        out["head"] = folder / "head.safetensors"
        if self.peft is not None:
            self.peft.save_pretrained(str(folder / "adapter"), safe_serialization=True)
            out["adapter"] = folder / "adapter" / "adapter_model.safetensors"
        elif self.backbone is not None:
            from marble.encoders.mert import save_mert_dir

            enc = self.encoder
            save_mert_dir(folder / "encoder", enc.config_dict, self.backbone.state_dict(), normalize=enc.normalize,
                          sample_rate=enc.sample_rate)
            out["encoder"] = folder / "encoder" / "model.safetensors"
        return {k: {"path": str(p.relative_to(folder.parent)), "sha256": file_sha256(p)} for k, p in out.items()}
