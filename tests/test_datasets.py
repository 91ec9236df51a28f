"""Each dataset: a fixture in the official format is found through the shipped splits with the
right split sizes, labels and vocabularies; missing data gives a clear error."""

import json

import numpy as np
import pytest

from marble.datasets import DataNotFoundError, get_dataset
from marble.datasets.splitfiles import read_table
from marble.registry import get_card, load_card
from marble.testing import fixtures as F

SPLITS = ("train", "valid", "test")


def ds(task, root, partial=True):
    return get_dataset(get_card(task), root, allow_partial=partial)


def test_gtzan(tmp_path):
    wrote = F.write_gtzan(tmp_path, per_split=3)
    d = ds("gtzan", tmp_path)
    vocab = d.vocabulary
    for split in SPLITS:
        items = d.items(split)
        assert sorted(i.uid for i in items) == sorted(wrote[split])
        assert all(vocab[i.label] == i.uid.split("/")[0] for i in items)
    rep = d.check()
    assert [(s.expected, s.found) for s in rep.splits] == [(442, 3), (197, 3), (290, 3)] and not rep.complete


def test_gtzan_accepts_the_genres_folder(tmp_path):
    F.write_gtzan(tmp_path, per_split=1)
    (tmp_path / "GTZAN" / "genres_original").rename(tmp_path / "GTZAN" / "genres")
    assert len(ds("gtzan", tmp_path).items("valid")) == 1


def test_missing_data_error_names_path_counts_and_source(tmp_path):
    F.write_gtzan(tmp_path, per_split=2)
    d = ds("gtzan", tmp_path, partial=False)
    with pytest.raises(DataNotFoundError) as e:
        d.items("train")
    msg = str(e.value)
    assert str(tmp_path / "GTZAN") in msg and "found 2 of 442 files" in msg and "440 missing" in msg
    assert "marsyas.info" in msg and "genres_original" in msg and "--allow-partial" in msg
    with pytest.raises(DataNotFoundError, match="none of the 290 files found"):
        ds("gtzan", tmp_path / "nothing").items("test")  # partial allowed, but nothing there


def test_gtzan_beat_reads_jams_beats(tmp_path):
    wrote = F.write_gtzan_beat(tmp_path, per_split=1, seconds=2.0)
    import jams

    for split in SPLITS:
        (item,) = ds("gtzan-beat", tmp_path).items(split)
        jam = jams.load(str(tmp_path / "GTZAN" / "jams" / (item.uid.split("/")[1] + ".jams")))
        (beat_ann,) = [a for a in jam.annotations if a.sandbox.annotation_type == "beat"]  # not the downbeats
        want = [o.time for o in beat_ann.data]
        assert item.uid == wrote[split][0] and item.label is None
        np.testing.assert_allclose(item.extra["beats"], want)
        assert len(want) >= 3
    # audio without its annotation is not an item
    (tmp_path / "GTZAN" / "jams" / (wrote["test"][0].split("/")[1] + ".jams")).unlink()
    rep = ds("gtzan-beat", tmp_path).check()
    assert rep.splits[2].found == 0 and any(m.endswith(".wav.jams") for m in rep.splits[2].missing)


