"""In-batch noise mixup (MERT-v1): with probability 0.5 a clip gets 1-3 segments of 0.5-1.0 s taken from
*other* clips of the batch, added at gain 1 at random positions. Targets (EnCodec codes, CQT) are computed
from the clean batch: the model has to hear the original through the interference.

Differences from MERT's code (``inbatch_noise_augment``), both deliberate: MERT concatenated the other clips
into one pool and cut segments from it, so a segment could straddle two clips; here each segment comes from
one other clip. MERT's released configs use 0.5-1.0 s (95M) and 0.5-1.5 s (330M); PROTOCOL §7 says
0.5-1.0 s, the default here. All draws come from the caller's ``torch.Generator`` (reproducible per step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Segment:
    clip: int       # the clip that receives the segment
    source: int     # the other clip it is taken from
    src_start: int  # sample offset in the source clip
    dst_start: int  # sample offset in the receiving clip
    length: int     # samples


def inbatch_noise_mixup(wav: torch.Tensor, sample_rate: int, generator: torch.Generator, prob: float = 0.5,
                        num_range: tuple[int, int] = (1, 3), seconds_range: tuple[float, float] = (0.5, 1.0),
                        gain: float = 1.0) -> tuple[torch.Tensor, list[Segment]]:
    """``wav [B, T]`` -> (mixed copy ``[B, T]``, the segments added). Segments are read from the clean
    input, never from already-mixed clips. A batch of one clip is returned unchanged."""
    b, t = wav.shape
    mixed = wav.clone()
    segments: list[Segment] = []
    if b < 2 or prob <= 0:
        return mixed, segments
    lo = min(int(round(seconds_range[0] * sample_rate)), t)
    hi = min(int(round(seconds_range[1] * sample_rate)), t)

    def randint(a: int, b_incl: int) -> int:
        return int(torch.randint(a, b_incl + 1, (1,), generator=generator))

    chosen = torch.rand(b, generator=generator) < prob
    for i in range(b):
        if not chosen[i]:
            continue
        for _ in range(randint(num_range[0], num_range[1])):
            j = randint(0, b - 2)
            j = j + 1 if j >= i else j  # any clip but i
            n = randint(lo, hi)
            s, d = randint(0, t - n), randint(0, t - n)
            mixed[i, d:d + n] += gain * wav[j, s:s + n]
            segments.append(Segment(i, j, s, d, n))
    return mixed, segments
