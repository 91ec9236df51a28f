"""Encoders: resolve a spec string to an :class:`~marble.encoders.base.Encoder`.

``load_encoder(spec)`` tries, in order:

1. a built-in name (``handcrafted``);
2. ``path/to/file.py:ClassName`` (a user class, see :mod:`marble.encoders.plugins`);
3. an entry point of the ``marble.encoders`` group;
4. a local checkpoint directory with ``config.json`` (MERT or HuBERT / wav2vec 2.0 / data2vec-audio);
5. a Hugging Face hub id (``m-a-p/MERT-v1-95M``), downloaded with ``huggingface_hub.snapshot_download``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marble.encoders.base import Encoder
from marble.encoders.hf import HF_KNOWN, EncoderLoadError, load_hf_dir, read_json
from marble.encoders.identity import ModelRef, cache_key, identify, looks_like_hub_id, model_cache_dir
from marble.encoders.mert import MERT_KNOWN, is_mert_config, load_mert_dir

__all__ = ["Encoder", "EncoderLoadError", "load_encoder", "list_encoders", "BUILTINS", "KNOWN_HUB_IDS", "ModelRef",
           "identify", "cache_key", "model_cache_dir"]


def _handcrafted(device: str = "cpu") -> Encoder:
    from marble.encoders.handcrafted import HandcraftedEncoder

    return HandcraftedEncoder(device=device)


#: built-in name -> (factory(device), description)
BUILTINS = {
    "handcrafted": (_handcrafted, "log-mel 64 + chroma 12 + MFCC 20 at 24 kHz / 75 Hz, no weights"),
}

#: hub ids marble knows the protocol facts of (sample rate, input normalisation)
KNOWN_HUB_IDS: dict[str, dict[str, Any]] = {**MERT_KNOWN, **HF_KNOWN}

# the files a snapshot needs: configs, then one weights file (safetensors preferred)
_CONFIG_PATTERNS = ["config.json", "preprocessor_config.json"]


def load_dir(directory: str | Path, *, name: str | None = None, known_id: str | None = None,
             revision: str | None = None, device: str = "cpu") -> Encoder:
    """A checkpoint directory: dispatch on ``config.json``'s ``model_type``."""
    directory = Path(directory)
    cfg = read_json(directory / "config.json")
    if is_mert_config(cfg) or known_id in MERT_KNOWN:
        return load_mert_dir(directory, name=name, known_id=known_id, revision=revision, device=device)
    return load_hf_dir(directory, name=name, known_id=known_id, revision=revision, device=device)


def download_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """Config files plus one weights file of ``repo_id`` into the hub cache; a clear error when offline."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as e:  # pragma: no cover - transformers depends on huggingface_hub
        raise EncoderLoadError(f"{repo_id}: huggingface_hub is not installed ({e})") from None
    try:
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_CONFIG_PATTERNS))
        for weights in ("model.safetensors", "pytorch_model.bin"):
            path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_CONFIG_PATTERNS + [weights]))
            if (path / weights).is_file():
                break
        return path
    except RepositoryNotFoundError:
        raise EncoderLoadError(f"{repo_id}: no such model on the Hugging Face hub (or it is private: "
                               "log in with `hf auth login`)") from None
    except LocalEntryNotFoundError as e:
        raise EncoderLoadError(
            f"{repo_id}: the Hugging Face hub is unreachable and the model is not in the local cache ({e}). "
            f"Download it on a connected machine (`hf download {repo_id}`) and pass the directory instead: "
            f"`marble ... --model /path/to/{repo_id.split('/')[-1]}` (a folder with config.json and "
            "model.safetensors or pytorch_model.bin), or set HF_HOME to a cache that holds it.") from None
    except Exception as e:  # network errors surface under several types depending on the version
        raise EncoderLoadError(
            f"{repo_id}: could not fetch from the Hugging Face hub ({type(e).__name__}: {e}). If the hub is "
            f"unreachable, pass a local directory with config.json and model.safetensors instead.") from None


def load_encoder(spec: str, device: str = "cpu", revision: str | None = None) -> Encoder:
    """Resolve ``spec`` (see the module docstring) and return the encoder in eval mode on ``device``.

    The encoder's ``cache_key`` and default ``name`` come from :func:`marble.encoders.identity.identify`,
    so every spelling of one model finds one cache; an encoder that declares its own ``name`` keeps it."""
    ref = identify(spec)
    enc = _load(ref, device, revision)
    enc.cache_key = ref.key
    return enc


def _load(ref: ModelRef, device: str, revision: str | None) -> Encoder:
    from marble.encoders import plugins

    if ref.kind == "builtin":
        return BUILTINS[ref.spec][0](device=device).eval()
    if ref.kind == "plugin-file":
        factory = plugins.load_file_class(*plugins.parse_file_spec(ref.spec))
        return plugins.instantiate(factory, device, ref.spec, default_name=ref.name)
    if ref.kind == "entry-point":
        return plugins.load_entry_point(ref.spec, device)
    if ref.kind == "local-dir":
        p = Path(ref.target)
        if not (p / "config.json").is_file():
            raise EncoderLoadError(f"{ref.spec}: directory has no config.json (expected a Hugging Face-style checkpoint "
                                   "folder: config.json + model.safetensors or pytorch_model.bin)")
        known = ref.name if ref.name in KNOWN_HUB_IDS else None
        return load_dir(p, name=ref.name, known_id=known, revision=revision, device=device).eval()
    if ref.kind == "hub":
        path = download_snapshot(ref.spec, revision)
        return load_dir(path, name=ref.spec, known_id=ref.spec, revision=revision, device=device).eval()
    eps = plugins.entry_points()
    tried = [f"built-in names ({', '.join(BUILTINS)})", "path/to/file.py:ClassName",
             f"entry points of group '{plugins.ENTRY_POINT_GROUP}' ({', '.join(eps) or 'none installed'})",
             "a local directory with config.json (none at that path)", "a Hugging Face hub id (owner/name)"]
    raise EncoderLoadError(f"unknown encoder {ref.spec!r}; tried: " + "; ".join(tried))


def list_encoders() -> list[dict[str, str]]:
    """What ``load_encoder`` can resolve by name: built-ins, known hub ids, installed entry points."""
    from marble.encoders import plugins

    rows = [{"name": n, "kind": "built-in", "description": d} for n, (_, d) in BUILTINS.items()]
    for hid, facts in KNOWN_HUB_IDS.items():
        norm = "on" if facts["normalize"] else "off"
        rows.append({"name": hid, "kind": "hub",
                     "description": f"{facts['sample_rate'] // 1000} kHz, input normalisation {norm}"})
    for name, ep in plugins.entry_points().items():
        rows.append({"name": name, "kind": "entry point", "description": ep.value})
    return rows
