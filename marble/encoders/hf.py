"""wav2vec 2.0-family encoders through transformers: HuBERT, wav2vec 2.0, data2vec-audio (and MERT,
see :mod:`marble.encoders.mert`, which reuses everything here).

These models share one skeleton: conv feature encoder -> feature projection -> (positional conv,
[post-LN: LayerNorm]) -> transformer layers -> [pre-LN: final LayerNorm]. :func:`walk_hidden_states`
runs that skeleton module by module instead of calling ``model(...)`` so that

* ``upto`` really stops early (layers past the deepest requested state never run), and
* the hidden states follow one fixed rule on every transformers version: state 0 is the input to the
  first layer, state ``i`` the output of layer ``i``, and for pre-LN models (``do_stable_layer_norm``)
  the **last** state is taken after the encoder's final LayerNorm. That is what transformers 4.x returned
  (and what MERT-v1-330M results were computed with); transformers 5.x returns it before the norm.

Tests check the walk against ``model(..., output_hidden_states=True)`` of transformers itself.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from marble.encoders.base import Encoder
from marble.errors import MarbleError
from marble.io import file_sha256

#: weights files we read, in order of preference
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

#: Fallback facts for the speech baselines. The checkpoint's own ``preprocessor_config.json``
#: (``do_normalize``, ``sampling_rate``, downloaded with the snapshot) always wins; these values are used
#: only when that file is absent. wav2vec2-base: True as its HF feature extractor declares (fairseq trained it
#: on raw input); data2vec-audio-base: True (trained normalised); hubert-base-ls960: False (fairseq
#: ``task.normalize=false``). Not verifiable offline: re-check against the hub files when online.
HF_KNOWN: dict[str, dict[str, Any]] = {
    "facebook/hubert-base-ls960": {"sample_rate": 16000, "normalize": False},
    "facebook/wav2vec2-base": {"sample_rate": 16000, "normalize": True},
    "facebook/data2vec-audio-base": {"sample_rate": 16000, "normalize": True},
}

#: transformers model types handled by :class:`HFSpeechEncoder`
HF_MODEL_TYPES = ("hubert", "wav2vec2", "data2vec-audio")


class EncoderLoadError(MarbleError, RuntimeError):
    """A checkpoint could not be turned into an encoder; the message names the file and the fix."""


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderLoadError(f"{path}: cannot read JSON ({e})") from None


def find_weights(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise EncoderLoadError(
        f"{directory}: no weights file; expected one of {', '.join(WEIGHT_FILES)} next to config.json")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise EncoderLoadError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None


# old (weight_g / weight_v) and new (parametrizations) spellings of the weight-normed positional conv
_WEIGHT_NORM_ALIASES = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}


def build_with_weights(make_model: Callable[[], torch.nn.Module], path: Path,
                       prefixes=("hubert.", "mert_model.", "model.", "wav2vec2.", "data2vec_audio.")) -> torch.nn.Module:
    """Build the model on the meta device (no random init: 20 s for a 330M model on a CPU) and fill it
    from ``path`` strictly: every parameter must come from the file, since random weights would silently
    give meaningless features. Handles a base-model prefix and both spellings of weight-norm parameters
    (``weight_g``/``weight_v`` as saved by transformers 4.x, ``parametrizations.weight.original0/1`` now);
    ``masked_spec_embed`` (used only for training-time masking) may be absent."""
    sd = read_state_dict(path)
    with torch.device("meta"):
        model = make_model()
    want = model.state_dict()
    for p in prefixes:
        if sd and all(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items()}
    fixed = {}
    for k, v in sd.items():
        if k not in want:
            for old, new in _WEIGHT_NORM_ALIASES.items():
                if k.endswith(old) and k[: -len(old)] + new in want:
                    k = k[: -len(old)] + new
                elif k.endswith(new) and k[: -len(new)] + old in want:
                    k = k[: -len(new)] + old
        fixed[k] = v
    missing = [k for k in want if k not in fixed and not k.endswith("masked_spec_embed")]
    unexpected = [k for k in fixed if k not in want]
    if missing:
        raise EncoderLoadError(
            f"{path}: weights do not match the model built from config.json: missing {len(missing)} tensors "
            f"(e.g. {missing[:3]}); unexpected {len(unexpected)} (e.g. {unexpected[:3]}). Check that config.json "
            "belongs to this weights file.")
    if unexpected:
        warnings.warn(f"{path}: ignoring {len(unexpected)} tensors not used by the encoder (e.g. {unexpected[:3]})",
                      stacklevel=3)
        fixed = {k: v for k, v in fixed.items() if k in want}
    bad = [k for k, v in fixed.items() if tuple(v.shape) != tuple(want[k].shape)]
    if bad:
        raise EncoderLoadError(f"{path}: tensor shapes differ from config.json for {bad[:3]}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in fixed.items()},
                          strict=False, assign=True)
    if getattr(model, "masked_spec_embed", None) is not None and model.masked_spec_embed.is_meta:
        model.masked_spec_embed = torch.nn.Parameter(torch.zeros(model.masked_spec_embed.shape))
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # pragma: no cover - would be a transformers layout we do not know
        raise EncoderLoadError(f"{path}: tensors not filled from the weights file: {left[:5]}")
    return model


def conv_num_frames(num_samples: int, kernels, strides) -> int:
    n = int(num_samples)
    for k, s in zip(kernels, strides):
        n = (n - k) // s + 1
        if n <= 0:
            return 0
    return n


def _layer_out(out):
    return out[0] if isinstance(out, tuple) else out


def walk_hidden_states(model: torch.nn.Module, wav: torch.Tensor, upto: int | None = None, *,
                       grad: bool = False) -> torch.Tensor:
    """All hidden states ``[B, L+1, T', H]`` (or states ``0..upto``) of a wav2vec 2.0-family model.
    See the module docstring for the state convention. Without gradients unless ``grad`` (fine-tuning,
    :mod:`marble.finetune`: the caller's grad mode then applies, and a layer with gradient checkpointing
    enabled recomputes its activations in the backward pass)."""
    with contextlib.nullcontext() if grad else torch.no_grad():
        return _walk(model, wav, upto)


def _walk(model: torch.nn.Module, wav: torch.Tensor, upto: int | None) -> torch.Tensor:
    cfg = model.config
    num_layers = len(model.encoder.layers)
    last = num_layers if upto is None else int(upto)
    if not 0 <= last <= num_layers:
        raise ValueError(f"upto={upto} outside 0..{num_layers}")
    x = model.feature_extractor(wav).transpose(1, 2)
    x = _layer_out(model.feature_projection(x))  # wav2vec2's projection returns (hidden, normed input)
    enc = model.encoder
    x = x + enc.pos_conv_embed(x)
    pre_ln = bool(getattr(cfg, "do_stable_layer_norm", False))
    if not pre_ln:
        x = enc.layer_norm(x)
    x = enc.dropout(x)
    states = [x]
    for layer in enc.layers[:last]:
        x = _layer_out(layer(x, attention_mask=None))
        states.append(x)
    if pre_ln and last == num_layers:
        states[-1] = enc.layer_norm(states[-1])
    return torch.stack(states, dim=1)


def normalize_clip(wav: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole clip, as ``Wav2Vec2FeatureExtractor`` does
    (population variance, ``+1e-7`` inside the square root)."""
    w = np.asarray(wav, dtype=np.float64)
    return ((w - w.mean()) / np.sqrt(w.var() + 1e-7)).astype(np.float32)


class HFSpeechEncoder(Encoder):
    """A wav2vec 2.0-family transformers model as a marble :class:`Encoder`."""

    def __init__(self, model: torch.nn.Module, *, name: str, sample_rate: int, normalize: bool,
                 weights_path: Path | None = None, revision: str | None = None,
                 config_dict: dict[str, Any] | None = None):
        super().__init__()
        self.model = model.eval()
        cfg = model.config
        self.name = name
        self.sample_rate = int(sample_rate)
        self.normalize = bool(normalize)
        self.kernels = list(cfg.conv_kernel)
        self.strides = list(cfg.conv_stride)
        self.frame_rate = self.sample_rate / float(np.prod(self.strides))
        self.num_states = len(model.encoder.layers) + 1
        self.dim = int(cfg.hidden_size)
        self.weights_path = Path(weights_path) if weights_path else None
        self.revision = revision
        self.config_dict = dict(config_dict or cfg.to_dict())
        self._sha = None
        self.requires_grad_(False)

    def prepare(self, wav: np.ndarray) -> np.ndarray:
        return normalize_clip(wav) if self.normalize else np.asarray(wav, dtype=np.float32)

    def num_frames(self, num_samples: int) -> int:
        return conv_num_frames(num_samples, self.kernels, self.strides)

    def hidden_states(self, wav: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        if wav.ndim != 2:
            raise ValueError(f"{self.name}: expected wav [B, T], got shape {tuple(wav.shape)}")
        if self.num_frames(wav.shape[-1]) < 1:
            raise ValueError(f"{self.name}: {wav.shape[-1]} samples is shorter than the conv receptive field "
                             f"(needs at least {self.min_samples()} at {self.sample_rate} Hz)")
        p = next(self.model.parameters())
        return walk_hidden_states(self.model, wav.to(device=p.device, dtype=p.dtype), upto)

    def min_samples(self) -> int:
        n = 1
        for k, s in reversed(list(zip(self.kernels, self.strides))):
            n = (n - 1) * s + k
        return n

    def weights_sha256(self) -> str | None:
        if self._sha is None and self.weights_path is not None:
            self._sha = file_sha256(self.weights_path)
        return self._sha

    def identity(self) -> dict[str, Any]:
        d = super().identity()
        d.update({
            "class": f"{type(self).__module__}.{type(self).__name__}",
            "revision": self.revision,
            "weights_file": self.weights_path.name if self.weights_path else None,
            "weights_sha256": self.weights_sha256(),
            "normalize": self.normalize,
            "last_state": "after final LayerNorm" if getattr(self.model.config, "do_stable_layer_norm", False)
            else "output of last layer",
            "config": self.config_dict,
        })
        return d


def snapshot_revision(directory: Path) -> str | None:
    """The commit hash when ``directory`` is a hub cache snapshot (``.../snapshots/<sha>``)."""
    directory = Path(directory).resolve()
    if directory.parent.name == "snapshots" and len(directory.name) == 40:
        return directory.name
    return None


def _preprocessor(directory: Path) -> dict[str, Any]:
    p = directory / "preprocessor_config.json"
    return read_json(p) if p.is_file() else {}


def load_hf_dir(directory: str | Path, *, name: str | None = None, known_id: str | None = None,
                revision: str | None = None, device: str = "cpu") -> HFSpeechEncoder:
    """A HuBERT / wav2vec 2.0 / data2vec-audio checkpoint directory (config.json + weights)."""
    from transformers import AutoConfig, AutoModel

    directory = Path(directory)
    cfg_dict = read_json(directory / "config.json")
    mt = cfg_dict.get("model_type")
    if mt not in HF_MODEL_TYPES:
        raise EncoderLoadError(f"{directory / 'config.json'}: model_type {mt!r} is not one of {HF_MODEL_TYPES}")
    weights = find_weights(directory)
    config = AutoConfig.from_pretrained(str(directory))
    config._attn_implementation = "sdpa"
    model = build_with_weights(lambda: AutoModel.from_config(config, attn_implementation="sdpa"), weights)
    pre = _preprocessor(directory)
    known = HF_KNOWN.get(known_id or "", {})
    normalize = pre.get("do_normalize", known.get("normalize", True))
    sr = pre.get("sampling_rate", known.get("sample_rate", 16000))
    enc = HFSpeechEncoder(model, name=name or known_id or str(directory), sample_rate=sr, normalize=normalize,
                          weights_path=weights, revision=revision or snapshot_revision(directory),
                          config_dict=cfg_dict)
    return enc.to(device)
