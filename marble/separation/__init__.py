"""Source separation pieces (MUSDB18, PROTOCOL §4): STFT targets, per-source Wiener EM
reconstruction with a residual, and a bounded-memory inverse STFT.

* targets: the magnitude STFT (n_fft 2048, hop 320 at 24 kHz -> 75 Hz, the encoder frame rate) of
  each source, the mean of its per-channel magnitudes (the encoder sees the mono mixture);
* reconstruction **per source model**, as the reference ran one target per model: the model's mono
  magnitude with each mixture channel's phase is the target's initial estimate, the residual
  (mixture minus target) the second source, then one EM iteration of multichannel Wiener filtering
  on the two (open-unmix's ``wiener(targets, mix, niter=1, softmask=False, residual=True)``, eps
  1e-10, the mixture scaled so that max |X| <= 10), on consecutive blocks of 600 STFT frames (the
  reference's ``wiener_win_len``); the target is kept. :func:`wiener_target` computes it in torch on
  whatever device its inputs are on, for any leading batch dimensions (tested against
  ``norbert.expectation_maximization``, the library open-unmix's filtering was ported from); on the CPU its
  elementwise work runs as compiled loops with torch's exact arithmetic (:mod:`marble.separation.em_loops`);
* inverse STFT by overlap-add block by block (:class:`OverlapAdd`), equal to ``torch.istft``; a whole
  track streams through :func:`separate_target` block by block (mixture STFT, the model's
  magnitudes with its LSTM state carried over, EM, overlap-add), so memory is one block plus the
  output track; :func:`separate_targets` streams several models of a track on one mixture STFT.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

N_FFT = 2048
HOP = 320
SAMPLE_RATE = 24000
WIENER_FRAMES = 600  # the reference prober's wiener_win_len
WIENER_EPS = 1e-10  # open-unmix wiener()/expectation_maximization default eps
WIENER_SCALE = 10.0  # open-unmix: mixture scaled so max |X| <= 10 before EM
WIENER_ITERATIONS = 1  # the reference's wiener(niter=1)
WIENER_BINS = 64  # frequency bins per slice of the CPU's Wiener EM (WienerBlock: cache-sized, same numbers)
OLA_FRAMES = 64  # frames per inverse-FFT piece of the CPU's overlap-add (OverlapAdd.add: cache-sized, same numbers)


def settings() -> dict:
    """The STFT and Wiener settings a separation probe was trained and scored with (recorded in its shipped probe,
    so ``marble predict`` can refuse a probe this installation would reconstruct differently)."""
    return {"n_fft": N_FFT, "hop": HOP, "sample_rate": SAMPLE_RATE, "wiener_iterations": WIENER_ITERATIONS,
            "wiener_eps": WIENER_EPS, "wiener_frames": WIENER_FRAMES, "wiener_scale": WIENER_SCALE}


def stft(wav: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """Complex STFT ``[..., F, frames]`` of ``wav`` ``[..., T]`` (Hann window, centred)."""
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1])
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(flat, n_fft, hop_length=hop, window=window, center=True, return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def magnitude(wav: torch.Tensor) -> torch.Tensor:
    return stft(wav).abs()


def mono_magnitude(wav: torch.Tensor) -> torch.Tensor:
    """``[..., C, T]`` -> ``[..., F, frames]``: the mean over channels of the magnitude STFT."""
    return channel_mean(magnitude(wav))


def channel_mean(mag: torch.Tensor) -> torch.Tensor:
    """``[..., C, F, frames]`` -> ``[..., F, frames]``: the mean over channels (of stereo as ``(left + right) / 2``:
    the same numbers as ``mean``, whose reduction machinery is slower for two rows)."""
    if mag.shape[-3] == 2:
        return (mag[..., 0, :, :] + mag[..., 1, :, :]) / 2
    return mag.mean(-3)


def num_frames(num_samples: int, hop: int = HOP) -> int:
    return num_samples // hop + 1


def align_frames(x: torch.Tensor, frames: int, dim: int = -1, fill: str = "repeat") -> torch.Tensor:
    """Cut or extend ``x`` along ``dim`` to ``frames`` frames: extended by repeating the last frame
    (``fill="repeat"``), or with zeros (``fill="zero"``, what the reference does to encoder features
    shorter than the STFT: ``F.pad``)."""
    t = x.shape[dim]
    if t >= frames:
        return x.narrow(dim, 0, frames)
    shape = list(x.shape)
    shape[dim] = frames - t
    if fill == "zero":
        return torch.cat([x, x.new_zeros(shape)], dim=dim)
    last = x.narrow(dim, t - 1, 1)
    return torch.cat([x, last.expand(*shape)], dim=dim)


class WienerBlock:
    """The mixture side of the per-source Wiener EM on one block, computed once and shared by every source
    model of the block (:meth:`target`): the complex128 mixture, the cosine and sine of its phase (as
    ``torch.polar`` computes them), the scale ``max(1, max|X| / 10)`` and the scaled mixture.

    On the CPU each model's EM runs on slices of ``WIENER_BINS`` frequency bins (the EM never mixes bins:
    its sums run over a bin's frames), so its working set stays in the cache: about twice as fast as on the
    whole block, and, bit for bit, the whole-block computation on one thread (tests/test_separation.py); the
    protocol's one iteration then runs as two compiled loops per slice (:mod:`marble.separation.em_loops`, the
    same numbers again, ~3.5x less CPU), torch summing each bin's frames between them. Each
    operation on a slice is below torch's parallel grain, so the estimate is also the same whatever the
    thread count (a whole-block operation split across threads rounds its split points' elements
    differently)."""

    def __init__(self, mix: torch.Tensor):
        if mix.shape[-3] != 2:
            raise ValueError(f"Wiener EM here is for stereo mixtures, got {mix.shape[-3]} channels")
        # float64, as open-unmix advises: in float32 the 2x2 determinant of a block whose sources are spatially
        # rank one (a mono recording on both channels) cancels to 0 and the filter turns to NaN
        self.mix = mix.to(torch.complex128)
        # polar(1, phase) holds exactly the cos/sin torch.polar(mag, phase) multiplies mag by (libm's), so
        # mag * cos + i mag * sin is polar(mag, phase) bit for bit, without a cos and a sin per model
        unit = torch.polar(torch.ones_like(self.mix.real), torch.angle(self.mix))
        self.cos, self.sin = unit.real.clone(), unit.imag.clone()  # dense, in the mixture's layout
        self.scale = torch.clamp(self.mix.abs().amax(dim=(-3, -2, -1), keepdim=True) / WIENER_SCALE, min=1.0)
        # torch divides a complex tensor by a real one as (re, im) * (1 / d): so does _real_times, on the real and
        # imaginary parts side by side, several times faster than the complex kernel (tests/test_separation.py)
        self.inv_scale = 1.0 / self.scale
        self.x = _real_times(self.mix, self.inv_scale)

    def target(self, mag: torch.Tensor, iterations: int = WIENER_ITERATIONS, eps: float = WIENER_EPS,
               bins: int | None = None) -> torch.Tensor:
        """One source model's Wiener reconstruction of this block (open-unmix ``wiener(niter, residual=True)``
        with a single target, the target kept).

        ``mag``: the target's non-negative mono magnitude ``[..., F, n]`` (leading dimensions broadcast against
        the mixture's, e.g. several models of one track). Returns the target's complex STFT ``[..., 2, F, n]``
        (complex128). ``bins``: frequency bins per slice (default ``WIENER_BINS`` on the CPU, the whole block on
        other devices, where one operation per block is what is fast)."""
        mag = mag.unsqueeze(-3)  # [..., 1, F, n]
        shape = torch.broadcast_shapes(self.mix.shape, mag.shape)
        F = shape[-2]
        if bins is None:
            bins = WIENER_BINS if self.mix.device.type == "cpu" else F
        # frames-major like the STFT blocks: each frame's bins contiguous, as the compiled loops and the inverse
        # STFT (one FFT per frame) read them
        out = torch.empty(*shape[:-2], shape[-1], F, dtype=torch.complex128, device=self.mix.device).transpose(-1, -2)
        start = self._compiled_target(mag[..., 0, :, :], iterations, eps, bins, out)
        for a in range(start, F, bins):  # float64 only for the bins the torch path computes
            part = slice(a, min(F, a + bins))
            self._em(mag[..., part, :].to(torch.float64), part, iterations, eps, out[..., part, :])
        return out

    def _compiled_target(self, mag: torch.Tensor, iterations: int, eps: float, bins: int, out: torch.Tensor) -> int:
        """The protocol's one EM iteration by :mod:`marble.separation.em_loops` on the CPU, slice by slice of
        ``bins`` bins, for one model's magnitude ``[F, n]``; returns the first bin left to the torch path (the bins
        after the last whole slice; all of them when the loops do not apply). The loops equal torch's complex
        kernels on slices whose bins are contiguous (frames-major blocks, as the STFT gives them) and a multiple of
        8 (no scalar tail): other layouts, slices, leading dimensions and iteration counts take the torch path."""
        from marble.separation import em_loops

        def frames_major(t):
            return t.stride(-2) == 1 and t.transpose(-1, -2).is_contiguous()

        if not (self.mix.device.type == "cpu" and iterations == 1 and bins % 8 == 0 and bins >= 16 and mag.dim() == 2
                and self.mix.dim() == 3 and mag.dtype in (torch.float32, torch.float64)
                and all(frames_major(t) for t in (mag, self.mix, self.x, self.cos, self.sin))):
            return 0
        loops = em_loops.compiled()
        if loops is None:  # pragma: no cover - numba is a core dependency
            return 0
        stats_loop, target_loop = loops
        F, n = mag.shape
        mag_, cos, sin = (t.transpose(-1, -2).numpy() for t in (mag, self.cos, self.sin))  # [n, F], [2, n, F]
        mix, x = (torch.view_as_real(t.transpose(-1, -2)).numpy() for t in (self.mix, self.x))  # [2, n, F, 2]
        dest = torch.view_as_real(out.transpose(-1, -2)).numpy()
        s, scale = float(self.inv_scale), float(self.scale)
        stats = np.empty((10, n, bins))
        r = torch.empty(8, bins, dtype=torch.float64)
        end = F - F % bins
        for a in range(0, end, bins):
            part = slice(a, a + bins)
            stats_loop(mag_[:, part], cos[:, :, part], sin[:, :, part], mix[:, :, part], s, stats)
            # the sums over each bin's frames stay torch's: frames-major [f, n] views sum in the complex sums' order
            sums = torch.from_numpy(stats).transpose(-1, -2).sum(-1)  # [10, f]
            for j in (0, 1):  # the target's spatial covariance, then the residual's: (sum / (eps + sum v)), complex
                s00, s11, v, re01, im01 = sums[5 * j:5 * j + 5]
                w = (eps + v)[:, None].to(torch.complex128)
                zero = torch.zeros_like(s00)
                R = torch.complex(torch.stack([s00, s11, re01]), torch.stack([zero, zero, im01]))[..., None] / w
                r[4 * j:4 * j + 3] = R.real[..., 0]
                r[4 * j + 3] = R.imag[2, :, 0]
            target_loop(stats[2], stats[7], r.numpy(), x[:, :, part], math.sqrt(eps), scale, dest[:, :, part])
        return end

    def _em(self, mag: torch.Tensor, part: slice, iterations: int, eps: float, out: torch.Tensor) -> None:
        """The EM on the bins ``part`` (``mag`` ``[..., 1, f, n]`` float64 of those bins), written into ``out``
        (those bins of the estimate): initial estimate = ``mag`` with each channel's mixture phase, residual =
        mixture minus it, both scaled, then ``iterations`` EM passes (spatial covariance R of each source over
        the block's frames, weighted by ``eps`` + the summed power; mixture covariance ``sqrt(eps) I`` + sum of
        v R; target = v R Cxx^-1 x). The residual's own new estimate is not computed in the last pass: only the
        target is kept."""
        mix, x = self.mix[..., part, :], self.x[..., part, :]
        target = torch.complex(mag * self.cos[..., part, :], mag * self.sin[..., part, :])  # torch.polar(mag, phase)
        mix, x = mix.expand_as(target), x.expand_as(target)
        if iterations == 0:
            out.copy_(target)
            return
        ys = [_real_times(target, self.inv_scale), _real_times(mix - target, self.inv_scale)]  # target, residual
        sq = math.sqrt(eps)
        x0, x1 = x[..., 0, :, :], x[..., 1, :, :]
        for it in range(iterations):
            vs, Rs = [], []
            for y in ys:
                y0, y1 = y[..., 0, :, :], y[..., 1, :, :]
                v = (y0.real ** 2 + y0.imag ** 2 + y1.real ** 2 + y1.imag ** 2) / 2  # [..., f, n]
                w = (eps + v.sum(-1))[..., None].to(y.dtype)  # [..., f, 1]
                c0, c1 = y0.conj().resolve_conj(), y1.conj().resolve_conj()
                r00 = (y0 * c0).sum(-1, keepdim=True) / w
                r01 = (y0 * c1).sum(-1, keepdim=True) / w
                r10 = (y1 * c0).sum(-1, keepdim=True) / w
                r11 = (y1 * c1).sum(-1, keepdim=True) / w
                vs.append(v)
                Rs.append((r00, r01, r10, r11))
            i00, i01, i10, i11 = _mixture_inverse(vs, Rs, sq)
            last = it + 1 == iterations  # the last pass updates the target only, written unscaled into out
            new = []
            for v, (r00, r01, r10, r11) in list(zip(vs, Rs))[:1 if last else len(ys)]:
                v = v.to(torch.complex128)  # once: a real operand would be cast to complex by each product
                g00, g01 = v * (r00 * i00 + r01 * i10), v * (r00 * i01 + r01 * i11)
                g10, g11 = v * (r10 * i00 + r11 * i10), v * (r10 * i01 + r11 * i11)
                channels = g00 * x0 + g01 * x1, g10 * x0 + g11 * x1
                if last:
                    for c, y in enumerate(channels):
                        _real_times(y, self.scale[..., 0, :, :], out=out[..., c, :, :])
                else:
                    new.append(torch.stack(channels, dim=-3))
            ys = new


def _real_times(z: torch.Tensor, d: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``z * d`` for a complex ``z`` and a real ``d`` (broadcast against ``z``), element for element the complex
    kernel's ``(re d, im d)``, computed on the real and imaginary parts side by side (``out``: a complex tensor
    to write it into)."""
    re = torch.view_as_real(z)
    if out is None:
        return torch.view_as_complex(re * d[..., None])
    torch.mul(re, d[..., None], out=torch.view_as_real(out))
    return out


