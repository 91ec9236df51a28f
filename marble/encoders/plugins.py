"""User encoders: ``path/to/file.py:ClassName`` and the ``marble.encoders`` entry-point group.

A plug-in is a class (or factory) returning an :class:`~marble.encoders.base.Encoder`. It is built with
``device=...`` when its signature accepts it, else with no arguments and moved with ``.to(device)``.
An entry point is declared in the plug-in package's ``pyproject.toml``::

    [project.entry-points."marble.encoders"]
    my-model = "my_pkg.encoders:MyEncoder"
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from marble.encoders.base import Encoder
from marble.errors import MarbleError

ENTRY_POINT_GROUP = "marble.encoders"


class PluginError(MarbleError, RuntimeError):
    pass


def parse_file_spec(spec: str) -> tuple[Path, str] | None:
    """``"dir/my_enc.py:MyEncoder"`` -> (path, "MyEncoder"); None if ``spec`` is not of that form."""
    path, sep, cls = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not cls.isidentifier():
        return None
    return Path(path), cls


def load_file_class(path: Path, class_name: str) -> Callable[..., Any]:
    path = Path(path)
    if not path.is_file():
        raise PluginError(f"{path}: plug-in file not found (spec was '{path}:{class_name}')")
    resolved = path.resolve()
    mod_name = "marble_plugin_" + hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses / pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise PluginError(f"{path}: importing the plug-in failed ({type(e).__name__}: {e})") from e
    obj = getattr(module, class_name, None)
    if obj is None:
        names = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, torch.nn.Module)]
        raise PluginError(f"{path}: no attribute {class_name!r}; classes there: {names or 'none'}")
    return obj


def instantiate(factory: Callable[..., Any], device: str, origin: str, default_name: str | None = None) -> Encoder:
    """Call ``factory`` with ``device`` if it takes one, else with nothing; check the result. An encoder
    that declares no ``name`` gets ``default_name`` (the class or entry point name), never a path."""
    try:
        params = inspect.signature(factory).parameters
        takes_device = "device" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, takes_device = {}, False
    if inspect.isclass(factory) and "device" not in params and getattr(factory, "__init__", None) is torch.nn.Module.__init__:
        takes_device = False  # no __init__ of its own: nn.Module's (*args, **kwargs) accepts no device
    try:
        enc = factory(device=device) if takes_device else factory()
    except Exception as e:
        raise PluginError(f"{origin}: constructing the encoder failed ({type(e).__name__}: {e})") from e
    if not isinstance(enc, torch.nn.Module) or not callable(getattr(enc, "hidden_states", None)):
        raise PluginError(f"{origin}: returned {type(enc).__name__}, not an Encoder (subclass "
                          "marble.encoders.base.Encoder and implement hidden_states)")
    if not takes_device:
        enc = enc.to(device)
    if getattr(enc, "name", None) in (None, "", "encoder"):
        enc.name = default_name or origin
    return enc.eval()


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_entry_point(name: str, device: str) -> Encoder:
    ep = entry_points()[name]
    try:
        factory = ep.load()
    except Exception as e:
        raise PluginError(f"entry point {name!r} ({ep.value}): import failed ({type(e).__name__}: {e})") from e
    return instantiate(factory, device, f"entry point {name} ({ep.value})", default_name=name)
