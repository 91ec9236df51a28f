"""MTG-Jamendo: a track missing from the ``audio-low`` download is read from the full-quality mp3 when that is
present; the fallback is recorded (item extra, cache manifest), never silent."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from extract_plugin import ToyEncoder  # noqa: E402

from marble.cache import store  # noqa: E402
from marble.cache.extract import extract  # noqa: E402
from marble.datasets import get_dataset  # noqa: E402
from marble.registry import get_card  # noqa: E402
from marble.testing.fixtures import write_mtg  # noqa: E402


def test_full_quality_fallback_is_recorded(tmp_path, capsys):
    wrote = write_mtg(tmp_path / "data", task="genre", per_split=3, seconds=1.5)
    root = tmp_path / "data" / "MTG"
    card = get_card("mtg-genre")
    low = sorted((root / "audio-low").rglob("*.low.mp3"))
    num = lambda tid: str(int(tid.split("_")[1]))  # noqa: E731  track_0000241 -> audio-low/41/241.low.mp3
    moved = next(p for p in low if p.name.split(".")[0] == num(wrote["train"][0]))  # full quality only
    full = root / "audio" / moved.parent.name / moved.name.replace(".low.mp3", ".mp3")
    full.parent.mkdir(parents=True)
    moved.rename(full)

    items = get_dataset(card, tmp_path / "data", allow_partial=True).items("train")
    variants = {it.uid: it.extra["audio_variant"] for it in items}
    assert variants[wrote["train"][0]] == "full-quality" and full in {it.path for it in items}
    assert sorted(variants.values()) == ["audio-low", "audio-low", "full-quality"]

    d = extract(card, ToyEncoder(), {"train": items}, tmp_path / "cache", device="cpu", progress=False)
    assert store.read_manifest(d)["splits"]["train"]["audio_variants"] == {"audio-low": 2, "full-quality": 1}
    assert "audio read from: audio-low 2, full-quality 1" in capsys.readouterr().err

    gtzan = extract(get_card("gtzan"), ToyEncoder(), {}, tmp_path / "cache2", splits=[], device="cpu", progress=False)
    assert "audio_variants" not in str(store.read_manifest(gtzan))  # loaders that report none record none