def _mixture_inverse(vs: list, Rs: list, sq: float) -> tuple:
    """The inverse of the mixture covariance ``Cxx = sqrt(eps) I + sum_j v_j R_j`` (2x2 per bin and frame) of the
    EM: ``i00, i01, i10, i11``. In exact arithmetic R's diagonal is real and ``r10 = conj(r01)``, so ``c00``, ``c11``
    and the determinant are real; SIMD complex arithmetic keeps that exactly (``y conj(y)`` has an imaginary part
    of exactly 0, ``y1 conj(y0)`` is ``conj(y0 conj(y1))``), and then the real arithmetic below gives, element for
    element, the complex operations' values at about half their cost (a product with a zero imaginary part is the
    real product; ``1 / (d + 0i)`` is ``1 / d``). Where that does not hold exactly (a vectorised loop's scalar
    tail, which may fuse a complex product's multiply-add: only a slice whose element count is not a multiple of
    8), the complex formula runs instead. ``vs``: the two sources' powers ``[..., f, n]`` (float64)."""
    (v0, v1), (R0, R1) = vs, Rs
    real = v0.shape[-2] * v0.shape[-1] % 8 == 0 and all(
        bool((r00.imag == 0).all() and (r11.imag == 0).all()) and torch.equal(r10, r01.conj()) for r00, r01, r10, r11 in Rs)
    if not real:
        c00 = sq + v0 * R0[0] + v1 * R1[0]
        c01 = v0 * R0[1] + v1 * R1[1]
        c10 = v0 * R0[2] + v1 * R1[2]
        c11 = sq + v0 * R0[3] + v1 * R1[3]
        inv_det = 1.0 / (c00 * c11 - c01 * c10)
        return c11 * inv_det, -c01 * inv_det, -c10 * inv_det, c00 * inv_det
    c00 = sq + v0 * R0[0].real + v1 * R1[0].real
    c11 = sq + v0 * R0[3].real + v1 * R1[3].real
    p = v0 * R0[1].real + v1 * R1[1].real  # c01 = p + iq, c10 = p - iq
    q = v0 * R0[1].imag + v1 * R1[1].imag
    inv_det = 1.0 / (c00 * c11 - (p * p + q * q))  # c01 c10 = p^2 + q^2 (+ 0i)
    P, Q = p * inv_det, q * inv_det
    return (c11 * inv_det).to(torch.complex128), torch.complex(-P, -Q), torch.complex(-P, Q), (c00 * inv_det).to(torch.complex128)


