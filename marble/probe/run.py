"""The one entry point of probing: ``run_probe(card, model, ...)`` dispatches on the card's
prediction type — clip tasks to the batched sweep on cached clip features
(:func:`marble.probe.clip.run_clip`), frame tasks to :func:`marble.probe.sequence.run` — and both
write their result through ``marble.probe.report``."""

from __future__ import annotations

import os


def run_probe(card, model: str, *, cache_dir: str | os.PathLike = "cache", results_dir: str | os.PathLike = "results",
              track: str = "constrained", device: str = "cpu", seed: int = 1234, layers: tuple = (), lrs: tuple = (),
              max_epochs: int | None = None, name: str | None = None, data_dir=None, on_epoch=None,
              chunks_per_epoch: int | None = None, verify: bool = True, **clip_options) -> dict:
    """Probe ``model`` on ``card``; returns the result dict (also written under ``results_dir``).
    ``clip_options`` (seeds, seeds_sweep, config, checkpoint_every, fresh) apply to clip tasks;
    ``chunks_per_epoch`` to separation tasks (a reduced run, recorded); ``verify=False`` (``--no-verify``) skips
    re-hashing the cached features against the sha256 extraction recorded (recorded in the result)."""
    if card.is_clip_level:
        from marble.probe.clip import run_clip

        return run_clip(card, model, cache_root=cache_dir, results_dir=results_dir, track=track, device=device,
                        seed=seed, layers=tuple(layers), lrs=tuple(lrs), name=name, max_epochs=max_epochs,
                        on_epoch=on_epoch, verify=verify, **clip_options)
    import inspect

    from marble.probe.clip import run_clip

    # an option a frame task cannot honour is refused unless it is left at run_clip's own default
    defaults = {k: p.default for k, p in inspect.signature(run_clip).parameters.items()}
    unsupported = sorted(k for k, v in clip_options.items() if k not in defaults or v != defaults[k])
    if unsupported:
        raise ValueError(f"task {card.id!r} is a frame-level task: options {', '.join(unsupported)} apply to clip tasks only")
    from marble.probe.sequence import run

    return run(card, model, cache_dir=cache_dir, data_dir=data_dir, results_dir=results_dir, device=device,
               layers=list(layers) or None, lrs=list(lrs) or None, max_epochs=max_epochs, seed=seed, track=track,
               name=name, on_epoch=on_epoch, verify=verify,
               **({"chunks_per_epoch": int(chunks_per_epoch)} if chunks_per_epoch is not None else {}))
