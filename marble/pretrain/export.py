"""Export a pretraining checkpoint as the checkpoint folder ``marble extract --model DIR`` loads.

Layout (the released MERT repos' layout, loaded natively on ``HubertModel`` by :mod:`marble.encoders.mert`):

* ``config.json``: the backbone's ``HubertConfig`` fields plus MERT's keys (``model_type: "mert_model"``,
  ``attention_relax``, ``deepnorm: false``, ``feature_extractor_cqt: false``, ``sample_rate``);
* ``model.safetensors``: the ``HubertModel`` weights only (names as ``HubertModel.state_dict()``); the
  prediction heads stay in the training checkpoint;
* ``preprocessor_config.json``: ``do_normalize`` (true for the post-LN 95M-style presets, false for the
  pre-LN 330M-style ones, as trained) and ``sampling_rate``;
* ``marble_pretrain.json``: provenance (preset, step, teacher, run settings).

Hidden states: the heads were trained on ``last_hidden_state``, which for a pre-LN model is taken after the
encoder's final LayerNorm; marble's loader reports exactly that tensor as the last hidden state (PROTOCOL §7),
so the exported model's states equal the training backbone's (``tests/test_pretrain_export.py``).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from marble.cache.store import atomic_open, atomic_write_bytes
from marble.pretrain.config import Preset
from marble.pretrain.trainer import load_checkpoint

_DROP = {"_attn_implementation_autoset", "attention_relax", "architectures", "model_type", "transformers_version",
         "dtype", "torch_dtype", "output_hidden_states", "output_attentions", "return_dict"}


def mert_config_dict(preset: Preset) -> dict:
    from transformers import HubertConfig

    accepted = set(inspect.signature(HubertConfig.__init__).parameters) - {"self", "kwargs"}
    hub = preset.hubert_config().to_dict()
    cfg = {k: v for k, v in hub.items() if k in accepted and k not in _DROP}
    cfg.update({
        "model_type": "mert_model",
        "architectures": ["MERTModel"],
        "attention_relax": float(preset.attention_relax),
        "deepnorm": False,
        "feature_extractor_cqt": False,
        "feature_extractor_cqt_bins": int(preset.cqt_bins),
        "sample_rate": int(preset.sample_rate),
        "torch_dtype": "float32",
    })
    return cfg


def backbone_state_dict(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("hubert."):]: v.detach().to("cpu", torch.float32).contiguous()
            for k, v in model_state.items() if k.startswith("hubert.")}


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """``checkpoint``: a ``marble pretrain run`` output folder or its ``checkpoint.pt``. Returns ``out_dir``."""
    from safetensors.torch import save

    state = load_checkpoint(checkpoint)
    preset = Preset.from_dict(state["preset"])
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    sd = backbone_state_dict(state["model"])
    with atomic_open(out / "model.safetensors") as f:
        f.write(save(sd, metadata={"format": "pt"}))
    cfg = mert_config_dict(preset)
    atomic_write_bytes(out / "config.json", json.dumps(cfg, indent=2).encode())
    pre = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "padding_side": "right",
           "padding_value": 0.0, "return_attention_mask": True, "do_normalize": bool(preset.normalize),
           "sampling_rate": int(preset.sample_rate)}
    atomic_write_bytes(out / "preprocessor_config.json", json.dumps(pre, indent=2).encode())
    prov = {"preset": preset.name, "step": int(state["step"]), "teacher": state.get("teacher"), "run": state.get("run"),
            "source": str(checkpoint)}
    atomic_write_bytes(out / "marble_pretrain.json", json.dumps(prov, indent=2, default=str).encode())
    return out
