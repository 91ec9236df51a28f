"""Shipped documents that must track the binding spec: docs/PROTOCOL.md is the third edition, verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the shared spec sits beside the main checkout (../shared) or beside the worktrees' folder (../../shared)
SPECS = [d / "shared" / "spec" / "PROTOCOL.md" for d in (REPO.parent, REPO.parent.parent)]


def test_shipped_protocol_is_the_binding_copy():
    spec = next((p for p in SPECS if p.exists()), None)
    if spec is None:
        pytest.skip("no shared/spec beside the repo")
    shipped = (REPO / "docs" / "PROTOCOL.md").read_text(encoding="utf-8").splitlines(keepends=True)
    if shipped and shipped[0].startswith("<!--"):
        shipped = shipped[1:]  # one leading comment saying where the copy comes from is allowed
    assert "".join(shipped) == spec.read_text(encoding="utf-8")


def test_shipped_protocol_is_the_third_edition():
    text = (REPO / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    assert "## 8. Second edition: what changed and why" in text
    assert "## 9. Third edition: what changed and why" in text
    assert "Batch size 64 **files**" in text
    assert "**TF32 matmuls off**" in text
