"""Conformance check: run any encoder through the :class:`~marble.encoders.base.Encoder` contract.

Used by ``marble models check <spec>`` and the tests. Each check returns a :class:`Check`; an exception
inside a check is a failure carrying the message, so one broken method does not hide the others.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from marble.encoders.base import Encoder


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / (b.abs().max() + 1e-12)) if b.numel() else 0.0


def probe_signal(num_samples: int, sample_rate: int, seed: int) -> np.ndarray:
    """Deterministic noise + two tones, so spectral and learned encoders both see structure."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    x = 0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.2 * np.sin(2 * np.pi * 330.0 * (1 + seed) * t)
    return (x + 0.05 * rng.standard_normal(num_samples)).astype(np.float32)


@torch.no_grad()
def check_encoder(enc: Encoder, seconds: tuple[float, ...] = (1.0, 1.73), batch: int = 2,
                  rtol: float = 1e-4) -> list[Check]:
    results: list[Check] = []

    def run(name: str, fn: Callable[[], str | None]) -> None:
        try:
            detail = fn()
            results.append(Check(name, True, detail or ""))
        except AssertionError as e:
            results.append(Check(name, False, str(e) or "assertion failed"))
        except Exception as e:
            results.append(Check(name, False, f"{type(e).__name__}: {e}"))

    def attributes():
        assert isinstance(enc.name, str) and enc.name, "name must be a non-empty string"
        assert isinstance(enc.sample_rate, (int, np.integer)) and enc.sample_rate > 0, \
            f"sample_rate must be a positive int, got {enc.sample_rate!r}"
        assert isinstance(enc.frame_rate, (int, float)) and enc.frame_rate > 0 and math.isfinite(enc.frame_rate), \
            f"frame_rate must be a positive number, got {enc.frame_rate!r}"
        assert isinstance(enc.num_states, (int, np.integer)) and enc.num_states >= 1, \
            f"num_states must be an int >= 1, got {enc.num_states!r}"
        assert isinstance(enc.dim, (int, np.integer)) and enc.dim >= 1, f"dim must be an int >= 1, got {enc.dim!r}"
        n = enc.num_frames(10 * enc.sample_rate)
        assert abs(n - 10 * enc.frame_rate) <= 2 + 0.01 * 10 * enc.frame_rate, \
            f"num_frames(10 s) = {n} but frame_rate says {10 * enc.frame_rate:g}"
        return (f"{enc.name}: {enc.sample_rate} Hz, {enc.frame_rate:g} Hz frames, "
                f"S={enc.num_states}, H={enc.dim}")

    def eval_mode():
        assert not enc.training, "encoder must be in eval mode after loading (call .eval())"

    def identity():
        ident = enc.identity()
        assert isinstance(ident, dict) and ident.get("name"), "identity() must return a dict with 'name'"
        json.dumps(ident, default=str)
        return f"{len(ident)} fields"

    def methods():
        from marble.encoders.base import missing_methods

        missing = missing_methods(enc)
        assert not missing, ("missing method(s): " + ", ".join(f"{type(enc).__name__}.{m}" for m in missing)
                             + " (an Encoder must implement hidden_states(wav, upto=None) and num_frames(num_samples); "
                             "see docs/encoders.md)")
        return "hidden_states, num_frames implemented"

    run("methods", methods)
    run("attributes", attributes)
    run("eval mode", eval_mode)
    run("identity", identity)

    lengths = [max(1, int(round(s * enc.sample_rate))) for s in seconds]
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def inputs(n: int) -> torch.Tensor:
        items = []
        for i in range(batch):
            raw = probe_signal(n, enc.sample_rate, seed=i)
            prep = np.asarray(enc.prepare(raw))
            assert prep.shape == raw.shape, f"prepare changed the shape {raw.shape} -> {prep.shape}"
            items.append(prep.astype(np.float32))
        return torch.from_numpy(np.stack(items))

    def shape_check(n: int):
        def fn():
            x = inputs(n)
            out = enc.hidden_states(x)
            cache[n] = (x, out)  # later checks still run when only the shape is wrong
            want = (batch, enc.num_states, enc.num_frames(n), enc.dim)
            assert tuple(out.shape) == want, f"{n} samples: got {tuple(out.shape)}, expected {want} [B, S, T', H]"
            assert torch.isfinite(out).all(), f"{n} samples: output has NaN or inf"
            return f"{n} samples -> {tuple(out.shape)}, finite"
        return fn

    for n in lengths:
        run(f"shape + finite ({n / enc.sample_rate:g} s)", shape_check(n))

    n0 = lengths[0]

    def need():
        assert n0 in cache, "skipped: hidden_states failed"
        return cache[n0]

    def upto():
        x, full = need()
        picks = sorted({0, enc.num_states // 2, enc.num_states - 1})
        for u in picks:
            part = enc.hidden_states(x, upto=u)
            assert part.shape[1] == u + 1, f"upto={u}: {part.shape[1]} states, expected {u + 1}"
            err = _rel_err(part, full[:, : u + 1])
            assert err <= rtol, f"upto={u}: differs from the full output's prefix (rel. err {err:.2e})"
        return f"upto in {picks} is a prefix of the full output"

    def batch_consistency():
        x, full = need()
        worst = 0.0
        for i in range(batch):
            single = enc.hidden_states(x[i: i + 1])
            worst = max(worst, _rel_err(single[0], full[i]))
        assert worst <= rtol, f"batched vs per-item results differ (rel. err {worst:.2e} > {rtol:g})"
        return f"max rel. err {worst:.1e}"

    def determinism():
        x, full = need()
        again = enc.hidden_states(x)
        err = _rel_err(again, full)
        assert err <= 1e-6, f"two identical calls differ (rel. err {err:.2e}); dropout left on?"
        return f"rel. err {err:.1e}"

    run("upto prefix", upto)
    run("batch consistency", batch_consistency)
    run("determinism", determinism)
    return results


def all_ok(results: list[Check]) -> bool:
    return all(r.ok for r in results)