def test_mtt_labels_and_annotation_check(tmp_path):
    wrote = F.write_mtt(tmp_path, per_split=2)
    d = ds("mtt", tmp_path)
    table = read_table("mtt.tsv").set_index("clip_id")
    for split in SPLITS:
        items = d.items(split)
        assert sorted(i.uid for i in items) == sorted(wrote[split])
        for i in items:
            assert sorted(d.vocabulary[k] for k in i.label) == sorted(table.loc[i.uid, "tags"].split("|"))
            assert i.path.suffix == ".mp3" and i.path.parent.parent.name == "mp3"
    # a CSV that disagrees with the shipped labels is an error naming the clip
    csv = tmp_path / "MTT" / "annotations_final.csv"
    lines = csv.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[1] = '"0"' if cells[1] == '"1"' else '"1"'
    csv.write_text("\n".join([lines[0], "\t".join(cells)] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=f"clip {cells[0].strip(chr(34))} has top-50 tags"):
        for split in SPLITS:
            d.items(split)


def test_giantsteps_clips_groups_and_keys(tmp_path):
    wrote = F.write_gs(tmp_path, per_split=2)
    d = ds("gs", tmp_path)
    table = read_table("gs.tsv")
    for split in SPLITS:
        items = d.items(split)
        want = table[table["song_uid"].isin(wrote[split])]
        assert sorted(i.uid for i in items) == sorted(want["clip_uid"])
        assert {i.group for i in items} == set(wrote[split])
        for i in items:
            row = want[want["clip_uid"] == i.uid].iloc[0]
            assert d.vocabulary[i.label] == row["key"] and i.duration == 30.0 and i.offset == float(row["clip_offset_s"])
            folder = "giantsteps-key-dataset" if split == "test" else "giantsteps-mtg-key-dataset"
            assert i.path == tmp_path / "GS" / folder / "audio" / f"{int(i.group)}.LOFI.mp3"
    rep = d.check()
    assert [s.expected for s in rep.splits] == [923, 236, 604] and [s.found for s in rep.splits] == [2, 2, 2]


def test_emomusic_targets(tmp_path):
    wrote = F.write_emo(tmp_path, per_split=2)
    d = ds("emo", tmp_path)
    assert d.vocabulary == ["arousal", "valence"]
    table = read_table("emo.tsv").set_index("uid")
    for split in SPLITS:
        items = d.items(split)
        assert sorted(i.uid for i in items) == sorted(wrote[split])
        for i in items:
            assert i.label == [float(table.loc[i.uid, "arousal_z"]), float(table.loc[i.uid, "valence_z"])]
            assert i.path.name == f"{int(i.uid)}.mp3"


@pytest.mark.parametrize("task", ["nsynth-instrument", "nsynth-pitch"])
def test_nsynth(tmp_path, task):
    wrote = F.write_nsynth(tmp_path, per_split=3)
    d = ds(task, tmp_path)
    for split in SPLITS:
        ex = json.loads((tmp_path / "NSynth" / f"nsynth-{split}" / "examples.json").read_text())
        items = d.items(split)
        assert sorted(i.uid for i in items) == wrote[split]
        for i in items:
            if task == "nsynth-pitch":
                assert i.label == ex[i.uid]["pitch"] and len(d.vocabulary) == 128
            else:
                assert d.vocabulary[i.label] == ex[i.uid]["instrument_family_str"] and len(d.vocabulary) == 11
    assert [s.expected for s in d.check().splits] == [289205, 12678, 4096]
    with pytest.raises(DataNotFoundError, match="examples.json not found"):
        ds(task, tmp_path / "none").items("valid")


def test_vocalset_technique_split_trim_and_chunks(tmp_path):
    F.write_vocalset(tmp_path, techniques=("belt", "vibrato", "fast_forte"), seconds=7.0, silence=0.5)
    d = ds("vocalset-technique", tmp_path, partial=False)
    table = read_table("vocalset-technique.tsv").set_index("singer")["split"]
    seen = {}
    for split in SPLITS:
        items = d.items(split)
        for i in items:
            singer, _, technique = i.group.split("/")[:3]
            assert table[singer] == split and d.vocabulary[i.label] == technique != "fast_forte"
            seen.setdefault(split, set()).add(singer)
        # 6.5 s of voice after 0.5 s of near-silence -> 2 chunks of 132000/44100 s, tail dropped
        first = [i for i in items if i.uid.endswith("#00")]
        assert len(items) == 2 * len(first) and all(abs(i.offset - 0.5) < 0.01 for i in first)
        assert all(i.duration == pytest.approx(132000 / 44100) for i in items)
    assert {k: len(v) for k, v in seen.items()} == {"train": 9, "valid": 6, "test": 5}
    assert d.check().complete


def test_vocalset_singer_hash_split(tmp_path):
    F.write_vocalset(tmp_path, techniques=("belt", "fast_forte", "pp", "slow_piano"), seconds=3.6, silence=0.2)
    d = ds("vocalset-singer", tmp_path)
    from marble.datasets.vocalset import recording_bucket

    groups = {}
    for split in SPLITS:
        for i in d.items(split):
            b = recording_bucket(i.group, 25)
            assert {"train": b < 12, "valid": 12 <= b < 20, "test": b >= 20}[split]
            assert d.vocabulary[i.label] == i.group.split("/")[0]
            groups.setdefault(i.group, set()).add(split)
    assert len(groups) == 80 and all(len(s) == 1 for s in groups.values())  # all 17 techniques count


@pytest.mark.parametrize("task", ["genre", "instrument", "moodtheme", "top50tags"])
def test_mtg(tmp_path, task):
    from marble.datasets.mtg import parse_split_tsv
    from marble.datasets.splitfiles import read_text

    wrote = F.write_mtg(tmp_path, task=task, per_split=2)
    card = {"top50tags": "mtg-top50"}.get(task, f"mtg-{task}")
    d = ds(card, tmp_path)
    for split in SPLITS:
        tags = {t: g for t, _, g in parse_split_tsv(read_text(f"mtg/autotagging_{task}-{split}.tsv"))}
        items = d.items(split)
        assert sorted(i.uid for i in items) == sorted(wrote[split])
        for i in items:
            assert sorted(d.vocabulary[k] for k in i.label) == sorted(tags[i.uid]) and i.path.name.endswith(".low.mp3")


def test_musdb_wav_layout(tmp_path):
    names = F.write_musdb(tmp_path, per_split=2)
    d = ds("musdb", tmp_path)
    for split in SPLITS:
        items = d.items(split)
        assert sorted(i.uid for i in items) == sorted(names[split])
        for i in items:
            assert i.path.name == "mixture.wav" and set(i.extra["sources"]) == {"vocals", "drums", "bass", "other"}
    assert [(s.expected, s.found) for s in d.check().splits] == [(86, 2), (14, 2), (50, 2)]
    # a validation track is never a training track
    assert not {i.uid for i in d.items("train")} & set(read_table("musdb.tsv")["name"])
    (tmp_path / "MUSDB18" / "test" / names["test"][0] / "bass.wav").unlink()
    assert d.check().splits[2].found == 1


@pytest.mark.parametrize("prediction", ["multiclass", "multilabel", "regression"])
def test_folder_dataset(tmp_path, prediction):
    card = load_card(F.write_folder_dataset(tmp_path, prediction, per_split=4))
    d = get_dataset(card, tmp_path)
    rows = (tmp_path / "mydata" / "metadata.csv").read_text().splitlines()[1:]
    for split in SPLITS:
        items = d.items(split)
        mine = [r for r in rows if r.endswith("," + split)]
        assert len(items) == len(mine) == 4
        for i, r in zip(items, mine):
            label = r.split(",")[1].strip('"')
            if prediction == "multiclass":
                assert d.vocabulary[i.label] == label
            elif prediction == "multilabel":
                assert [d.vocabulary[k] for k in i.label] == sorted(label.split(";"), key=d.vocabulary.index)
            else:
                assert i.label == [float(x) for x in label.split(";")]
    assert d.check().complete


def test_folder_regression_columns_and_bad_rows(tmp_path):
    card = load_card(F.write_folder_dataset(tmp_path, "regression", per_split=1))
    meta = tmp_path / "mydata" / "metadata.csv"
    meta.write_text("path,arousal,valence,split\naudio/train_000.wav,0.5,-1,train\naudio/valid_000.wav,1,2,validation\naudio/test_000.wav,3,4,test\n")
    d = get_dataset(card, tmp_path)
    assert [i.label for i in d.items("train")] == [[0.5, -1.0]] and len(d.items("valid")) == 1
    meta.write_text("path,label,split\naudio/train_000.wav,1;x,train\n")
    with pytest.raises(ValueError, match=r"metadata.csv: row 2: regression targets"):
        get_dataset(card, tmp_path).items("train")
    meta.unlink()
    with pytest.raises(DataNotFoundError, match="metadata.csv not found"):
        get_dataset(card, tmp_path).items("train")