def wiener_target(mag: torch.Tensor, mix: torch.Tensor, iterations: int = WIENER_ITERATIONS, eps: float = WIENER_EPS) -> torch.Tensor:
    """One source model's Wiener reconstruction of one block (:meth:`WienerBlock.target`); ``mix``: the complex
    stereo mixture STFT ``[..., 2, F, n]``. Several models of one block share a :class:`WienerBlock` instead."""
    return WienerBlock(mix).target(mag, iterations, eps)


class OverlapAdd:
    """Inverse STFT (Hann, centred, as ``torch.istft``) fed block by block of frames, so a whole
    track never needs its full complex spectrogram: ``add(frames [..., F, n], first)`` for every frame of the
    track, then ``result()``."""

    def __init__(self, lead: tuple, length: int, n_fft: int = N_FFT, hop: int = HOP, device=None):
        self.n_fft, self.hop, self.length = n_fft, hop, int(length)
        total = (num_frames(length, hop) - 1) * hop + n_fft
        self.out = torch.zeros(*lead, total, dtype=torch.float32, device=device)
        self.window = torch.hann_window(n_fft, dtype=torch.float64, device=device)

    def add(self, spec: torch.Tensor, first: int) -> None:
        """Overlap-add the frames ``spec`` ``[..., F, n]`` whose first frame has index ``first``, ``OLA_FRAMES`` frames
        at a time: the same sums in the same order (each output sample adds its frames in frame order), on
        cache-sized pieces instead of a block's ~20 MB arrays, whose fresh pages cost more than the arithmetic."""
        spec = spec.to(torch.complex128).transpose(-1, -2)  # [..., n, F]: each frame's bins, one FFT per frame
        n = spec.shape[-2]
        step = OLA_FRAMES if self.out.device.type == "cpu" else n
        for a in range(0, n, step):
            frames = torch.fft.irfft(spec[..., a:a + step, :], n=self.n_fft, dim=-1)  # [..., m, n_fft]
            m = frames.shape[-2]
            windowed = (frames * self.window).float().reshape(*frames.shape[:-2], m * self.n_fft)
            index = _frame_indices(first + a, m, self.n_fft, self.hop, self.out.device)
            self.out.index_add_(self.out.dim() - 1, index, windowed)

    def result(self) -> torch.Tensor:
        half = self.n_fft // 2
        env = _window_envelope(self.length, self.n_fft, self.hop, str(self.out.device))[half:half + self.length]
        return self.out[..., half:half + self.length] / torch.where(env > 1e-11, env, torch.ones_like(env)).float()


