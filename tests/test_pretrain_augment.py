"""Span masking statistics and in-batch noise mixup semantics."""

from __future__ import annotations

import numpy as np
import torch

from marble.pretrain.masking import span_mask
from marble.pretrain.mixup import inbatch_noise_mixup

SR = 24000


def _runs(row: np.ndarray) -> list[int]:
    out, n = [], 0
    for v in row:
        if v:
            n += 1
        elif n:
            out.append(n)
            n = 0
    if n:
        out.append(n)
    return out


def test_span_mask_fraction_and_spans():
    m = span_mask(64, 374, seed=1).numpy()  # 5 s crops at 75 Hz
    frac = m.mean()
    # 0.8 * 374 / 5 = 59 span starts of 5 frames, overlapping: expected covered fraction ~ 1 - exp(-0.8) = 0.55
    assert 0.48 < frac < 0.62, frac
    runs = [r for row in m for r in _runs(row)]
    assert min(runs) >= 5  # every masked run is at least one whole span
    starts = np.diff(np.concatenate([np.zeros((64, 1), bool), m], axis=1).astype(int), axis=1) == 1
    assert (m.sum(1) > 0).all() and starts.sum(1).min() >= 2
    # the min_masks=2 floor of MERT on a very short sequence
    assert span_mask(8, 12, seed=0, prob=0.05).numpy().sum(1).min() >= 5


def test_span_mask_is_seeded_and_leaves_global_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a, b, c = span_mask(4, 100, seed=7), span_mask(4, 100, seed=7), span_mask(4, 100, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert np.array_equal(np.random.get_state()[1], before)


def test_mixup_adds_segments_from_other_clips_at_gain_one():
    g = torch.Generator().manual_seed(0)
    b, t = 8, 2 * SR
    clean = torch.randn(b, t, generator=torch.Generator().manual_seed(1))
    original = clean.clone()
    mixed, segs = inbatch_noise_mixup(clean, SR, g)
    assert torch.equal(clean, original)  # the clean batch (targets come from it) is untouched
    assert segs, "with 8 clips and p=0.5 some clip is mixed"
    expected = original.clone()
    for s in segs:
        assert s.source != s.clip
        assert int(0.5 * SR) <= s.length <= int(1.0 * SR)
        assert 0 <= s.src_start <= t - s.length and 0 <= s.dst_start <= t - s.length
        expected[s.clip, s.dst_start:s.dst_start + s.length] += original[s.source, s.src_start:s.src_start + s.length]
    torch.testing.assert_close(mixed, expected, rtol=0, atol=1e-6)
    # only the chosen segments changed
    touched = torch.zeros(b, t, dtype=torch.bool)
    for s in segs:
        touched[s.clip, s.dst_start:s.dst_start + s.length] = True
    assert torch.equal(mixed[~touched], original[~touched])
    per_clip = {}
    for s in segs:
        per_clip[s.clip] = per_clip.get(s.clip, 0) + 1
    assert all(1 <= n <= 3 for n in per_clip.values())


def test_mixup_rate_is_half_and_seeded():
    clean = torch.randn(4, SR)
    chosen = []
    for seed in range(200):
        _, segs = inbatch_noise_mixup(clean, SR, torch.Generator().manual_seed(seed))
        chosen.append(len({s.clip for s in segs}))
    rate = sum(chosen) / (200 * 4)
    assert 0.43 < rate < 0.57, rate
    m1, _ = inbatch_noise_mixup(clean, SR, torch.Generator().manual_seed(3))
    m2, _ = inbatch_noise_mixup(clean, SR, torch.Generator().manual_seed(3))
    assert torch.equal(m1, m2)
    single, segs = inbatch_noise_mixup(clean[:1], SR, torch.Generator().manual_seed(0))
    assert not segs and torch.equal(single, clean[:1])  # no other clip to borrow from
