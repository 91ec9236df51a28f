"""One identity per model: any spelling of a model -> its cache key and display name.

Every command (``extract``, ``probe``, ``run``, the Python API) finds a model's feature cache through
:func:`identify`, so ``models/x``, ``./models/x`` and ``/abs/models/x`` share one cache, as do
``enc.py:MyEncoder`` and ``./enc.py:MyEncoder``. Nothing is loaded: the key comes from the spelling
alone, so ``probe`` finds a cache without building (or downloading) the encoder.

==============  ===================================  ==========================================
kind            key (cache folder, before ``slug``)  default display name
==============  ===================================  ==========================================
builtin         ``handcrafted``                      ``handcrafted``
plugin-file     ``<stem>.<Class>-<hash of path>``    the encoder's ``name``, else ``<Class>``
entry-point     the entry point's name               the encoder's ``name``, else the same
local-dir       ``<folder>-<hash of path>``          the folder's name
                (a hub snapshot: its hub id)         (a hub snapshot: its hub id)
hub             ``owner/name``                       ``owner/name``
name            the string as given                  the string as given
==============  ===================================  ==========================================

The hash is of the resolved absolute path, so two checkpoints called ``checkpoint-100`` in different
runs never share a cache; the display name stays short (``checkpoint-100``) and never a temp path.
Kind ``name`` is a model that no loader recognises (e.g. a cache written through the API under an
encoder's own name): it is looked up as spelled.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelRef", "identify", "cache_key", "model_cache_dir", "display_name"]


@dataclass(frozen=True)
class ModelRef:
    """What a model spelling resolves to. ``target`` is what the loader opens (a resolved path or the spec)."""

    spec: str
    kind: str
    key: str
    name: str
    target: str


def _path_hash(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()[:8]


def hub_id_of_snapshot(directory: Path) -> str | None:
    """``.../models--org--name/snapshots/<sha>`` (the Hugging Face hub cache) -> ``org/name``."""
    d = Path(directory)
    repo = d.parent.parent.name
    if d.parent.name == "snapshots" and repo.startswith("models--"):
        org, _, name = repo[len("models--"):].partition("--")
        if org and name:
            return f"{org}/{name}"
    return None


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~")) and " " not in spec


def identify(spec: str | os.PathLike) -> ModelRef:
    """The identity of ``spec``, resolved in ``load_encoder``'s order: built-in name, ``file.py:Class``,
    entry point, local checkpoint directory, hub id; anything else is taken as a plain name."""
    from marble.encoders import BUILTINS, plugins

    spec = str(spec)
    if spec in BUILTINS:
        return ModelRef(spec, "builtin", spec, spec, spec)
    fs = plugins.parse_file_spec(spec)
    if fs is not None:
        path, cls = fs
        resolved = Path(path).expanduser().resolve()
        key = f"{resolved.stem}.{cls}-{_path_hash(resolved)}"
        return ModelRef(spec, "plugin-file", key, cls, f"{resolved}:{cls}")
    if spec in plugins.entry_points():
        return ModelRef(spec, "entry-point", spec, spec, spec)
    p = Path(spec).expanduser()
    if p.is_dir():
        resolved = p.resolve()
        hub = hub_id_of_snapshot(resolved)
        if hub is not None:
            return ModelRef(spec, "local-dir", hub, hub, str(resolved))
        return ModelRef(spec, "local-dir", f"{resolved.name}-{_path_hash(resolved)}", resolved.name, str(resolved))
    if looks_like_hub_id(spec):
        return ModelRef(spec, "hub", spec, spec, spec)
    return ModelRef(spec, "name", spec, spec, spec)


def cache_key(model) -> str:
    """The cache key of a spelling (``str``/path) or of a built encoder: the key ``load_encoder`` gave
    it, else its ``name`` (an encoder built by hand and passed to the API)."""
    if isinstance(model, (str, os.PathLike)):
        return identify(model).key
    return getattr(model, "cache_key", None) or model.name


def model_cache_dir(cache_root: str | os.PathLike, model, task_id: str) -> Path:
    """``<cache_root>/<slug(key)>/<task_id>``: where the features of ``model`` on a task live."""
    from marble.cache.store import cache_dir

    return cache_dir(cache_root, cache_key(model), task_id)


def display_name(model, manifest: dict | None = None) -> str:
    """The name a result carries when ``--name`` is not given: the encoder's own name as recorded in its
    cache manifest at extraction, else the default name of the spelling (never a temp path)."""
    recorded = ((manifest or {}).get("encoder") or {}).get("name")
    if recorded:
        return str(recorded)
    if isinstance(model, (str, os.PathLike)):
        return identify(model).name
    return str(model.name)
