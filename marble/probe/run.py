"""The one entry point of probing: ``run_probe(card, model, ...)`` dispatches on the card's
prediction type — clip tasks to the batched sweep on cached clip features
(:func:`marble.probe.clip.run_clip`), frame tasks to :func:`marble.probe.sequence.run` — and both
write their result through ``marble.probe.report``."""

from __future__ import annotations

import os


def run_probe(card, model: str, *, cache_dir: str | os.PathLike = "cache", results_dir: str | os.PathLike = "results",
              track: str = "constrained", device: str = "cpu", seed: int = 1234, layers: tuple = (), lrs: tuple = (),
              max_epochs: int | None = None, name: str | None = None, data_dir=None, on_epoch=None,
              chunks_per_epoch: int | None = None, seeds: int = 1, seeds_sweep: bool = False, config=None,
              checkpoint_every: int = 5, fresh: bool = False, verify: bool = True) -> dict:
    """Probe ``model`` on ``card``; returns the result dict (also written under ``results_dir``). Every task takes
    the track, ``seeds``/``seeds_sweep``, ``config`` (semi-constrained), ``checkpoint_every`` and ``fresh`` (a
    saved sweep state is resumed unless ``fresh``); ``chunks_per_epoch`` applies to separation tasks (a reduced
    run, recorded); ``verify=False`` (``--no-verify``) skips re-hashing the cached features against the sha256
    extraction recorded (recorded in the result)."""
    common = dict(track=track, device=device, seed=seed, max_epochs=max_epochs, name=name, on_epoch=on_epoch,
                  seeds=seeds, seeds_sweep=seeds_sweep, config=config, checkpoint_every=checkpoint_every, fresh=fresh,
                  verify=verify)
    if card.is_clip_level:
        from marble.probe.clip import run_clip

        return run_clip(card, model, cache_root=cache_dir, results_dir=results_dir, layers=tuple(layers),
                        lrs=tuple(lrs), **common)
    from marble.probe.sequence import run

    return run(card, model, cache_dir=cache_dir, data_dir=data_dir, results_dir=results_dir,
               layers=list(layers) or None, lrs=list(lrs) or None, **common,
               **({"chunks_per_epoch": int(chunks_per_epoch)} if chunks_per_epoch is not None else {}))
