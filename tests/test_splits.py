"""The shipped split files reproduce the PROTOCOL counts, are checksummed, and agree with label_maps."""

import collections
import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

import marble.splits as splits
from marble.datasets.mtg import parse_split_tsv
from marble.datasets.splitfiles import read_table, read_text

SHARED = next((p / "shared" / "marble-splits" for p in Path(__file__).resolve().parents if (p / "shared" / "marble-splits").is_dir()), None)


def counts(df, col="split"):
    return dict(collections.Counter(df[col]))


def vocab(key):
    return splits._label_maps()[key]["labels"]


def test_gtzan_counts_and_corrupt_file_removed():
    df = read_table("gtzan.tsv")
    assert counts(df) == {"train": 442, "valid": 197, "test": 290}
    assert "jazz/jazz.00054.wav" not in set(df["path"])
    assert df["path"].is_unique
    assert sorted({p.split("/")[0] for p in df["path"]}) == sorted(vocab("GTZAN_genre"))


def test_mtt_counts_hex_rule_and_vocabulary():
    df = read_table("mtt.tsv")
    assert counts(df) == {"train": 18706, "valid": 1825, "test": 5329}
    rule = {h: ("train" if int(h, 16) < 12 else "valid" if h == "c" else "test") for h in "0123456789abcdef"}
    assert (df["mp3_path"].str[0].map(rule) == df["split"]).all()
    used = collections.Counter(t for tags in df["tags"] for t in tags.split("|") if t)
    assert set(used) == set(vocab("MTT_top50"))
    assert (df["tags"] == "").sum() == 4752  # clips without a top-50 tag stay (README: 4 752)


def test_gs_song_and_clip_counts():
    df = read_table("gs.tsv")
    assert counts(df) == {"train": 3687, "valid": 942, "test": 2406}
    songs = df.drop_duplicates("song_uid")
    assert counts(songs) == {"train": 923, "valid": 236, "test": 604}
    assert df.groupby("song_uid")["split"].nunique().max() == 1
    assert set(df["key"]) <= set(vocab("GS_key"))
    # consecutive non-overlapping 30 s clips
    assert ((df["clip_offset_s"].astype(float) - 30 * df["clip_idx"].astype(int)).abs() < 1e-9).all()


def test_emo_counts_and_zscores():
    df = read_table("emo.tsv")
    assert counts(df) == {"train": 504, "valid": 115, "test": 125}
    dev = df[df["split"] != "test"]
    for col in ("arousal_z", "valence_z"):  # z-scored over the 619 development clips, population std
        x = dev[col].astype(float)
        assert len(x) == 619 and abs(x.mean()) < 1e-9 and abs(x.std(ddof=0) - 1) < 1e-9


MTG_ROWS = {
    "genre": (32572, 11043, 11479),
    "instrument": (14395, 5466, 5115),
    "moodtheme": (9949, 3802, 4231),
    "top50tags": (32136, 10888, 11356),
}
MTG_VOCAB = {"genre": "MTG_genre", "instrument": "MTG_instrument", "moodtheme": "MTG_moodtheme", "top50tags": "MTG_top50tags"}


@pytest.mark.parametrize("task", sorted(MTG_ROWS))
def test_mtg_counts_and_first_appearance_vocabulary(task):
    order = []
    for split, n in zip(("train", "valid", "test"), MTG_ROWS[task]):
        text = read_text(f"mtg/autotagging_{task}-{split}.tsv")
        rows = parse_split_tsv(text)
        assert len(rows) == n
        for _, path, tags in rows:
            assert path.endswith(".mp3") and "\r" not in "".join(tags)
            order += [t for t in tags if t not in order]
    assert order == vocab(MTG_VOCAB[task])


