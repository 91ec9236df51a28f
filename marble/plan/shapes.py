"""What a model costs to run, known before it is loaded: its shape and its forward FLOPs per window.

``marble run --plan`` must not download weights, so the shape comes from what is on disk or known:

==============================  ==============================================================
spelling                        where the shape comes from
==============================  ==============================================================
``handcrafted``                 the built-in class (no weights; a fixed cost per audio second)
local checkpoint folder         its ``config.json`` (+ ``preprocessor_config.json``)
hub id in the local HF cache    the cached ``config.json`` (nothing is fetched)
known hub id, not cached        the published architecture (MERT-v1-95M/330M: PROTOCOL §7)
``file.py:Class``/entry point   the encoder is built (local code) and its parameters counted
anything else                   unknown: counts and disk only, no time estimate
==============================  ==============================================================

FLOPs count multiply-adds as 2 and cover the matrix products that dominate a wav2vec 2.0-family
forward pass (conv front end, projection, positional conv, attention projections, the T x T attention
products and the feed-forward blocks); norms and activations are left out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

#: the hub ids marble knows the architecture of -> the pretraining preset with that shape (PROTOCOL §7);
#: MERT-v0 and the 16 kHz baselines are HuBERT-base-shaped (12 x 768, the same conv front end)
KNOWN_ARCHITECTURES = {
    "m-a-p/MERT-v1-95M": "95m",
    "m-a-p/MERT-v1-330M": "330m",
    "m-a-p/MERT-v0": "95m",
    "m-a-p/MERT-v0-public": "95m",
    "facebook/hubert-base-ls960": "95m",
    "facebook/wav2vec2-base": "95m",
    "facebook/data2vec-audio-base": "95m",
}

_ARCH_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "conv_dim", "conv_kernel", "conv_stride",
              "num_conv_pos_embeddings", "num_conv_pos_embedding_groups")


@dataclass(frozen=True)
class ModelShape:
    """``kind``: ``transformer`` (FLOPs from ``arch``), ``handcrafted`` (a per-audio-second cost),
    ``dense`` (a plug-in: 2 x parameters per output frame, rough) or ``unknown`` (no time estimate)."""

    name: str
    kind: str
    source: str
    sample_rate: int | None = None
    frame_rate: float | None = None
    num_states: int | None = None
    dim: int | None = None
    params: int | None = None
    arch: dict = field(default_factory=dict, compare=False, hash=False)

    def gflop(self, num_samples: int) -> float:
        """Forward GFLOPs of one window of ``num_samples`` samples (0 for kinds without a FLOP model)."""
        if self.kind == "transformer":
            return transformer_gflop(self.arch, num_samples)
        if self.kind == "dense" and self.params and self.frame_rate and self.sample_rate:
            return 2.0 * self.params * num_samples / self.sample_rate * self.frame_rate / 1e9
        return 0.0

    def frames(self, seconds: float) -> int:
        return int(round(seconds * (self.frame_rate or 0.0)))


def transformer_gflop(arch: dict, num_samples: int) -> float:
    """Forward GFLOPs of a wav2vec 2.0-family model (HuBERT/MERT) on one window of ``num_samples``."""
    n, c_in, f = int(num_samples), 1, 0.0
    for k, s, c_out in zip(arch["conv_kernel"], arch["conv_stride"], arch["conv_dim"]):
        n = (n - k) // s + 1
        if n <= 0:
            return 0.0
        f += 2.0 * n * c_in * c_out * k
        c_in = c_out
    t, h, i = n, arch["hidden_size"], arch["intermediate_size"]
    f += 2.0 * t * c_in * h  # feature projection
    f += 2.0 * t * h * (h // arch["num_conv_pos_embedding_groups"]) * arch["num_conv_pos_embeddings"]
    per_layer = 2.0 * t * 4 * h * h + 2.0 * t * 2 * h * i + 4.0 * t * t * h
    return (f + arch["num_hidden_layers"] * per_layer) / 1e9


def transformer_params(arch: dict) -> int:
    """Weights of the matrix products counted by :func:`transformer_gflop` (biases and norms left out)."""
    c_in, p = 1, 0
    for k, c_out in zip(arch["conv_kernel"], arch["conv_dim"]):
        p += c_in * c_out * k
        c_in = c_out
    h, i = arch["hidden_size"], arch["intermediate_size"]
    p += c_in * h + h * (h // arch["num_conv_pos_embedding_groups"]) * arch["num_conv_pos_embeddings"]
    return int(p + arch["num_hidden_layers"] * (4 * h * h + 2 * h * i))


def _from_config(name: str, cfg: dict, source: str, sample_rate: int | None) -> ModelShape:
    missing = [k for k in _ARCH_KEYS if k not in cfg]
    if missing:
        return ModelShape(name, "unknown", f"{source} lacks {', '.join(missing)}")
    arch = {k: cfg[k] for k in _ARCH_KEYS}
    stride = 1
    for s in arch["conv_stride"]:
        stride *= int(s)
    sr = int(sample_rate or cfg.get("sample_rate") or 16000)
    return ModelShape(name, "transformer", source, sr, sr / stride, int(cfg["num_hidden_layers"]) + 1,
                      int(cfg["hidden_size"]), transformer_params(arch), arch)


def _preset_arch(preset: str) -> dict:
    from marble.pretrain.config import get_preset

    return {k: v for k, v in get_preset(preset).hubert.items() if k in _ARCH_KEYS}


def _cached_hub_config(repo_id: str) -> Path | None:
    """``config.json`` of ``repo_id`` when the local Hugging Face cache holds it (never fetched)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    try:
        path = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return None
    return Path(path) if isinstance(path, (str, os.PathLike)) and Path(path).is_file() else None


