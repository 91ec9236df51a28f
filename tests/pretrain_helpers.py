"""Fixtures for the pretraining tests: a tiny random EnCodec saved in the Hugging Face layout (loaded through
the same ``EncodecModel.from_pretrained`` path as ``facebook/encodec_24khz``) and synthetic training audio
written as real audio files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def make_tiny_encodec(directory: Path, seed: int = 0) -> Path:
    """A random 24 kHz EnCodec with the real frame rate (hop 320 -> 75 Hz), 1024-code codebooks and
    bandwidths, tiny widths. Codebooks are random (transformers initialises them to zero)."""
    from transformers import EncodecConfig, EncodecModel

    directory = Path(directory)
    if (directory / "config.json").is_file():
        return directory
    torch.manual_seed(seed)
    cfg = EncodecConfig(sampling_rate=24000, audio_channels=1, num_filters=4, hidden_size=8, num_residual_layers=1,
                        upsampling_ratios=[8, 5, 4, 2], codebook_size=1024, num_lstm_layers=1,
                        target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0], normalize=False, chunk_length_s=None)
    model = EncodecModel(cfg).eval()
    # transformers initialises the codebooks to zero; fill each residual codebook with residual vectors of
    # random noise and tones (EnCodec's own k-means-style init), so that different sounds get different codes
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(24000 * 2) / 24000
    tones = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t * (1 + t)) for f in (55.0, 220.0, 880.0)])
    x = torch.cat([tones, 0.2 * torch.randn(3, len(t), generator=g)])[:, None]
    with torch.no_grad():
        residual = model.encoder(x).permute(0, 2, 1).reshape(-1, cfg.hidden_size)
        for layer in model.quantizer.layers:
            pick = torch.randint(0, residual.shape[0], (cfg.codebook_size,), generator=g)
            jitter = 0.01 * residual.std() * torch.randn(cfg.codebook_size, cfg.hidden_size, generator=g)
            layer.codebook.embed.copy_(residual[pick] + jitter)
            residual = residual - layer.decode(layer.encode(residual.T[None]))[0].T
    model.save_pretrained(str(directory))
    return directory


def write_audio(directory: Path, n: int = 4, seconds: float = 2.0, sr: int = 16000, seed: int = 0,
                ext: str = "wav") -> list[Path]:
    """``n`` clips of harmonic tones with a pitch glide and noise bursts (something learnable), at ``sr``
    (resampled to 24 kHz by the loader)."""
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    out = []
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        glide = f0 * (1 + 0.5 * t / seconds)
        phase = 2 * np.pi * np.cumsum(glide) / sr
        x = sum(np.sin(h * phase) / h for h in (1, 2, 3))
        env = (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0).astype(float) * 0.5 + 0.5
        x = 0.3 * x * env + 0.02 * rng.standard_normal(len(t))
        p = directory / f"sub{i % 2}" / f"clip{i}.{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), x.astype(np.float32), sr)
        out.append(p)
    return out


def ddp_worker(rank: int, world: int, port: int, cfg_json: str, record_dir: str, stop_rank: int, stop_at: int) -> None:
    """One rank of the data-parallel pretraining tests (torch.multiprocessing.spawn target): trains the
    ``TrainConfig`` in ``cfg_json`` under a gloo group, recording which rank wrote which file, whether the model
    was wrapped in ``DistributedDataParallel`` and how many ``no_sync`` blocks ran into ``record_dir/rank{r}.json``. ``stop_rank`` sends itself SIGINT after step ``stop_at`` (a Ctrl-C of one rank)."""
    import json
    import os
    import signal

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool (it would hang)
    import marble.pretrain.trainer as trainer_mod

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    writes: list[str] = []
    orig_save, orig_write = trainer_mod.save_checkpoint, trainer_mod.write_json

    def save(path, **kw):
        writes.append(Path(path).name)
        return orig_save(path, **kw)

    def write(path, obj):
        writes.append(Path(path).name)
        return orig_write(path, obj)

    trainer_mod.save_checkpoint, trainer_mod.write_json = save, write
    # record that training runs inside torch's DistributedDataParallel and how often no_sync is entered
    ddp_cls = torch.nn.parallel.DistributedDataParallel
    orig_no_sync, orig_wrap = ddp_cls.no_sync, trainer_mod.wrap_ddp
    calls = {"no_sync": 0, "ddp": 0}

    def no_sync(self):
        calls["no_sync"] += 1
        return orig_no_sync(self)

    def wrap(model, device):
        net = orig_wrap(model, device)
        calls["ddp"] += isinstance(net, ddp_cls)
        return net

    ddp_cls.no_sync, trainer_mod.wrap_ddp = no_sync, wrap

    def on_step(step, metrics):
        if rank == stop_rank and step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    result = {"rank": rank, "interrupted": False}
    try:
        summary = trainer_mod.train(trainer_mod.TrainConfig(**json.loads(cfg_json)), progress=False, on_step=on_step)
        result.update(step=summary["step"], resumed_from=summary["resumed_from"], loss=summary["metrics"].get("loss"))
    except KeyboardInterrupt:
        result["interrupted"] = True
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    result["writes"] = writes
    result.update(calls)
    (Path(record_dir) / f"rank{rank}.json").write_text(json.dumps(result))
