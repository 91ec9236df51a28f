"""Source separation pieces (MUSDB18, PROTOCOL §4): STFT targets, multichannel Wiener EM
reconstruction with a residual source, and a bounded-memory inverse STFT.

* targets: the magnitude STFT (n_fft 2048, hop 320 at 24 kHz -> 75 Hz, the encoder frame rate) of
  each source, the mean of its per-channel magnitudes (the encoder sees the mono mixture);
* reconstruction: each per-source model predicts a mono magnitude; for each mixture channel the
  estimate is that magnitude with the channel's phase, plus a residual source (mixture minus their
  sum), then one EM iteration of multichannel Wiener filtering — open-unmix's
  ``wiener(iterations=1, residual=True)`` — computed by ``norbert.expectation_maximization``, the
  library open-unmix's filtering was ported from (open-unmix's own package needs torchaudio, which
  this toolkit keeps optional). As open-unmix's ``Separator`` does (``wiener_win_len=300``), the EM
  runs on consecutive blocks of 300 frames, so memory stays bounded on long tracks;
* inverse STFT by overlap-add block by block (:class:`OverlapAdd`), equal to ``torch.istft``; a whole
  track streams through :func:`separate_track` block by block (mixture STFT, heads with their LSTM
  state carried over, EM, overlap-add), so memory is one block plus the output track.
"""

from __future__ import annotations

import numpy as np
import torch

N_FFT = 2048
HOP = 320
SAMPLE_RATE = 24000
WIENER_FRAMES = 300  # open-unmix Separator's wiener_win_len
WIENER_SCALE = 10.0  # open-unmix / norbert: mixture scaled so max |X| <= 10 before EM


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
    return magnitude(wav).mean(-3)


def num_frames(num_samples: int, hop: int = HOP) -> int:
    return num_samples // hop + 1


def align_frames(x: torch.Tensor, frames: int, dim: int = -1) -> torch.Tensor:
    """Cut or extend (repeating the last frame) ``x`` along ``dim`` to ``frames`` frames."""
    t = x.shape[dim]
    if t >= frames:
        return x.narrow(dim, 0, frames)
    last = x.narrow(dim, t - 1, 1)
    shape = list(x.shape)
    shape[dim] = frames - t
    return torch.cat([x, last.expand(*shape)], dim=dim)


def wiener_em(mags: np.ndarray, mix: np.ndarray, iterations: int = 1, residual: bool = True) -> np.ndarray:
    """open-unmix's ``wiener(targets, mix, iterations, softmask=False, residual)`` for one block.

    ``mags``: ``[frames, F, C, K]`` non-negative source magnitudes; ``mix``: complex ``[frames, F, C]``.
    Returns complex ``[frames, F, C, K (+1 residual)]``: initial estimates with the mixture phase,
    the residual ``mix - sum``, scaled as open-unmix does, one EM pass (``norbert``)."""
    phase = np.exp(1j * np.angle(mix))[..., None]
    y = (mags * phase).astype(mix.dtype)
    if residual:
        y = np.concatenate([y, (mix - y.sum(-1))[..., None]], axis=-1)
    if iterations == 0:
        return y
    max_abs = max(1.0, float(np.abs(mix).max()) / WIENER_SCALE)
    x = mix / max_abs
    y = expectation_maximization(y / max_abs, x, iterations)
    return y * max_abs


def expectation_maximization(y: np.ndarray, x: np.ndarray, iterations: int = 1) -> np.ndarray:
    """``norbert.expectation_maximization(y, x, iterations)[0]``, built from norbert's own steps
    (covariance, mixture model, inverse, Wiener gain, filter) on all frames of the block at once
    instead of norbert's Python loops over frames: the same arithmetic up to float summation order
    (tested against norbert), much faster on a CPU."""
    import norbert

    eps = np.finfo(np.real(x[0]).dtype).eps
    nb_frames, nb_bins, nb_channels = x.shape
    K = y.shape[-1]
    y = y.copy()
    R = np.zeros((nb_bins, nb_channels, nb_channels, K), x.dtype)
    v = np.zeros((nb_frames, nb_bins, K))
    reg = np.sqrt(eps) * np.tile(np.eye(nb_channels, dtype=np.complex64), (1, nb_bins, 1, 1))
    for _ in range(iterations):
        for j in range(K):  # norbert.get_local_gaussian_model, summed over frames at once
            v[..., j] = np.mean(np.abs(y[..., j]) ** 2, axis=2)
            R[..., j] = norbert._covariance(y[..., j]).sum(0) / (eps + v[..., j].sum(0))[..., None, None]
        Cxx = norbert.get_mix_model(v, R) + reg
        inv = norbert._invert(Cxx, eps)
        for j in range(K):
            y[..., j] = norbert.apply_filter(x, norbert.wiener_gain(v[..., j], R[..., j], inv))
    return y