def _dir_sample_rate(directory: Path, cfg: dict, known: dict) -> int | None:
    pre = directory / "preprocessor_config.json"
    if pre.is_file():
        try:
            sr = json.loads(pre.read_text()).get("sampling_rate")
            if sr:
                return int(sr)
        except (OSError, ValueError):
            pass
    return cfg.get("sample_rate") or known.get("sample_rate")


def model_shape(spec: str) -> ModelShape:
    """The shape of ``spec`` (any spelling ``marble run`` takes) without downloading anything."""
    from marble.encoders import KNOWN_HUB_IDS
    from marble.encoders.identity import identify

    ref = identify(spec)
    if ref.kind == "builtin":
        from marble.encoders import load_encoder

        enc = load_encoder(ref.spec)  # built-in encoders have no weights to fetch
        return ModelShape(ref.name, ref.spec, "built-in encoder", int(enc.sample_rate), float(enc.frame_rate),
                          int(enc.num_states), int(enc.dim), 0)
    if ref.kind in ("local-dir", "hub"):
        known = KNOWN_HUB_IDS.get(ref.name, {})
        path = Path(ref.target) / "config.json" if ref.kind == "local-dir" else _cached_hub_config(ref.spec)
        if path is not None and path.is_file():
            try:
                cfg = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                return ModelShape(ref.name, "unknown", f"{path}: unreadable ({e})")
            return _from_config(ref.name, cfg, str(path), _dir_sample_rate(path.parent, cfg, known))
        if ref.name in KNOWN_ARCHITECTURES:
            arch = _preset_arch(KNOWN_ARCHITECTURES[ref.name])
            return _from_config(ref.name, arch, f"the published architecture of {ref.name} (not downloaded)",
                                known.get("sample_rate"))
        return ModelShape(ref.name, "unknown", f"{ref.spec}: not in the local Hugging Face cache and not a known "
                          "architecture (download it once, or pass the checkpoint folder)")
    if ref.kind in ("plugin-file", "entry-point"):
        from marble.encoders import load_encoder

        enc = load_encoder(ref.spec)  # local code: built to read its declared shape
        cfg = getattr(getattr(getattr(enc, "model", None), "config", None), "to_dict", None)
        base = dict(sample_rate=int(enc.sample_rate), frame_rate=float(enc.frame_rate), num_states=int(enc.num_states),
                    dim=int(enc.dim))
        if cfg is not None and all(k in cfg() for k in _ARCH_KEYS):
            return _from_config(enc.name, cfg(), f"{ref.spec} (its model's config)", enc.sample_rate)
        params = sum(p.numel() for p in enc.parameters())
        return ModelShape(enc.name, "dense" if params else "unknown",
                          f"{ref.spec} (built; {params / 1e6:.1f} M parameters, time from 2 x parameters per frame: "
                          "rough)", params=params, **base)
    return ModelShape(ref.name, "unknown", f"{spec!r}: not a built-in, a folder, a plug-in or a hub id")
