"""Encoding: the encoder run on batches of equal-length segments (never padded), its output checked against
the Encoder contract and the fp16 cache range; the compute dtype and the kept hidden states."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Iterable

import numpy as np
import torch

from marble.errors import MarbleError


FP16_MAX = float(np.finfo(np.float16).max)  # 65504: clip features are cached as fp16


class EncoderContractError(MarbleError, RuntimeError):
    pass


_DTYPES = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: torch.device) -> tuple[str, torch.dtype | None]:
    """(name recorded in the manifest, autocast dtype or None for plain fp32).

    fp32 is the protocol (PROTOCOL §2: the reference extracted in fp32), on every device; ``auto``
    means fp32. bf16/fp16 autocast is a speed option: the manifest records it and the submission
    check lists it as a deviation (``marble.results.conformance``)."""
    if dtype in (None, "", "auto"):
        return "fp32", None
    if dtype not in _DTYPES:
        raise ValueError(f"--dtype {dtype!r}: use auto, fp32, bf16 or fp16")
    amp = _DTYPES[dtype]
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp], amp


def parse_states(spec: str | Iterable[int] | None, num_states: int) -> list[int] | None:
    """``"0,6,12"`` / ``[0, 6, 12]`` -> sorted unique indices; ``None``/``"all"`` -> None (all)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return None
    try:
        vals = [int(s) for s in spec.split(",") if s.strip()] if isinstance(spec, str) else [int(s) for s in spec]
    except ValueError:
        raise ValueError(f"--states {spec!r}: give comma-separated hidden-state indices, e.g. 0,6,12, or 'all'") from None
    bad = [v for v in vals if not 0 <= v < num_states]
    if bad or not vals:
        raise ValueError(f"--states {spec!r}: indices must lie in 0..{num_states - 1} (the encoder has {num_states} states)")
    return sorted(set(vals))


class Runner:
    """Runs the encoder on batches of equal-length segments and returns per-segment results:
    clip tasks the fp32 time mean (computed on the device) and the frame count, frame tasks the
    fp16 frames ``[S, T, H]``."""

    def __init__(self, encoder, device, amp, batch_size: int, clip: bool, states: list[int] | None):
        self.encoder, self.device, self.amp, self.batch_size = encoder, device, amp, batch_size
        self.clip, self.states = clip, states
        self.upto = max(states) if states else None
        self.want_s = len(states) if states else encoder.num_states
        self.buckets: dict[int, list] = {}
        self.pending: list = []
        self.results: dict[tuple, tuple[np.ndarray, int]] = {}
        self.cuda = device.type == "cuda"
        self.name_of: Callable[[tuple], str] = lambda key: f"item {key[0]}"

    def add(self, key: tuple, segment: np.ndarray) -> None:
        bucket = self.buckets.setdefault(len(segment), [])
        bucket.append((key, segment))
        if len(bucket) >= self.batch_size:
            self._run(self.buckets.pop(len(segment)))

    def flush(self) -> dict[tuple, tuple[np.ndarray, int]]:
        for length in list(self.buckets):
            self._run(self.buckets.pop(length))
        self._resolve()
        out, self.results = self.results, {}
        return out

    def _run(self, batch: list) -> None:
        x = torch.from_numpy(np.stack([seg for _, seg in batch]))
        if self.cuda:
            x = x.pin_memory().to(self.device, non_blocking=True)
        ctx = torch.autocast(device_type=self.device.type, dtype=self.amp) if self.amp is not None else nullcontext()
        with torch.inference_mode(), ctx:
            try:
                hs = self.encoder.hidden_states(x, upto=self.upto)
            except Exception as e:
                raise EncoderContractError(
                    f"encoder {self.encoder.name!r}: hidden_states raised {type(e).__name__}: {e} on a batch of shape "
                    f"{list(x.shape)} (files {self._files(batch)}); fix the encoder (or lower --batch-size if it ran "
                    "out of memory). Finished units are kept") from None
            if hs.dim() != 4 or hs.shape[0] != len(batch) or hs.shape[-1] != self.encoder.dim:
                raise EncoderContractError(
                    f"encoder {self.encoder.name!r}: hidden_states returned shape {tuple(hs.shape)}, expected "
                    f"[{len(batch)}, S, T', {self.encoder.dim}] (see marble/encoders/base.py)")
            if self.states:
                if hs.shape[1] <= max(self.states):
                    raise EncoderContractError(f"encoder {self.encoder.name!r}: returned {hs.shape[1]} states, need state {max(self.states)}")
                hs = hs[:, self.states]
            elif hs.shape[1] != self.want_s:
                raise EncoderContractError(f"encoder {self.encoder.name!r}: returned {hs.shape[1]} states, declares num_states={self.want_s}")
            n_frames = hs.shape[2]
            if n_frames < 1:
                raise EncoderContractError(f"encoder {self.encoder.name!r}: no frames for a {x.shape[1]}-sample input")
            out = hs.float().mean(dim=2) if self.clip else hs.to(torch.float16)
        if self.cuda:
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host, event = out, None
        self.pending.append(([k for k, _ in batch], host, event, n_frames))
        if len(self.pending) > 4:
            self._resolve()

    def _files(self, batch: list) -> str:
        names = [self.name_of(k) for k, _ in batch[:3]]
        return ", ".join(names) + (f" and {len(batch) - 3} more" if len(batch) > 3 else "")

    def _check_finite(self, arr: np.ndarray, keys: list) -> None:
        """NaN/inf features, or clip means beyond the fp16 cache range (65504), are refused here, naming
        the hidden state and the file, instead of being cached and failing later in the probe. Checked on
        the host copy, so the device queue is never synchronised for it."""
        bad = ~np.isfinite(arr)
        if self.clip:
            bad |= np.abs(arr) > FP16_MAX
        if not bad.any():
            return
        b, s = [int(v) for v in np.argwhere(bad)[0][:2]]
        layer = self.states[s] if self.states else s
        finite = bool(np.isfinite(arr[b, s]).all())
        what = (f"values up to {float(np.abs(arr[b, s]).max()):.4g}, beyond the fp16 cache range (±{FP16_MAX:g})"
                if finite else "NaN or inf values")
        raise EncoderContractError(
            f"{self.name_of(keys[b])}: encoder {self.encoder.name!r} produced {what} in hidden state {layer}; "
            "nothing of this unit was cached. Check the encoder (and try --dtype fp32 if it ran in fp16/bf16)")

    def _resolve(self) -> None:
        for keys, host, event, n_frames in self.pending:
            if event is not None:
                event.synchronize()
            arr = host.numpy()
            self._check_finite(arr, keys)
            for j, key in enumerate(keys):
                self.results[key] = (arr[j].copy(), n_frames)
        self.pending = []