@pytest.mark.parametrize("task", ["mtt", "mtg-genre", "mtg-instrument", "mtg-moodtheme", "mtg-top50"])
def test_no_label_is_absent_from_a_shipped_split(task):
    """The reference scored macro ROC-AUC/AP with torchmetrics, which scores a label with no positive (or no
    negative) in a split instead of leaving it out, as marble does: on the shipped splits no label of a multilabel
    task lacks positives or negatives in any split, so the two rules give the same macro averages (ledger row)."""
    import numpy as np

    from marble.registry import get_card

    card = get_card(task)
    vocab_ = card.vocabulary()
    for split in ("train", "valid", "test"):
        if task == "mtt":
            df = read_table("mtt.tsv")
            rows = [[t for t in tags.split("|") if t] for tags in df.loc[df["split"] == split, "tags"]]
        else:
            rows = [tags for _, _, tags in parse_split_tsv(read_text(card.splits.source.format(split=split)))]
        y = np.array([[t in set(r) for t in vocab_] for r in rows])
        positives = y.sum(0)
        assert positives.min() >= 1 and (len(rows) - positives).min() >= 1, (
            split, [vocab_[i] for i in np.flatnonzero((positives == 0) | (positives == len(rows)))])


def test_mtg_files_are_byte_copies_of_split0():
    if SHARED is None:
        pytest.skip("shared marble-splits not available")
    got = read_text("mtg/autotagging_moodtheme-valid.tsv")
    want = (SHARED / "MTG" / "autotagging_moodtheme-validation.tsv").read_bytes().decode()
    assert got == want.replace("\r\n", "\n")


def test_musdb_validation_names_equal_the_musdb_package():
    import importlib.util

    spec = importlib.util.find_spec("musdb")  # not imported: importing it demands ffmpeg (stempeg)
    if spec is None:
        pytest.skip("musdb package not installed")
    cfg = yaml.safe_load((Path(spec.origin).parent / "configs" / "mus.yaml").read_text())
    df = read_table("musdb.tsv")
    assert sorted(df["name"]) == sorted(cfg["validation_tracks"]) and len(df) == 14
    assert set(df["split"]) == {"valid"}


def test_vocalset_rule_files():
    t = read_table("vocalset-technique.tsv")
    by = {s: sorted(t.loc[t["split"] == s, "singer"]) for s in ("train", "valid", "test")}
    assert by["test"] == sorted(["f2", "f8", "m3", "m5", "m10"])
    assert len(by["train"]) == 9 and len(by["valid"]) == 6
    assert sorted(t["singer"]) == sorted(vocab("VocalSet_singer"))
    s = read_table("vocalset-singer.tsv")
    widths = {r["split"]: int(r["bucket_to"]) - int(r["bucket_from"]) for _, r in s.iterrows()}
    assert widths == {"train": 12, "valid": 8, "test": 5} and set(s["modulus"]) == {"25"}


def test_every_shipped_file_is_checksummed_and_verifies():
    shipped = sorted(
        str(p.relative_to(splits.DATA_DIR)) for p in splits.DATA_DIR.rglob("*") if p.is_file() and p.name != "SHA256SUMS"
    )
    sums = splits.checksums()
    assert sorted(sums) == shipped
    for name, digest in sums.items():
        assert hashlib.sha256((splits.DATA_DIR / name).read_bytes()).hexdigest() == digest
        assert splits.data_path(name).exists()


def test_corrupted_copy_is_detected(tmp_path, monkeypatch):
    copy = tmp_path / "data"
    shutil.copytree(splits.DATA_DIR, copy)
    with open(copy / "gtzan.tsv", "a") as f:
        f.write("blues/blues.00099.wav\ttrain\n")
    monkeypatch.setattr(splits, "DATA_DIR", copy)
    splits.checksums.cache_clear()
    try:
        assert splits.data_path("emo.tsv") == copy / "emo.tsv"
        with pytest.raises(splits.SplitFileError, match="gtzan.tsv does not match its checksum"):
            splits.data_path("gtzan.tsv")
        (copy / "emo.tsv").unlink()
        with pytest.raises(splits.SplitFileError, match="emo.tsv is missing"):
            splits.data_path("emo.tsv")
    finally:
        splits.checksums.cache_clear()


def test_derive_splits_rebuilds_the_shipped_bytes(tmp_path):
    if SHARED is None:
        pytest.skip("shared marble-splits not available")
    import importlib.util

    spec = importlib.util.spec_from_file_location("derive_splits", Path(__file__).parents[1] / "tools" / "derive_splits.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--shared", str(SHARED), "--out", str(tmp_path)])
    assert (tmp_path / "SHA256SUMS").read_text() == (splits.DATA_DIR / "SHA256SUMS").read_text()
