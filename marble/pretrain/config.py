"""Model presets for pretraining: the ``HubertConfig`` of the backbone plus the recipe's per-size facts.

``95m`` and ``330m`` follow PROTOCOL §7 and MERT's released fairseq configs
(``MERT_RVQ-VAE_CQT_95M.yaml`` / ``_330M.yaml``): final projection size, feature-gradient scale,
dropouts, gradient clipping and peak LR differ by size. ``tiny`` / ``tiny-preln`` share the MERT-v1 conv
front end's kernels and strides (total stride 320 -> 75 Hz at 24 kHz) with tiny widths, for tests.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

# the MERT-v1 conv front end (PROTOCOL §7): 7 convs, total stride 320
CONV_KERNEL = [10, 3, 3, 3, 3, 2, 2]
CONV_STRIDE = [5, 2, 2, 2, 2, 2, 2]


@dataclass
class Preset:
    name: str
    hubert: dict[str, Any]           # HubertConfig keyword arguments
    final_dim: int                   # size of the per-codebook projection / code embeddings
    lr: float                        # peak learning rate
    clip_norm: float                 # gradient clipping (fairseq clip_norm)
    feature_grad_mult: float = 1.0   # scale of the gradient into the conv front end (fairseq feature_grad_mult)
    attention_relax: float = -1.0    # > 0: relaxed attention in training (see marble.pretrain.attention)
    normalize: bool = True           # zero-mean/unit-variance input (exported as do_normalize)
    sample_rate: int = 24000
    num_codebooks: int = 8
    codebook_size: int = 1024
    cqt_bins: int = 336
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pre_ln(self) -> bool:
        return bool(self.hubert.get("do_stable_layer_norm", False))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preset":
        return cls(**copy.deepcopy(d))

    def hubert_config(self, attn_implementation: str | None = None):
        from transformers import HubertConfig

        cfg = HubertConfig(**self.hubert)
        if attn_implementation:
            cfg._attn_implementation = attn_implementation
        return cfg


def _front_end(width: int) -> dict[str, Any]:
    return dict(conv_dim=[width] * 7, conv_kernel=list(CONV_KERNEL), conv_stride=list(CONV_STRIDE), conv_bias=False,
                feat_extract_norm="group", feat_extract_activation="gelu", feat_proj_layer_norm=True)


def _dropouts(p: float, layerdrop: float) -> dict[str, Any]:
    return dict(hidden_dropout=p, attention_dropout=p, activation_dropout=0.0, feat_proj_dropout=p,
                final_dropout=p, layerdrop=layerdrop)


def _base(**over) -> dict[str, Any]:
    # mask_time_prob keeps transformers' default: training passes its own mask (p=0.8, span 5) explicitly;
    # any value > 0 creates HubertModel.masked_spec_embed, the learned mask embedding.
    d = dict(hidden_act="gelu", layer_norm_eps=1e-5, mask_time_prob=0.05, mask_time_length=5, mask_feature_prob=0.0,
             apply_spec_augment=True, initializer_range=0.02)
    d.update(over)
    return d


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        hubert=_base(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=False,
                     **_front_end(16), **_dropouts(0.0, 0.0)),
        final_dim=16, lr=5e-3, clip_norm=10.0, normalize=True),
    "tiny-preln": Preset(
        name="tiny-preln",
        hubert=_base(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=True,
                     **_front_end(16), **_dropouts(0.0, 0.0)),
        final_dim=16, lr=5e-3, clip_norm=1.0, attention_relax=32.0, normalize=False),
    # MERT-v1-95M: 12 post-LN layers x 768, 12 heads, FFN 3072 (PROTOCOL §7)
    "95m": Preset(
        name="95m",
        hubert=_base(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                     num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, do_stable_layer_norm=False,
                     **_front_end(512), **_dropouts(0.1, 0.05)),
        final_dim=64, lr=5e-4, clip_norm=10.0, feature_grad_mult=0.1, normalize=True),
    # MERT-v1-330M: 24 pre-LN layers x 1024, 16 heads, FFN 4096, attention relaxation 32 (PROTOCOL §7)
    "330m": Preset(
        name="330m",
        hubert=_base(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                     num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, do_stable_layer_norm=True,
                     **_front_end(512), **_dropouts(0.0, 0.0)),
        final_dim=128, lr=1.5e-3, clip_norm=1.0, feature_grad_mult=1.0, attention_relax=32.0, normalize=False),
}


def get_preset(name: str) -> Preset:
    from marble.pretrain import PretrainError

    if name not in PRESETS:
        raise PretrainError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