class OverlapAdd:
    """Inverse STFT (Hann, centred, as ``torch.istft``) fed block by block of frames, so a whole
    track never needs its full complex spectrogram: ``add(frames [..., F, n], first)`` then
    ``result(length)``."""

    def __init__(self, lead: tuple, length: int, n_fft: int = N_FFT, hop: int = HOP):
        self.n_fft, self.hop, self.length = n_fft, hop, int(length)
        total = (num_frames(length, hop) - 1) * hop + n_fft
        self.out = torch.zeros(*lead, total, dtype=torch.float32)
        self.env = torch.zeros(total, dtype=torch.float64)
        self.window = torch.hann_window(n_fft, dtype=torch.float64)

    def add(self, spec: torch.Tensor, first: int) -> None:
        """Overlap-add the frames ``spec`` ``[..., F, n]`` whose first frame has index ``first``."""
        frames = torch.fft.irfft(spec.to(torch.complex128), n=self.n_fft, dim=-2) * self.window[:, None]  # [..., n_fft, n]
        n = frames.shape[-1]
        idx = ((first + torch.arange(n))[:, None] * self.hop + torch.arange(self.n_fft)[None]).reshape(-1)
        lead = frames.shape[:-2]
        flat = frames.transpose(-1, -2).reshape(*lead, n * self.n_fft)
        self.out.index_add_(self.out.dim() - 1, idx, flat.float())
        self.env.index_add_(0, idx, (self.window ** 2).repeat(n))

    def result(self) -> torch.Tensor:
        half = self.n_fft // 2
        env = self.env[half:half + self.length]
        return self.out[..., half:half + self.length] / torch.where(env > 1e-11, env, torch.ones_like(env)).float()


def separate_track(mix: torch.Tensor, mags, iterations: int = 1, block: int = WIENER_FRAMES) -> torch.Tensor:
    """Source waveforms ``[K, C, T]`` from the stereo mixture ``[C, T]``, streamed in blocks of
    ``block`` STFT frames: the mixture STFT of the block, the source magnitudes ``[K, F, n]`` of the
    block (``mags(first, mono_mix_mag [F, n])``, or a ``[K, F, frames]`` tensor sliced), Wiener EM
    with a residual source, overlap-add. Memory: one block plus the output, whatever the length."""
    C, T = mix.shape
    half = N_FFT // 2
    xp = torch.nn.functional.pad(mix.float()[None], (half, half), mode="reflect")[0]  # as stft(center=True)
    window = torch.hann_window(N_FFT, dtype=torch.float32)
    N = num_frames(T)
    if torch.is_tensor(mags):
        full = align_frames(mags.float(), N)
        mags_of = lambda a, mm: full[..., a:a + mm.shape[-1]]  # noqa: E731
    else:
        mags_of = mags
    ola = None
    for a in range(0, N, block):
        b = min(a + block, N)
        seg = xp[:, a * HOP:(b - 1) * HOP + N_FFT]
        X = torch.stft(seg, N_FFT, hop_length=HOP, window=window, center=False, return_complex=True)  # [C, F, n]
        m = mags_of(a, X.abs().mean(0)).float().clamp_min(0).cpu()  # [K, F, n]
        K = m.shape[0]
        if ola is None:
            ola = OverlapAdd((K, C), T)
        x = X.permute(2, 1, 0).numpy()  # [n, F, C]
        v = m.permute(2, 1, 0)[:, :, None, :].expand(-1, -1, C, -1).numpy()  # [n, F, C, K]
        y = wiener_em(v, x, iterations)[..., :K]  # [n, F, C, K]
        ola.add(torch.from_numpy(np.ascontiguousarray(y.transpose(3, 2, 1, 0))), a)  # [K, C, F, n]
    return ola.result()
