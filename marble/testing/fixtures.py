"""Writers of tiny datasets in the official on-disk formats, for tests and the demo.

Each ``write_*(data_dir, ...)`` writes below ``data_dir/<subdir of the task card>`` and returns
``{split: [uid, ...]}`` of what it wrote. Ids come from the shipped split files (real GTZAN paths,
MTT clip ids, GS songs, EMO ids, MTG tracks, MUSDB validation names) so the loaders find them
through the shipped splits; datasets without shipped lists (NSynth notes, VocalSet files, MUSDB
train/test names) get names in the official naming scheme. A fixture is partial: load it with
``allow_partial=True``.

Audio is short and low-rate but real format (wav via soundfile; mp3 via libsndfile >= 1.1's MPEG
encoder, where the real dataset ships mp3), and its content depends on the label (tone pitch per
class, summed tones per tag, pitch/loudness per regression target) so a probe can learn it.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from marble.datasets.splitfiles import read_table, read_text

SR = 8000


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def tone(freqs, seconds: float, sr: int = SR, key: str = "", amp: float = 0.3, noise: float = 0.01) -> np.ndarray:
    """Sum of sines at ``freqs`` (Hz) plus a little seeded noise, float32 mono."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = np.zeros_like(t)
    for f in np.atleast_1d(freqs):
        x += np.sin(2 * np.pi * float(f) * t)
    x = amp * x / max(1, len(np.atleast_1d(freqs)))
    x += noise * _rng(key).standard_normal(len(t))
    return x.astype(np.float32)


def _freq(index: int) -> float:
    """A distinct pitch per class index (semitones above 110 Hz, wrapping after 4 octaves)."""
    return 110.0 * 2 ** ((index % 48) / 12)


