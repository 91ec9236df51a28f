"""The MERT-v1 objective on the masked frames.

``loss = sum_k CE_k + MSE_cqt + 10 * feature_penalty``, where ``CE_k`` is the mean cross-entropy of codebook
``k``'s cosine logits over the masked frames and ``MSE_cqt`` the mean squared error of the predicted CQT
magnitude over the masked frames and the 336 bins. This is what fairseq's ``hubert`` criterion computes for
MERT's configs (``pred_masked_weight 1, pred_nomask_weight 0, loss_weights [10, 1]``): the CE summed over
frames and codebooks, the extra losses multiplied by the number of masked frames, everything divided by that
number. The CQT loss is on masked frames only, as in MERT's ``model_cqt_pred`` (``x[masked_indices]``).

With gradient accumulation and data parallelism a step's loss is spread over micro-batches and ranks:
``num_masked`` is then the masked-frame count of the *whole step* and ``penalty_scale`` 1 / (micro-batches x
ranks), so that the micro-batch losses (and every returned component) sum to the loss of the whole step, as
fairseq normalises by the all-reduced sample size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FEATURE_PENALTY_WEIGHT = 10.0
CQT_WEIGHT = 1.0


def mert_loss(model, hidden: torch.Tensor, mask: torch.Tensor, codes: torch.Tensor, cqt: torch.Tensor,
              feature_penalty: torch.Tensor, cqt_weight: float = CQT_WEIGHT,
              penalty_weight: float = FEATURE_PENALTY_WEIGHT, num_masked: float | None = None,
              penalty_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """``hidden [B, T, H]``, ``mask [B, T]`` bool, ``codes [B, K, T]`` long, ``cqt [B, T, bins]`` (all aligned to
    ``T`` frames) -> dict with ``loss`` (differentiable) and detached components for logging. By default the
    means are over this batch's masked frames; ``num_masked`` divides the sums by another count instead (a
    step's total over micro-batches and ranks), ``penalty_scale`` scales the feature penalty."""
    h = hidden[mask]                                  # [N, H]
    if h.shape[0] == 0 and num_masked is None:
        raise ValueError("no masked frames in the batch")
    n = float(h.shape[0]) if num_masked is None else float(num_masked)
    logits = model.code_logits(h)                     # [N, K, V] fp32
    targets = codes.transpose(1, 2)[mask]             # [N, K]
    k = logits.shape[1]
    ce = [F.cross_entropy(logits[:, i], targets[:, i], reduction="sum") / n for i in range(k)]
    ce_sum = torch.stack(ce).sum()
    pred = model.cqt_prediction(h).float()
    cqt_mse = F.mse_loss(pred, cqt[mask].float(), reduction="sum") / (n * pred.shape[-1])
    penalty = feature_penalty.float() * penalty_scale
    loss = ce_sum + cqt_weight * cqt_mse + penalty_weight * penalty
    with torch.no_grad():
        acc = (logits.argmax(-1) == targets).float().sum() / (n * k)
    out = {"loss": loss, "ce": ce_sum.detach(), "cqt": cqt_mse.detach(), "feature_penalty": penalty.detach(),
           "accuracy": acc, "masked_frames": torch.tensor(float(h.shape[0]))}
    for i, c in enumerate(ce):
        out[f"ce_{i}"] = c.detach()
    return out
