"""Checks a command makes before any work, so that a typo or a missing piece fails in the first second, not
after minutes of data checks or training: the model spelling (:func:`check_model`, with "did you mean"), and
where a cache will go when the user named no folder (:func:`cache_notice`). What a task needs installed is
:mod:`marble.needs`."""

from __future__ import annotations

import os
import re
from pathlib import Path

from marble import settings
from marble.errors import MarbleError


class UnknownModelError(MarbleError, ValueError):
    """A model spelling no loader recognises (and no cache is named after)."""


def cached_spellings(cache_root: str | os.PathLike | None) -> dict[str, str]:
    """The model folders under ``cache_root`` as spellings to suggest (``m-a-p__X`` -> ``m-a-p/X``); folders of a
    checkpoint path (``name-<hash>``) and plug-in files are not spellings and are left out."""
    if cache_root is None or not Path(cache_root).is_dir():
        return {}
    out = {}
    for p in Path(cache_root).iterdir():
        if p.is_dir() and not re.search(r"-[0-9a-f]{8}$", p.name) and "--" not in p.name:
            spelling = p.name.replace("__", "/")
            out[spelling] = spelling
            out[spelling.split("/")[-1]] = spelling
    return out


def _known_spellings(cache_root) -> dict[str, str]:
    from marble.encoders import BUILTINS, KNOWN_HUB_IDS, plugins

    aliases: dict[str, str] = {**cached_spellings(cache_root)}
    for hub_id in KNOWN_HUB_IDS:
        aliases[hub_id] = hub_id
        aliases[hub_id.split("/")[-1]] = hub_id
    for name in [*BUILTINS, *plugins.entry_points()]:
        aliases[name] = name
    return aliases


def check_model(spec: str, cache_root: str | os.PathLike | None = None):
    """The identity of ``spec`` (:func:`marble.encoders.identity.identify`), or an :class:`UnknownModelError` with
    a "did you mean" when it names nothing: a plain name that is neither a built-in, an entry point nor a cache
    under ``cache_root`` (``handcraftd``, ``MERT-v1-95m``), a hub id that differs from a known one only in case
    (``m-a-p/MERT-v1-95m``: another cache, and a download that fails), or a ``file.py:Class`` whose file is
    missing. Nothing is loaded or downloaded."""
    from marble.io import slug
    from marble.encoders import BUILTINS, KNOWN_HUB_IDS, plugins
    from marble.encoders.identity import identify
    from marble.suggest import did_you_mean

    spec = str(spec)
    ref = identify(spec)
    cached = cache_root is not None and (Path(cache_root) / slug(ref.key)).is_dir()
    if cached:
        return ref
    if ref.kind == "plugin-file":
        path, cls = plugins.parse_file_spec(spec)
        if not Path(path).expanduser().is_file():
            raise UnknownModelError(f"{path}: plug-in file not found (model {spec!r}); give the path of the .py file "
                                    "that defines the encoder class, as path/to/file.py:ClassName")
        return ref
    if ref.kind == "name":
        where = f", and no cache under {cache_root} is named so" if cache_root is not None else ""
        raise UnknownModelError(
            f"unknown model {spec!r}: not a built-in name ({', '.join(BUILTINS)}), path/to/file.py:ClassName, "
            f"installed entry point, checkpoint folder (with config.json) or hub id (owner/name){where}."
            f"{did_you_mean(spec, _known_spellings(cache_root))} See `marble models list`.")
    if ref.kind == "hub" and spec not in KNOWN_HUB_IDS:
        slips = [k for k in [*KNOWN_HUB_IDS, *cached_spellings(cache_root).values()] if k.lower() == spec.lower()]
        if slips:
            raise UnknownModelError(f"unknown model {spec!r}: hub ids are case-sensitive (another spelling is another "
                                    f"model and another cache).{did_you_mean(spec, slips)}")
    return ref


def cache_notice(cache_dir_option, model) -> str | None:
    """The line to print before extracting when the user named no cache folder (no ``--cache-dir``, no
    ``$MARBLE_CACHE_DIR``) and ``./cache`` does not exist yet: where the features will go, and where caches of
    this model were found (the folders above this one, the ones beside it and the home folder), so that running
    from another folder does not silently extract everything again. None when there is nothing to say."""
    from marble.io import slug
    from marble.encoders.identity import cache_key

    if cache_dir_option is not None or os.environ.get(settings.CACHE_ENV):
        return None
    root = settings.cache_dir(None)
    if root.exists():
        return None
    here = Path.cwd().resolve()
    key = slug(cache_key(model))
    places = [*here.parents, *_children(here), Path.home(), *_children(Path.home())]
    found = list(dict.fromkeys(str(p / "cache" / key) for p in places
                               if (p / "cache" / key).is_dir() and p != here))
    msg = (f"no ./cache here and neither --cache-dir nor ${settings.CACHE_ENV} is set: the features will be written "
           f"to {root.resolve()}")
    if found:
        msg += (f"; caches of this model already exist in {', '.join(found)} (pass --cache-dir "
                f"{Path(found[0]).parent} to use it)")
    return msg


def _children(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


__all__ = ["UnknownModelError", "check_model", "cache_notice", "cached_spellings"]
