"""Arrows run one way: the leaf helpers (atomic writes, JSON, hashing, slugs) live in ``marble.io``, a module that
imports nothing of marble but ``marble.errors``; no module outside ``marble/cache`` reaches into ``marble.cache`` for
one of them (or for any private name). The imports are read with ``ast``, so the test needs no import to run."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import marble

PKG = Path(marble.__file__).parent
#: the leaf helpers; each is defined in marble.io and nowhere else
LEAF = {"slug", "WriteError", "atomic_open", "atomic_write_bytes", "atomic_save_npy", "file_digests", "file_sha256",
        "write_json", "read_torch_state"}


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def cache_helper_imports(path: Path) -> list[str]:
    """``module:line name`` for every helper a module takes from ``marble.cache``: a leaf helper or a private name,
    imported by name or reached as an attribute of an imported ``marble.cache`` module."""
    module = _module(path)
    tree = ast.parse(path.read_text(), str(path))
    bad, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            src = _absolute(node, module, path.name == "__init__.py")
            if src == "marble" and any(a.name == "cache" for a in node.names):
                aliases.update(a.asname or a.name for a in node.names if a.name == "cache")
            if src != "marble.cache" and not src.startswith("marble.cache."):
                continue
            for a in node.names:
                if src == "marble.cache" and a.name in {"store", "extract", "duplicates", "checksums", "decode", "encode"}:
                    aliases.add(a.asname or a.name)  # a cache module: its attributes are checked below
                elif a.name in LEAF or a.name.startswith("_"):
                    bad.append(f"{module}:{node.lineno} {src}.{a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("marble.cache") and a.asname:
                    aliases.add(a.asname)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (node.attr in LEAF or node.attr.startswith("_")):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            dotted = ast.unparse(node.value)
            if (isinstance(root, ast.Name) and root.id in aliases) or dotted.startswith("marble.cache"):
                bad.append(f"{module}:{node.lineno} {dotted}.{node.attr}")
    return bad


def test_no_module_outside_cache_takes_a_helper_from_marble_cache():
    outside = [p for p in sorted(PKG.rglob("*.py")) if "cache" not in p.relative_to(PKG).parts[:1]]
    assert len(outside) > 50  # the scan sees the package
    bad = [b for p in outside for b in cache_helper_imports(p)]
    assert bad == [], "import these from marble.io (or make them public cache API):\n" + "\n".join(bad)


def test_the_scan_catches_each_form(tmp_path, monkeypatch):
    """The checker is not vacuous: each way of reaching a helper through marble.cache is reported."""
    fake = tmp_path / "marble"
    (fake / "results").mkdir(parents=True)
    (fake / "results" / "x.py").write_text(
        "from marble.cache.store import slug, read_manifest\n"
        "from marble.cache import store\n"
        "import marble.cache.store\n"
        "from ..cache.extract import _labels\n"
        "def f():\n    return store.write_json, marble.cache.store.file_sha256, store.read_manifest\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    got = cache_helper_imports(fake / "results" / "x.py")
    assert [g.split(" ", 1)[1] for g in got] == ["marble.cache.store.slug", "marble.cache.extract._labels",
                                                 "store.write_json", "marble.cache.store.file_sha256"]


def test_marble_io_is_a_leaf_holding_every_helper():
    import marble.io as mio

    assert LEAF <= set(vars(mio))
    tree = ast.parse((PKG / "io.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m and m.startswith("marble")} == {"marble.errors"}
    # defined once: no other module of marble defines a function or class of the same name
    twins = [f"{p.relative_to(PKG)}:{n.name}" for p in PKG.rglob("*.py") if p.name != "io.py" or p.parent != PKG
             for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, (ast.FunctionDef, ast.ClassDef))
             and n.name in LEAF]
    assert twins == []