def _frame_indices(first: int, n: int, n_fft: int, hop: int, device) -> torch.Tensor:
    """The output sample of each sample of frames ``first .. first + n - 1``, frame by frame."""
    return ((first + torch.arange(n, device=device))[:, None] * hop + torch.arange(n_fft, device=device)[None]).reshape(-1)


@functools.lru_cache(maxsize=2)
def _window_envelope(length: int, n_fft: int, hop: int, device: str) -> torch.Tensor:
    """The summed squared window of every frame of a ``length``-sample track (float64, frame by frame in order):
    the same for every source model of a track, so computed once for all (callers must not modify it)."""
    window = torch.hann_window(n_fft, dtype=torch.float64, device=device)
    n = num_frames(length, hop)
    env = torch.zeros((n - 1) * hop + n_fft, dtype=torch.float64, device=device)
    return env.index_add_(0, _frame_indices(0, n, n_fft, hop, device), (window ** 2).repeat(n))


def mixture_blocks(mix: torch.Tensor, block: int = WIENER_FRAMES):
    """``(first frame, complex STFT [C, F, n])`` of consecutive blocks of ``block`` frames of the
    mixture ``[C, T]``: the centred STFT of the whole track, computed block by block."""
    C, T = mix.shape
    half = N_FFT // 2
    xp = torch.nn.functional.pad(mix.float()[None], (half, half), mode="reflect")[0]  # as stft(center=True)
    window = torch.hann_window(N_FFT, dtype=torch.float32, device=mix.device)
    N = num_frames(T)
    for a in range(0, N, block):
        b = min(a + block, N)
        seg = xp[:, a * HOP:(b - 1) * HOP + N_FFT]
        yield a, torch.stft(seg, N_FFT, hop_length=HOP, window=window, center=False, return_complex=True)