def _write(path: Path, x: np.ndarray, sr: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "MP3" if path.suffix.lower() == ".mp3" else None
    sf.write(str(path), x.T if x.ndim == 2 else x, sr, format=fmt)


def _pick(rows: list[tuple[str, str]], n: int) -> list[str]:
    """``n`` uids preferring distinct labels (rows: (uid, label key))."""
    out, seen = [], set()
    for uid, lab in rows:
        if lab not in seen and len(out) < n:
            out.append(uid)
            seen.add(lab)
    for uid, _ in rows:
        if len(out) >= n:
            break
        if uid not in out:
            out.append(uid)
    return out


def _vocab(key: str) -> list[str]:
    from marble.splits import _label_maps

    return list(_label_maps()[key]["labels"])


# ------------------------------------------------------------------------------------------
def write_gtzan(data_dir, per_split: int | dict = 2, seconds: float = 2.0, subdir: str = "GTZAN") -> dict:
    """``genres_original/<genre>/<genre>.NNNNN.wav``, a tone at a genre-dependent pitch. ``per_split``: files
    per split, or ``{split: files}``."""
    df, vocab = read_table("gtzan.tsv"), _vocab("GTZAN_genre")
    out = {}
    for split in ("train", "valid", "test"):
        rows = [(p, p.split("/")[0]) for p in df.loc[df["split"] == split, "path"]]
        out[split] = _pick(rows, per_split[split] if isinstance(per_split, dict) else per_split)
        for rel in out[split]:
            g = vocab.index(rel.split("/")[0])
            _write(Path(data_dir) / subdir / "genres_original" / rel, tone(_freq(3 * g), seconds, key=rel), SR)
    return out


def write_gtzan_beat(data_dir, per_split: int | dict = 2, seconds: float = 3.0, subdir: str = "GTZAN") -> dict:
    """GTZAN audio with clicks on the beats + GTZAN-Rhythm ``jams/<name>.wav.jams`` (namespace beat)."""
    import jams

    out = write_gtzan(data_dir, per_split, seconds, subdir)
    root = Path(data_dir) / subdir
    for split, rels in out.items():
        for i, rel in enumerate(rels):
            period = 0.4 + 0.1 * (i % 3)
            beats = np.arange(0.2, seconds - 0.05, period)
            x = 0.05 * _rng(rel).standard_normal(int(seconds * SR))
            for b in beats:
                s = int(b * SR)
                x[s : s + 80] += np.hanning(80) * 0.8
            _write(root / "genres_original" / rel, x.astype(np.float32))
            jam = jams.JAMS()
            jam.file_metadata.duration = seconds
            # GTZAN-Rhythm keeps downbeats in the same namespace, told apart by sandbox.annotation_type;
            # the downbeat annotation comes first here so a loader taking the first one is caught.
            down = jams.Annotation(namespace="beat", time=0, duration=seconds, sandbox={"annotation_type": "downbeat"})
            ann = jams.Annotation(namespace="beat", time=0, duration=seconds, sandbox={"annotation_type": "beat"})
            for k, b in enumerate(beats):
                ann.append(time=float(b), duration=0.0, value=k % 4 + 1, confidence=1.0)
                if k % 4 == 0:
                    down.append(time=float(b), duration=0.0, value=1, confidence=1.0)
            jam.annotations.extend([down, ann])
            path = root / "jams" / f"{Path(rel).name}.jams"
            path.parent.mkdir(parents=True, exist_ok=True)
            jam.save(str(path))
    return out


def write_mtt(data_dir, per_split: int = 2, seconds: float = 2.0, subdir: str = "MTT") -> dict:
    """``mp3/<hex>/<name>.mp3`` (summed tones, one per top-50 tag) + tab-separated
    ``annotations_final.csv`` (clip_id, the top-50 tag columns, mp3_path; the real file has 188)."""
    df, vocab = read_table("mtt.tsv"), _vocab("MTT_top50")
    root = Path(data_dir) / subdir
    out, rows = {}, []
    for split in ("train", "valid", "test"):
        sub = df[(df["split"] == split) & (df["tags"] != "")]
        out[split] = _pick(list(zip(sub["clip_id"], sub["tags"])), per_split)
        for cid in out[split]:
            r = sub[sub["clip_id"] == cid].iloc[0]
            tags = r["tags"].split("|")
            _write(root / "mp3" / r["mp3_path"], tone([_freq(vocab.index(t)) for t in tags], seconds, key=cid))
            rows.append([cid] + ["1" if t in tags else "0" for t in vocab] + [r["mp3_path"]])
    header = ["clip_id"] + vocab + ["mp3_path"]
    lines = ["\t".join(f'"{c}"' for c in line) for line in [header] + rows]
    (root / "annotations_final.csv").write_text("\n".join(lines) + "\n")
    return out


def write_gs(data_dir, per_split: int = 2, subdir: str = "GS") -> dict:
    """GiantSteps songs with the fewest 30 s clips: ``giantsteps-key-dataset/audio/<id>.LOFI.mp3``
    (test) and ``giantsteps-mtg-key-dataset/audio/<id>.LOFI.mp3`` (train/valid); a tonic tone."""
    df, vocab = read_table("gs.tsv"), _vocab("GS_key")
    root = Path(data_dir) / subdir
    out = {}
    for split in ("train", "valid", "test"):
        sub = df[df["split"] == split]
        n = sub.groupby("song_uid").size().sort_values(kind="stable")
        key = sub.groupby("song_uid")["key"].first()
        songs = _pick([(s, key[s]) for s in n.index[: 4 * per_split]], per_split)  # the shortest songs
        out[split] = songs
        folder = "giantsteps-key-dataset" if split == "test" else "giantsteps-mtg-key-dataset"
        for s in songs:
            k = vocab.index(key[s])
            x = tone([_freq(k % 12 + 12), _freq(k % 12 + 16 - (k >= 12))], 30.0 * n[s] + 0.5, key=s)
            _write(root / folder / "audio" / f"{int(s)}.LOFI.mp3", x)
    return out


def write_emo(data_dir, per_split: int = 2, seconds: float = 2.0, subdir: str = "EMO") -> dict:
    """``clips_45seconds/<id>.mp3``: pitch follows arousal, loudness follows valence."""
    df = read_table("emo.tsv")
    out = {}
    for split in ("train", "valid", "test"):
        sub = df[df["split"] == split].head(per_split)
        out[split] = sub["uid"].tolist()
        for _, r in sub.iterrows():
            a, v = float(r["arousal_z"]), float(r["valence_z"])
            x = tone(220 * 2 ** (a / 2), seconds, key=r["uid"], amp=0.3 * 2 ** (v / 3))
            _write(Path(data_dir) / subdir / "clips_45seconds" / f"{int(r['uid'])}.mp3", x)
    return out


def write_nsynth(data_dir, per_split: int = 3, seconds: float = 1.0, subdir: str = "NSynth") -> dict:
    """``nsynth-<split>/examples.json`` + ``audio/<note_str>.wav`` (16 kHz like NSynth; 1 s, not 4)."""
    fams = _vocab("NSynth_instrument")
    sources = ["acoustic", "electronic", "synthetic"]
    out = {}
    for k, split in enumerate(("train", "valid", "test")):
        d = Path(data_dir) / subdir / f"nsynth-{split}"
        examples = {}
        for i in range(per_split):
            fam, src = (i * 4 + k) % len(fams), (i + k) % 3
            pitch, vel = 40 + 7 * i + k, 75
            note = f"{fams[fam]}_{sources[src]}_{i:03d}-{pitch:03d}-{vel:03d}"
            examples[note] = {
                "note": 1000 * len(split) + i, "note_str": note, "instrument": fam * 10 + i,
                "instrument_str": f"{fams[fam]}_{sources[src]}_{i:03d}", "pitch": pitch, "velocity": vel,
                "sample_rate": 16000, "qualities": [0] * 10, "qualities_str": [],
                "instrument_family": fam, "instrument_family_str": fams[fam],
                "instrument_source": src, "instrument_source_str": sources[src],
            }
            f0 = 440 * 2 ** ((pitch - 69) / 12)
            _write(d / "audio" / f"{note}.wav", tone([f0, f0 * (2 + fam % 3)], seconds, sr=16000, key=note), 16000)
        d.mkdir(parents=True, exist_ok=True)
        (d / "examples.json").write_text(json.dumps(examples, indent=1))
        out[split] = sorted(examples)
    return out


def write_vocalset(data_dir, singers=None, techniques=("belt", "vibrato", "fast_forte"), seconds: float = 6.5,
                   silence: float = 0.5, subdir: str = "VocalSet") -> dict:
    """``FULL/<singer>/arpeggios/<technique>/<singer>_arpeggios_<technique>_a.wav``: ``silence`` s
    of leading near-silence, then a tone whose pitch follows the singer and whose amplitude
    modulation rate follows the technique. Returns {singer: [paths]}."""
    singers = list(singers or _vocab("VocalSet_singer"))
    allt = _vocab("VocalSet_technique") + ["fast_forte", "fast_piano", "forte", "messa", "pp", "slow_forte", "slow_piano"]
    full = Path(data_dir) / subdir / "FULL"
    out: dict = {}
    for si, s in enumerate(singers):
        for t in techniques:
            name = f"{s}_arpeggios_{t}_a.wav"
            body = tone(_freq(si * 2), seconds - silence, key=name)
            mod = 1 + 0.5 * np.sin(2 * np.pi * (2 + allt.index(t)) * np.arange(len(body)) / SR)
            x = np.concatenate([0.0005 * _rng(name + "s").standard_normal(int(silence * SR)), body * mod]).astype(np.float32)
            path = full / s / "arpeggios" / t / name
            _write(path, x)
            out.setdefault(s, []).append(path)
    return out


def write_mtg(data_dir, task: str = "genre", per_split: int = 2, seconds: float = 2.0, subdir: str = "MTG") -> dict:
    """``audio-low/NN/ID.low.mp3`` for tracks of the shipped split-0 TSV (summed tag tones)."""
    from marble.datasets.mtg import parse_split_tsv

    key = {"genre": "MTG_genre", "instrument": "MTG_instrument", "moodtheme": "MTG_moodtheme", "top50tags": "MTG_top50tags"}[task]
    vocab = _vocab(key)
    out = {}
    for split in ("train", "valid", "test"):
        rows = parse_split_tsv(read_text(f"mtg/autotagging_{task}-{split}.tsv"))
        by_id = {tid: (rel, tags) for tid, rel, tags in rows}
        out[split] = _pick([(tid, "|".join(tags)) for tid, _, tags in rows], per_split)
        for tid in out[split]:
            rel, tags = by_id[tid]
            x = tone([_freq(vocab.index(t)) for t in tags], seconds, key=tid)
            _write(Path(data_dir) / subdir / "audio-low" / (rel[:-4] + ".low.mp3"), x)
    return out


def write_musdb(data_dir, per_split: int = 1, seconds: float = 2.0, subdir: str = "MUSDB18") -> dict:
    """MUSDB18-HQ wav layout ``{train,test}/<track>/{mixture,vocals,drums,bass,other}.wav`` (stereo);
    valid tracks use the real validation names (they live in ``train/``), train/test names are made up."""
    df = read_table("musdb.tsv")
    names = {
        "train": [f"Fixture Artist - Train Song {i}" for i in range(per_split)],
        "valid": df.loc[df["split"] == "valid", "name"].tolist()[:per_split],
        "test": [f"Fixture Artist - Test Song {i}" for i in range(per_split)],
    }
    for split, tracks in names.items():
        for name in tracks:
            d = Path(data_dir) / subdir / ("test" if split == "test" else "train") / name
            srcs = {
                "vocals": tone(440, seconds, key=name + "v"),
                "drums": (0.2 * _rng(name + "d").standard_normal(int(seconds * SR))).astype(np.float32),
                "bass": tone(55, seconds, key=name + "b"),
                "other": tone([330, 660], seconds, key=name + "o"),
            }
            for s, x in srcs.items():
                _write(d / f"{s}.wav", np.stack([x, 0.9 * x]))
            _write(d / "mixture.wav", np.stack([sum(srcs.values()), 0.9 * sum(srcs.values())]))
    return names


FOLDER_VOCAB = {"multiclass": ["low", "mid", "high"], "multilabel": ["a", "b", "c", "d"], "regression": ["arousal", "valence"]}
FOLDER_METRIC = {"multiclass": ("accuracy", "cross-entropy"), "multilabel": ("roc_auc_macro", "bce"), "regression": ("r2_mean", "mse")}


def write_folder_dataset(data_dir, prediction: str = "multiclass", per_split: int = 4, seconds: float = 1.5,
                         subdir: str = "mydata", task_id: str | None = None, separator: str = ";") -> Path:
    """A user dataset: ``<subdir>/audio/*.wav`` + ``<subdir>/metadata.csv`` (path,label,split), and
    its task card ``<data_dir>/cards/<task_id>.toml``; returns the card path. Regression labels are
    ``separator``-joined floats in vocabulary order."""
    vocab = FOLDER_VOCAB[prediction]
    root = Path(data_dir) / subdir
    lines = ["path,label,split"]
    n = 0
    for split in ("train", "valid", "test"):
        for i in range(per_split):
            rel = f"audio/{split}_{i:03d}.wav"
            if prediction == "multiclass":
                label, x = vocab[i % 3], tone(_freq(12 * (i % 3)), seconds, key=rel)
            elif prediction == "multilabel":
                on = [j for j in range(4) if (i + 1 + n) >> j & 1] or [0]
                label, x = separator.join(vocab[j] for j in on), tone([_freq(7 * j) for j in on], seconds, key=rel)
            else:
                a, v = round(float(np.sin(i + n)), 4), round(float(np.cos(2 * i + n)), 4)
                label, x = f"{a}{separator}{v}", tone(220 * 2 ** a, seconds, key=rel, amp=0.3 * 2 ** (v / 2))
            n += 1
            _write(root / rel, x)
            lines.append(f'{rel},"{label}",{split}')
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return _folder_card(data_dir, task_id or f"my-{prediction}", prediction, subdir, vocab, separator)


def _folder_card(data_dir, task_id: str, prediction: str, subdir: str, vocab: list[str], separator: str = ";",
                 extra: str = "") -> Path:
    """The card of a folder dataset written under ``<data_dir>/<subdir>``: ``<data_dir>/cards/<task_id>.toml``."""
    metric, loss = FOLDER_METRIC[prediction]
    card = Path(data_dir) / "cards" / f"{task_id}.toml"
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text(
        f'id = "{task_id}"\nversion = 1\nprotocol = "user-fixture"\nname = "Fixture {prediction} task"\n'
        f'dataset = "folder"\nprediction = "{prediction}"\n\n[source]\nsubdir = "{subdir}"\nmetadata = "metadata.csv"\n'
        f'label_separator = "{separator}"\n\n[labels]\nvalues = {json.dumps(vocab)}\n\n[splits]\nsource = "metadata.csv"\n\n'
        f'[training]\nloss = "{loss}"\n\n[metrics]\nmain = "{metric}"\nnames = ["{metric}"]\n' + extra
    )
    return card


def pitch_clip(label: int, key: str, seconds: float = 1.0, sr: int = 24000) -> np.ndarray:
    """A harmonic tone of random timbre (1 to 5 harmonics of random level and phase) plus a little noise; label 0
    has its fundamental in [150, 300) Hz, label 1 in [300, 600) Hz (the octave above), uniformly on a log scale."""
    rng = _rng(key)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 150.0 * 2 ** rng.uniform(0, 1) * (2 if label else 1)
    amps = rng.uniform(0.2, 1.0, rng.integers(1, 6))
    x = sum(a * np.sin(2 * np.pi * (h + 1) * f0 * t + rng.uniform(0, 2 * np.pi)) for h, a in enumerate(amps))
    x = x / x.std() + 0.05 * rng.standard_normal(len(t))
    return (0.2 * x / x.std()).astype(np.float32)


def write_pitch_task(data_dir, per_split=(512, 128, 128), seconds: float = 0.5, subdir: str = "pitch",
                     task_id: str = "fixture-pitch", sr: int = 24000) -> Path:
    """A folder task of :func:`pitch_clip` s (labels ``low`` / ``high``, alternating) with its card; returns the
    card path (the fine-tuning tests' task)."""
    root = Path(data_dir) / subdir
    lines = ["path,label,split"]
    for split, n in zip(("train", "valid", "test"), per_split):
        for i in range(n):
            rel = f"audio/{split}_{i:03d}.wav"
            _write(root / rel, pitch_clip(i % 2, f"{task_id}/{rel}", seconds, sr), sr)
            lines.append(f"{rel},{('low', 'high')[i % 2]},{split}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return _folder_card(data_dir, task_id, "multiclass", subdir, ["low", "high"])
