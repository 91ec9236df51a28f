"""Extraction throughput (x realtime = audio seconds / wall seconds) on GTZAN-shaped synthetic audio
(30 s, 22.05 kHz, 16-bit wav) through a MERT-v1-shaped model with random weights (marble's own
``MERTEncoder`` on a ``HubertModel`` built from the pretraining preset of that size, PROTOCOL §7; no
download). Paths, same process, same model:

* ``reference``: what the reference scripts do - fp32, one file at a time, all hidden states
  copied to the host, time mean on the host;
* ``marble``: ``marble.cache.extract.extract`` - DataLoader workers decoding/resampling in
  parallel, equal-length batching, fp32 (``--tf32`` / ``--dtype bf16`` for the flagged speed options),
  time mean on the device, fp16 host copy, committed units.

    python bench/extract.py --device cpu --n-clips 4
    python bench/extract.py --device cuda --preset 330m --n-clips 64 --batch-size 16 --num-workers 8

The functions are what ``bench/suite.py`` measures with.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from marble.audio import load  # noqa: E402
from marble.cache.extract import extract  # noqa: E402
from marble.datasets.base import Item  # noqa: E402
from marble.devices import resolve_device  # noqa: E402
from marble.registry import get_card  # noqa: E402
from timing import measure  # noqa: E402

PRESETS = ("tiny", "95m", "330m")  # marble.pretrain.config presets: MERT-v1-95M / -330M shapes and a tiny one


def random_mert(preset: str = "95m", device="cpu", seed: int = 0):
    """marble's ``MERTEncoder`` around a ``HubertModel`` of the preset's shape with random weights, built on
    ``device`` (no checkpoint written: a 330M random init takes seconds on a GPU)."""
    from transformers import HubertModel

    from marble.encoders.mert import MERTEncoder, hubert_config_from_mert
    from marble.pretrain.config import get_preset
    from marble.pretrain.export import mert_config_dict

    p = get_preset(preset)
    cfg = mert_config_dict(p)
    config = hubert_config_from_mert(cfg)
    torch.manual_seed(seed)
    with torch.device(device):
        model = HubertModel(config)
    enc = MERTEncoder(model, name=f"bench/random-mert-{preset}", sample_rate=p.sample_rate, normalize=p.normalize,
                      config_dict=cfg)
    return enc.to(device).eval()


def make_clips(root: Path, n: int, seconds: float = 30.0, sr: int = 22050) -> list[Item]:
    """``n`` GTZAN-like 16-bit wav files (a tone and noise) and their items."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = root / f"clip{i:03d}.wav"
        sf.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")
        items.append(Item(uid=f"clip{i:03d}", path=path, label=i % 10))
    return items


def reference_run(enc, items: list[Item], device, seconds: float = 30.0) -> None:
    """The reference scripts' loop: one file at a time, fp32, every state of every frame to the host."""
    device = torch.device(device)
    for it in items:
        wav = enc.prepare(load(it.path, enc.sample_rate, duration=seconds))
        with torch.no_grad():
            hs = enc.model(torch.from_numpy(np.asarray(wav, np.float32))[None].to(device),
                           output_hidden_states=True).hidden_states
        host = [h.cpu().numpy() for h in hs]
        np.stack([h.mean(axis=1) for h in host])


def tf32_supported() -> bool:
    """Whether ``extract`` takes ``tf32`` (issue 19: TF32 off by default, ``--tf32`` to allow it)."""
    return "tf32" in inspect.signature(extract).parameters


def marble_run(enc, items: list[Item], cache_root: Path, device, *, batch_size: int = 8, num_workers: int = 2,
               dtype: str = "auto", tf32: bool = False, card=None, splits: int = 1) -> None:
    """``marble extract``'s code path on ``items`` (as a GTZAN train split, or dealt over train/valid/test with
    ``splits=3``), overwriting the cache."""
    extra = {"tf32": tf32} if tf32_supported() else {}
    if tf32 and not extra:
        raise RuntimeError("this marble has no tf32 option in extract (issue 19 not on main yet)")
    names = ("train", "valid", "test")[:splits]
    by_split = {name: items[i::splits] for i, name in enumerate(names)}
    extract(card or get_card("gtzan"), enc, by_split, cache_root, device=str(device), batch_size=batch_size,
            num_workers=num_workers, dtype=dtype, progress=False, overwrite=True, **extra)


def warm_up(enc, device, seconds: float = 5.0) -> None:
    """Allocator and kernels warmed outside the timings."""
    with torch.no_grad():
        enc.hidden_states(torch.zeros(1, int(enc.sample_rate * seconds), device=device))


def largest_batch(enc, device, seconds: float = 30.0, limit: int = 1024, dtype=None) -> dict:
    """The largest batch of ``seconds`` windows whose forward pass fits on a CUDA device (doubling, then
    bisecting between the last fit and the first out-of-memory, to within 1/8), and the peak memory of that batch."""
    device = torch.device(device)
    if device.type != "cuda":
        return {"batch": None, "note": "not measured: not a CUDA device"}
    n = int(enc.sample_rate * seconds)
    ctx = (lambda: torch.autocast("cuda", dtype=dtype)) if dtype is not None else torch.no_grad

    def fits(b: int) -> float | None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            with torch.inference_mode(), ctx():
                enc.hidden_states(torch.zeros(b, n, device=device)).float().mean(2)
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) / 2**20
        except torch.OutOfMemoryError:
            return None
        finally:
            torch.cuda.empty_cache()

    lo, lo_mb, hi = 0, None, None
    b = 1
    while b <= limit:
        mb = fits(b)
        if mb is None:
            hi = b
            break
        lo, lo_mb, b = b, mb, b * 2
    while hi is not None and hi - lo > max(1, lo // 8):  # to within 1/8: each try is a full forward pass
        mid = (lo + hi) // 2
        mb = fits(mid)
        if mb is None:
            hi = mid
        else:
            lo, lo_mb = mid, mb
    return {"batch": lo, "peak_gpu_mb": None if lo_mb is None else round(lo_mb, 1), "window_seconds": seconds,
            "capped_at": limit if hi is None else None}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", default="95m", choices=PRESETS)
    ap.add_argument("--n-clips", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--tf32", action="store_true", help="TF32 matmuls (a flagged speed option)")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    enc = random_mert(args.preset, device)
    with tempfile.TemporaryDirectory() as tmp:
        items = make_clips(Path(tmp) / "clips", args.n_clips)
        audio_s = 30.0 * len(items)
        warm_up(enc, device)
        rows = []
        if not args.skip_reference:
            with measure(device) as m:
                reference_run(enc, items, device)
            rows.append(("reference (fp32, 1 file, host pooling)", m))
        with measure(device) as m:
            marble_run(enc, items, Path(tmp) / "cache", device, batch_size=args.batch_size,
                       num_workers=args.num_workers, dtype=args.dtype, tf32=args.tf32)
        rows.append((f"marble extract (batch {args.batch_size}, {args.num_workers} workers, dtype {args.dtype}"
                     f"{', tf32' if args.tf32 else ''})", m))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"MERT-v1-{args.preset} shape (random weights), {len(items)} x 30 s clips, device {name}")
    for label, m in rows:
        print(f"  {label:<60s} {m.wall_s:8.2f} s wall {m.cpu_s:8.2f} s CPU {audio_s / m.wall_s:8.1f}x realtime")


if __name__ == "__main__":
    main()