def separate_targets(mix: torch.Tensor, mags: list, iterations: int = WIENER_ITERATIONS, block: int = WIENER_FRAMES,
                     workers=None) -> list[torch.Tensor]:
    """Several source models' estimates ``[C, T]`` of one track, streamed in blocks of ``block`` STFT
    frames: the mixture STFT of a block and the mixture side of its EM (:class:`WienerBlock`) are computed once and
    shared; each model's magnitude ``[F, n]`` of the block (``mags[k](first, mono_mix_mag [F, n])``), its Wiener EM
    on the target and its residual and its overlap-add run exactly as for that model alone, so every estimate is,
    bit for bit, :func:`separate_target`'s. ``workers`` (a :class:`marble.separation.workers.ModelWorkers`; default
    one) runs the models of a block side by side, every torch operation single-threaded, so the estimates are the
    same whatever the number of workers or threads. Memory: one block plus the outputs."""
    from marble.separation.workers import each, single_threaded_ops

    C, T = mix.shape
    olas = [OverlapAdd((C,), T, device=mix.device) for _ in mags]
    with single_threaded_ops():
        for a, X in mixture_blocks(mix, block):
            mono = channel_mean(X.abs())
            em = WienerBlock(X)

            def one(k: int) -> None:  # the block's models finish before the next block
                m = mags[k](a, mono).float().clamp_min(0).to(X.device)  # [F, n]
                olas[k].add(em.target(m, iterations), a)

            each(one, range(len(mags)), workers)
    return [ola.result() for ola in olas]


def separate_target(mix: torch.Tensor, mags, iterations: int = WIENER_ITERATIONS, block: int = WIENER_FRAMES) -> torch.Tensor:
    """One source model's estimate ``[C, T]`` from the stereo mixture ``[C, T]`` (:func:`separate_targets`
    for one model): ``mags`` is ``mags(first, mono_mix_mag [F, n]) -> [F, n]`` or the model's whole
    ``[F, frames]`` magnitude, sliced per block."""
    if torch.is_tensor(mags):
        full = align_frames(mags.float(), num_frames(mix.shape[-1]))
        return separate_targets(mix, [lambda a, mm: full[..., a:a + mm.shape[-1]]], iterations, block)[0]
    return separate_targets(mix, [mags], iterations, block)[0]
