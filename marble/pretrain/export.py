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
from pathlib import Path

import torch

from marble.io import write_json
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
    from marble.encoders.mert import save_mert_dir

    state = load_checkpoint(checkpoint)
    preset = Preset.from_dict(state["preset"])
    out = save_mert_dir(out_dir, mert_config_dict(preset), backbone_state_dict(state["model"]),
                        normalize=preset.normalize, sample_rate=preset.sample_rate)
    prov = {"preset": preset.name, "step": int(state["step"]), "teacher": state.get("teacher"), "run": state.get("run"),
            "source": str(checkpoint)}
    write_json(out / "marble_pretrain.json", prov)
    return out
