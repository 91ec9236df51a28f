"""Pretraining model pieces against independent references: relaxed attention vs SDPA (fp32) and its fp16
behaviour where the plain scaled dot product overflows; cosine logits vs a hand computation; the loss vs
its definition; the relaxed-attention backbone vs the same weights under SDPA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from marble.pretrain.attention import relaxed_attention_forward
from marble.pretrain.config import get_preset
from marble.pretrain.losses import mert_loss
from marble.pretrain.model import MERTPretrainModel


def _qkv(scale: float, dtype=torch.float32, seed: int = 0, b=2, h=3, t=17, d=64):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, h, t, d, generator=g) * scale).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("relax", [1.0, 32.0])
def test_relaxed_attention_equals_sdpa_fp32(relax):
    q, k, v = _qkv(3.0)
    mask = torch.zeros(2, 1, 17, 17)
    mask[1, ..., -4:] = float("-inf")  # padded keys in the second clip
    for m in (None, mask):
        out, probs = relaxed_attention_forward(None, q, k, v, m, scaling=64 ** -0.5, relax=relax)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=m).transpose(1, 2)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 17))


def test_relaxed_attention_stays_finite_in_fp16_where_plain_overflows():
    q, k, v = _qkv(60.0, torch.float16)
    scaling = 64 ** -0.5
    plain = torch.matmul(q, k.transpose(-1, -2)) * scaling  # the eager (unrelaxed) fp16 logits
    assert not torch.isfinite(plain).all(), "inputs must overflow the plain fp16 product for this test to mean anything"
    assert torch.isnan(torch.softmax(plain.float(), -1)).any()
    out, probs = relaxed_attention_forward(None, q, k, v, None, scaling=scaling, relax=32.0)
    assert torch.isfinite(out).all() and torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs[..., 0]))
    # a convex combination of the values (logits of this size are only good to fp16 precision, so no
    # closer comparison with a float64 reference is meaningful here)
    vt = v.transpose(1, 2).float()
    assert (out.float() <= vt.amax(1, keepdim=True) + 1e-2).all() and (out.float() >= vt.amin(1, keepdim=True) - 1e-2).all()
    # moderate fp16 inputs: same function as the float64 reference within fp16 precision
    q, k, v = _qkv(2.0, torch.float16, seed=1)
    out, _ = relaxed_attention_forward(None, q, k, v, None, scaling=scaling, relax=32.0)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=scaling).transpose(1, 2)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=3e-2)


def test_relaxed_backbone_equals_sdpa_backbone(monkeypatch):
    """tiny-preln trains with attn_implementation='mert_relaxed': same hidden states as SDPA, and the
    relaxed function is the one actually called."""
    from transformers import HubertModel

    import marble.pretrain.attention as att

    torch.manual_seed(0)
    model = MERTPretrainModel(get_preset("tiny-preln")).eval()
    assert model.config._attn_implementation == "mert_relaxed"
    calls = []
    orig = att.relaxed_attention_forward

    def spy(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    from transformers import AttentionInterface

    monkeypatch.setitem(AttentionInterface._global_mapping, "mert_relaxed", spy)
    cfg = get_preset("tiny-preln").hubert_config("sdpa")
    ref = HubertModel(cfg).eval()
    ref.load_state_dict(model.hubert.state_dict())
    x = torch.randn(2, 12000)
    with torch.no_grad():
        got = model(x)["hidden"]
        want = ref(x).last_hidden_state
    assert len(calls) == cfg.num_hidden_layers
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cosine_logits_match_hand_computation():
    torch.manual_seed(0)
    model = MERTPretrainModel(get_preset("tiny"))
    h = torch.randn(5, model.config.hidden_size)
    with torch.no_grad():
        logits = model.code_logits(h)
    p = get_preset("tiny")
    assert logits.shape == (5, p.num_codebooks, p.codebook_size)
    w, b = model.final_proj.weight.detach(), model.final_proj.bias.detach()
    for n in (0, 4):
        for kk in (0, p.num_codebooks - 1):
            proj = (h[n] @ w.T + b)[kk * p.final_dim:(kk + 1) * p.final_dim]
            for c in (0, 17, p.codebook_size - 1):
                e = model.code_embeddings[kk, c].detach()
                cos = float(proj @ e) / (math.sqrt(float(proj @ proj)) * math.sqrt(float(e @ e)))
                assert abs(float(logits[n, kk, c]) - cos / 0.1) < 1e-4


def test_loss_is_sum_of_codebook_ce_plus_cqt_mse_plus_10x_penalty():
    torch.manual_seed(0)
    p = get_preset("tiny")
    model = MERTPretrainModel(p)
    b, t = 2, 9
    hidden = torch.randn(b, t, model.config.hidden_size)
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask[0, 2:7] = True
    mask[1, :3] = True
    codes = torch.randint(0, p.codebook_size, (b, p.num_codebooks, t))
    cqt = torch.rand(b, t, p.cqt_bins)
    pen = torch.tensor(0.37)
    torch.set_grad_enabled(False)
    try:
        _check_loss(model, p, hidden, mask, codes, cqt, pen, b, t)
    finally:
        torch.set_grad_enabled(True)


def _check_loss(model, p, hidden, mask, codes, cqt, pen, b, t):
    res = mert_loss(model, hidden, mask, codes, cqt, pen)
    ce = 0.0
    for kk in range(p.num_codebooks):
        terms = []
        for i in range(b):
            for j in range(t):
                if mask[i, j]:
                    lg = model.code_logits(hidden[i, j][None])[0, kk]
                    terms.append(float(torch.logsumexp(lg, 0) - lg[codes[i, kk, j]]))
        ce += sum(terms) / len(terms)
    pred = model.cqt_prediction(hidden)
    mse = float(((pred - cqt)[mask] ** 2).mean())  # masked frames only
    assert abs(float(res["ce"]) - ce) < 1e-3
    assert abs(float(res["cqt"]) - mse) < 1e-5
    assert abs(float(res["loss"]) - (ce + mse + 10 * 0.37)) < 1e-3
    assert int(res["masked_frames"]) == 8
