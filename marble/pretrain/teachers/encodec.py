"""EnCodec acoustic teacher: the 8 residual-VQ codebooks (1024 codes each) of ``facebook/encodec_24khz`` at
6 kbps, 75 frames per second, through transformers' ``EncodecModel`` (no extra dependency).

MERT computed the codes offline from the raw audio; here they are computed on the fly from the *clean*
(un-mixed, un-normalised) crop, on the training device. The hub id needs network access the first time;
offline, pass a local directory holding ``config.json`` + weights (``hf download facebook/encodec_24khz``).

Frame alignment (:func:`align_frames`): EnCodec (hop 320, padded convolutions) gives ``ceil(T / 320)``
frames, the HuBERT conv stack ``floor((T - 400) / 320) + 1``, the centred CQT ``T // 320 + 1``; frame ``i``
of each covers the same ~13 ms around sample ``320 i`` (the HuBERT frame's receptive field is samples
``[320 i, 320 i + 400)``, so the offset is under one hop). As MERT's ``forward_targets`` does, frame ``i``
of every target is paired with HuBERT frame ``i`` and the trailing extra target frames (1 for EnCodec,
2 for the CQT on 5 s crops) are dropped: all sequences are trimmed to the shortest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from marble.pretrain import PretrainError

DEFAULT_TEACHER = "facebook/encodec_24khz"
BANDWIDTH = 6.0  # kbps -> 8 codebooks at 75 Hz for the 24 kHz model


class TeacherLoadError(PretrainError):
    pass


def align_frames(*seqs: torch.Tensor, dim: int = -1) -> list[torch.Tensor]:
    """Trim every tensor along ``dim`` to the shortest length (see the module docstring)."""
    n = min(s.shape[dim] for s in seqs)
    return [s.narrow(dim, 0, n) for s in seqs]


def _offline_hint(source: str) -> str:
    return (f"If {source!r} is a Hugging Face hub id: the hub is unreachable offline. Download it on a connected "
            f"machine (`hf download {DEFAULT_TEACHER} --local-dir encodec_24khz`) and pass the local directory: "
            "`--teacher /path/to/encodec_24khz` (a folder with config.json and model.safetensors).")


class EncodecTeacher:
    """``codes(wav [B, T])`` -> ``LongTensor [B, num_codebooks, frames]``."""

    def __init__(self, source: str | Path = DEFAULT_TEACHER, device: str | torch.device = "cpu",
                 bandwidth: float = BANDWIDTH):
        from transformers import EncodecModel

        source = str(source)
        p = Path(source).expanduser()
        looks_local = p.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
        if looks_local and not (p / "config.json").is_file():
            raise TeacherLoadError(
                f"{p}: no EnCodec checkpoint there (expected a folder with config.json and model.safetensors). "
                + _offline_hint(DEFAULT_TEACHER))
        try:
            model = EncodecModel.from_pretrained(str(p) if looks_local else source)
        except Exception as e:  # OSError / hub errors / bad files: all user-facing
            raise TeacherLoadError(f"{source}: cannot load the EnCodec teacher ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}). " + _offline_hint(source)) from None
        cfg = model.config
        if cfg.audio_channels != 1 or cfg.chunk_length_s is not None:
            raise TeacherLoadError(f"{source}: expected the mono, unchunked 24 kHz EnCodec (like {DEFAULT_TEACHER}); "
                                   f"got audio_channels={cfg.audio_channels}, chunk_length_s={cfg.chunk_length_s}")
        if bandwidth not in cfg.target_bandwidths:
            raise TeacherLoadError(f"{source}: bandwidth {bandwidth} not among {list(cfg.target_bandwidths)}")
        self.model = model.eval().to(device)
        self.model.requires_grad_(False)
        self.source = source
        self.bandwidth = float(bandwidth)
        self.sample_rate = int(cfg.sampling_rate)
        self.frame_rate = float(cfg.frame_rate)
        self.codebook_size = int(cfg.codebook_size)
        self.num_codebooks = int(model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth))

    def to(self, device) -> "EncodecTeacher":
        self.model.to(device)
        return self

    @torch.no_grad()
    def codes(self, wav: torch.Tensor) -> torch.Tensor:
        p = next(self.model.parameters())
        with torch.autocast(device_type=p.device.type, enabled=False):
            out = self.model.encode(wav.to(device=p.device, dtype=torch.float32)[:, None, :],
                                    bandwidth=self.bandwidth, return_dict=True)
        codes = out.audio_codes
        if codes.ndim == 4:  # [chunks, B, K, F]; one chunk for an unchunked model
            codes = codes[0]
        return codes.long()
