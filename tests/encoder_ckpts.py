"""Tiny random checkpoints in the real Hugging Face layouts, for the encoder tests.

MERT: ``config.json`` exactly as the released MERT repos write it (``model_type: "mert_model"`` and
MERT's extra keys) + ``model.safetensors`` or ``pytorch_model.bin`` (with the transformers-4.25 weight-norm
names ``weight_g`` / ``weight_v`` the released ``.bin`` files carry). The reference ``HubertModel`` is built
from a ``HubertConfig`` written out here, independently of marble's config translation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# MERT-v1 front end (7 convs, total stride 320 -> 75 Hz at 24 kHz) with tiny widths
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            conv_dim=[16] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
            conv_bias=False, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
            feat_extract_norm="group", feat_extract_activation="gelu", feat_proj_layer_norm=True,
            hidden_act="gelu", layer_norm_eps=1e-5, hidden_dropout=0.1, attention_dropout=0.1,
            activation_dropout=0.1, feat_proj_dropout=0.1, layerdrop=0.1, mask_time_prob=0.05,
            mask_time_length=5, mask_feature_prob=0.0)


def mert_config_json(pre_ln: bool = False, num_layers: int = 2, **over) -> dict:
    cfg = {
        "_name_or_path": "tiny-mert",
        "architectures": ["MERTModel"],
        "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
        "model_type": "mert_model",
        "attention_relax": 32.0 if pre_ln else -1.0,
        "deepnorm": False,
        "feature_extractor_cqt": False,
        "feature_extractor_cqt_bins": 336,
        "sample_rate": 24000,
        "do_stable_layer_norm": pre_ln,
        "num_feat_extract_layers": 7,
        "torch_dtype": "float32",
        "transformers_version": "4.25.1",
        "gradient_checkpointing": False,
        "feat_extract_dropout": 0.0,
        "apply_spec_augment": True,
        "classifier_proj_size": 256,
        "ctc_loss_reduction": "sum",
        "ctc_zero_infinity": False,
        "final_dropout": 0.1,
        "initializer_range": 0.02,
        "mask_feature_length": 10,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "vocab_size": 32,
        **TINY,
    }
    cfg["num_hidden_layers"] = num_layers
    cfg.update(over)
    return cfg


def reference_hubert(pre_ln: bool = False, num_layers: int = 2, seed: int = 0, **over):
    """A random ``HubertModel`` (eager attention, eval mode) with non-trivial LayerNorm parameters; ``over``
    changes config keys (e.g. ``initializer_range``, the scale of the random weights)."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    config = HubertConfig(**{**TINY, "num_hidden_layers": num_layers, "do_stable_layer_norm": pre_ln, **over})
    config._attn_implementation = "eager"
    model = HubertModel(config).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
            if isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.normal_(0, 0.05)
    return model


def save_mert_dir(directory: Path, model, cfg: dict, fmt: str = "safetensors", preprocessor: dict | None = None):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(directory / "model.safetensors"), metadata={"format": "pt"})
    else:  # transformers 4.25's names for the weight-normed positional conv, as in the released .bin
        sd = {k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v for k, v in sd.items()}
        torch.save(sd, directory / "pytorch_model.bin")
    if preprocessor is not None:
        (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return directory


def make_mert_dir(directory: Path, pre_ln: bool = False, fmt: str = "safetensors", seed: int = 0,
                  init_range: float | None = None, **over):
    """A tiny random MERT checkpoint folder; ``over`` changes config.json keys (dropouts, ...), ``init_range``
    the scale of the random weights (transformers' ``initializer_range``, 0.02 by default)."""
    extra = {} if init_range is None else {"initializer_range": init_range}
    model = reference_hubert(pre_ln=pre_ln, seed=seed, **extra)
    save_mert_dir(directory, model, mert_config_json(pre_ln=pre_ln, **extra, **over), fmt=fmt)
    return directory, model


def write_plugin_package(site: Path, module: str, source: str, entry_point: str, target: str) -> Path:
    """An installed plug-in package in ``site`` (module + a real ``.dist-info`` declaring ``entry_point =
    target`` in the ``marble.encoders`` group); put ``site`` on sys.path to install it."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(source)
    dist = site / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[marble.encoders]\n{entry_point} = {target}\n")
    return site
