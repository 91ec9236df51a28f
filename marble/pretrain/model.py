"""The pretraining model: a transformers ``HubertModel`` backbone plus MERT's prediction heads.

* Acoustic-teacher head (HuBERT-style): per codebook ``k`` a projection ``P_k h`` (size ``final_dim``;
  the ``K`` projections are one ``Linear`` to ``K * final_dim`` split in ``K``, as fairseq's
  ``untie_final_proj``) and learned code embeddings ``e_{k,c}``; logits are cosine similarities divided by
  the temperature 0.1: ``cos(P_k h, e_{k,c}) / 0.1`` for all ``c`` in the codebook. Codebooks of unequal
  size (k-means teachers) share one padded embedding table; padding codes are masked out of the logits.
* CQT head: one ``Linear`` from the last hidden state to the 336 CQT bins (MERT's ``model_cqt_pred``).
* Feature penalty: mean squared conv features (before the feature projection's LayerNorm), as HuBERT.

The forward runs the backbone's modules in ``HubertModel.forward``'s order (conv features -> projection
-> learned mask embedding on the masked frames -> encoder) so the conv features are available for the
penalty and their gradient can be scaled (``feature_grad_mult``). Heads read ``last_hidden_state``: for a
pre-LN model that is after the encoder's final LayerNorm, the same tensor ``marble extract`` reports as the
last hidden state of the exported model (PROTOCOL §7).
"""

from __future__ import annotations

import torch
from torch import nn

from marble.pretrain import attention
from marble.pretrain.config import Preset

LOGIT_TEMPERATURE = 0.1


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def cosine_logits(proj: torch.Tensor, embeddings: torch.Tensor, temperature: float = LOGIT_TEMPERATURE) -> torch.Tensor:
    """``proj [N, K, D]``, ``embeddings [K, V, D]`` -> logits ``[N, K, V]`` = cosine similarity / temperature
    (computed in fp32, as fairseq's ``compute_nce``)."""
    p = nn.functional.normalize(proj.float(), dim=-1, eps=1e-8)
    e = nn.functional.normalize(embeddings.float(), dim=-1, eps=1e-8)
    return torch.einsum("nkd,kvd->nkv", p, e) / temperature


class MERTPretrainModel(nn.Module):
    def __init__(self, preset: Preset):
        super().__init__()
        from transformers import HubertModel

        self.preset = preset
        impl = attention.register() if preset.attention_relax > 0 else "sdpa"
        config = preset.hubert_config(impl)
        config.attention_relax = preset.attention_relax
        self.hubert = HubertModel(config)
        h, k, d = config.hidden_size, preset.num_codebooks, preset.final_dim
        self.final_proj = nn.Linear(h, k * d)
        # fairseq HuBERT/MERT: label embeddings initialised uniform in [0, 1)
        self.code_embeddings = nn.Parameter(torch.rand(k, preset.codebook_size, d))
        self.cqt_proj = nn.Linear(h, preset.cqt_bins)
        # k-means teachers may have codebooks of different sizes (log-mel 300, chroma 200): the embeddings are
        # padded to the largest and the padding codes get logit -inf (never predicted, no gradient)
        sizes = preset.extra.get("codebook_sizes")
        self.register_buffer("code_padding", None if sizes is None or len(set(sizes)) == 1 else
                             torch.arange(preset.codebook_size)[None] >= torch.tensor(sizes)[:, None],
                             persistent=False)

    @property
    def config(self):
        return self.hubert.config

    def num_frames(self, num_samples: int) -> int:
        n = int(num_samples)
        for kk, s in zip(self.config.conv_kernel, self.config.conv_stride):
            n = (n - kk) // s + 1
        return max(n, 0)

    def forward(self, wav: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``wav [B, T]`` (already normalised if the preset says so), ``mask [B, T']`` bool (frames replaced by
        the learned mask embedding) -> ``hidden [B, T', H]`` (last hidden state) and ``feature_penalty``."""
        hub = self.hubert
        feats = hub.feature_extractor(wav)
        if self.training and self.preset.feature_grad_mult != 1.0:
            feats = _GradMultiply.apply(feats, self.preset.feature_grad_mult)
        feats = feats.transpose(1, 2)
        penalty = feats.float().pow(2).mean()
        x = hub.feature_projection(feats)
        if mask is not None:
            x = hub._mask_hidden_states(x, mask_time_indices=mask)
        out = hub.encoder(x, return_dict=True)
        return {"hidden": out.last_hidden_state, "feature_penalty": penalty}

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden [N, H]`` (selected frames) -> ``[N, K, V]`` cosine logits / 0.1."""
        k, d = self.preset.num_codebooks, self.preset.final_dim
        proj = self.final_proj(hidden).view(hidden.shape[0], k, d)
        logits = cosine_logits(proj, self.code_embeddings)
        if self.code_padding is not None:
            logits = logits.masked_fill(self.code_padding, float("-inf"))
        return logits

    def cqt_prediction(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.cqt_proj(hidden)
