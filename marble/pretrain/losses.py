"""The MERT-v1 objective on the masked frames.

``loss = sum_k CE_k + MSE_cqt + 10 * feature_penalty``, where ``CE_k`` is the mean cross-entropy of codebook
``k``'s cosine logits over the masked frames and ``MSE_cqt`` the mean squared error of the predicted CQT
magnitude over the masked frames and the 336 bins. This is what fairseq's ``hubert`` criterion computes for
MERT's configs (``pred_masked_weight 1, pred_nomask_weight 0, loss_weights [10, 1]``): the CE summed over
frames and codebooks, the extra losses multiplied by the number of masked frames, everything divided by that
number. The CQT loss is on masked frames only, as in MERT's ``model_cqt_pred`` (``x[masked_indices]``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FEATURE_PENALTY_WEIGHT = 10.0
CQT_WEIGHT = 1.0


def mert_loss(model, hidden: torch.Tensor, mask: torch.Tensor, codes: torch.Tensor, cqt: torch.Tensor,
              feature_penalty: torch.Tensor, cqt_weight: float = CQT_WEIGHT,
              penalty_weight: float = FEATURE_PENALTY_WEIGHT) -> dict[str, torch.Tensor]:
    """``hidden [B, T, H]``, ``mask [B, T]`` bool, ``codes [B, K, T]`` long, ``cqt [B, T, bins]`` (all aligned to
    ``T`` frames) -> dict with ``loss`` (differentiable) and detached components for logging."""
    h = hidden[mask]                                  # [N, H]
    if h.shape[0] == 0:
        raise ValueError("no masked frames in the batch")
    logits = model.code_logits(h)                     # [N, K, V] fp32
    targets = codes.transpose(1, 2)[mask]             # [N, K]
    k = logits.shape[1]
    ce = [F.cross_entropy(logits[:, i], targets[:, i]) for i in range(k)]
    ce_sum = torch.stack(ce).sum()
    pred = model.cqt_prediction(h).float()
    cqt_mse = F.mse_loss(pred, cqt[mask].float())
    loss = ce_sum + cqt_weight * cqt_mse + penalty_weight * feature_penalty.float()
    with torch.no_grad():
        acc = (logits.argmax(-1) == targets).float().mean()
    out = {"loss": loss, "ce": ce_sum.detach(), "cqt": cqt_mse.detach(), "feature_penalty": feature_penalty.detach(),
           "accuracy": acc, "masked_frames": torch.tensor(float(h.shape[0]))}
    for i, c in enumerate(ce):
        out[f"ce_{i}"] = c.detach()
    return out
