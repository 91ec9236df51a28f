"""Where each of the eight MARBLE datasets comes from: URLs, sizes, licences and checksums, pinned here.

Every figure names its source. A checksum is pinned only where its publisher (or a library that
pinned it from the publisher) states it; where none is published the field is None and ``marble data
verify`` falls back to counts against the official split, per-file sizes recorded at extraction, WAV
header checks and a decode test. Pinned lists too long for this file live in ``data/`` (see
``data/SOURCES.md``).

Sources named below:
- MARBLE v1 = ``a43992899/MARBLE-Benchmark@d9300e3`` ``exp_scripts/download/*.sh`` and
  ``benchmark/tasks/GS/assets/giantsteps.json`` (per-file md5s of the GiantSteps mp3s);
- mirdata = ``mir-dataset-loaders/mirdata`` ``mirdata/datasets/gtzan_genre.py`` (GTZAN md5);
- mtg-jamendo = ``MTG/mtg-jamendo-dataset@1b4fa8c`` ``scripts/download/download.py`` (host layout) and
  ``data/download/*_audio-low_sha256_{tars,tracks}.txt``;
- Zenodo record 1442513 (VocalSet v1.2): file ``VocalSet11.zip`` size and md5 from the record's file metadata.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Callable

from marble.fetch.archives import Limit
from marble.fetch.http import Checksum

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Remote:
    """One file on a server."""

    url: str
    filename: str
    size: int | None = None
    checksum: Checksum | None = None


@dataclass(frozen=True)
class Source:
    """A download: one file installed as is (``kind="file"``, at ``target``), or an archive (``zip``/``tar``)
    made of one remote or of several parts concatenated in order (``mp3.zip.001`` ...).

    ``mapper`` turns an archive member name into a path under the dataset root (None: skip it).
    ``provides`` is the set of paths the source is known to install (None: not known before opening it).
    ``member_sha256`` returns published digests of archive members (member name -> sha256).
    ``covers`` says whether a path could come from this source (so ``--fix`` of one NSynth split does not
    fetch the other two archives). ``limit`` bounds what one kept member of an archive, and all of them,
    may extract to (:func:`limit`): a decompression bomb or a wrong archive is refused before it fills
    the disk.
    """

    name: str
    parts: tuple[Remote, ...]
    kind: str = "file"
    target: str | None = None
    mapper: Callable[[str], str | None] | None = None
    provides: frozenset[str] | None = None
    member_sha256: Callable[[], dict[str, str]] | None = None
    covers: Callable[[str], bool] | None = None  # could this source hold that path? (None: maybe)
    limit: Limit | None = None


@dataclass
class Recipe:
    name: str
    title: str
    subdir: str
    tasks: tuple[str, ...]
    homepage: str
    licence: str
    size: str
    access: str  # "download": marble fetches it; "manual": behind an access request / licence click
    provenance: str
    sources_fn: Callable[[frozenset[str]], list[Source]] | None = None
    instructions: str = ""
    file_checksums_fn: Callable[[], dict[str, Checksum]] | None = field(default=None, repr=False)
    manual_urls: tuple[str, ...] = ()  # where a manual dataset is requested / downloaded by hand
    local_sources: tuple[Source, ...] = ()  # archives only a user can bring (``download --archive``)
    moved: tuple[tuple[str, str], ...] = ()  # (old folder, new folder) of an earlier marble's install layout

    def sources(self, tasks: frozenset[str] | None = None) -> list[Source]:
        if self.sources_fn is None:
            return []
        return self.sources_fn(frozenset(tasks or self.tasks))

    def urls(self, tasks: frozenset[str] | None = None) -> list[str]:
        """Every source URL of what ``tasks`` (default: all the recipe's) need."""
        out = list(self.manual_urls)
        for s in self.sources(tasks):
            for r in s.parts:
                if r.url not in out:
                    out.append(r.url)
        return out

    def source_summary(self, tasks: frozenset[str] | None = None) -> str:
        """One line for ``data check``: the homepage and the download URLs (a long list abbreviated)."""
        urls = self.urls(tasks)
        shown = urls[:3] + ([f"... ({len(urls)} files)"] if len(urls) > 3 else [])
        manual = f" (access request: see `marble data download {self.name}`)" if self.access != "download" else ""
        return f"{self.homepage} ; " + " ".join(shown) + manual

    def file_checksums(self) -> dict[str, Checksum]:
        """Published per-file checksums of installed files (path under the root -> digest)."""
        return self.file_checksums_fn() if self.file_checksums_fn else {}


def limit(files: int, each: float, total: float | None = None) -> Limit:
    """Extraction ceilings, plus a quarter: one member of at most ``each`` bytes, all of them at most
    ``total`` (default ``files`` x ``each``). Each figure below is a ceiling derived from the dataset's
    published count, duration and format, not a measured size: a bound against bombs, not a size check."""
    return Limit(int(each * 1.25), int((files * each if total is None else total) * 1.25))


def _one(name: str, url: str, kind: str, mapper=None, size=None, checksum=None, target=None, provides=None,
         member_sha256=None, prefix: str | None = None, limit: Limit | None = None) -> Source:
    covers = (lambda rel: rel.startswith(prefix)) if prefix else None
    return Source(name, (Remote(url, PurePosixPath(name).name, size, checksum),), kind, target, mapper,
                  provides, member_sha256, covers, limit)


# -- GTZAN (+ GTZAN-Rhythm) ---------------------------------------------------------------------------
GTZAN_URL = "http://opihi.cs.uvic.ca/sound/genres.tar.gz"
GTZAN_RHYTHM_URL = ("http://anasynth.ircam.fr/home/system/files/attachment_uploads/marchand/private/"
                    "GTZAN-Rhythm_v2_ismir2015_lbd_2015-10-28.tar_.gz")


def _gtzan_audio(member: str) -> str | None:
    """The README's layout, ``genres_original/<genre>/<genre>.NNNNN.wav``, from the marsyas tarball's
    ``genres/<genre>/*.au`` or the Kaggle zip's ``Data/genres_original/<genre>/*.wav``."""
    p = PurePosixPath(member)
    if len(p.parts) >= 2 and p.suffix in (".au", ".wav") and p.name.startswith(p.parent.name + "."):
        return f"genres_original/{p.parent.name}/{p.stem}.wav"
    return None


def _gtzan_jams(member: str) -> str | None:
    p = PurePosixPath(member)
    return f"jams/{p.name}" if p.name.endswith(".wav.jams") else None


GTZAN_AUDIO_LIMIT = limit(1000, 31 * 22050 * 2)  # 1 000 clips of ~30 s, 22 050 Hz, 16-bit mono


def _gtzan_sources(tasks: frozenset[str]) -> list[Source]:
    out = [_one("genres.tar.gz", GTZAN_URL, "tar", _gtzan_audio, checksum=Checksum("md5", "5b3d6dddb579ab49814ab86dba69e7c7"),
                prefix="genres", limit=GTZAN_AUDIO_LIMIT)]
    if "gtzan-beat" in tasks:  # 1 000 JAMS files of beats and downbeats (~ tens of kB): 1 MB each is far above
        out.append(_one("GTZAN-Rhythm_v2.tar.gz", GTZAN_RHYTHM_URL, "tar", _gtzan_jams, prefix="jams/",
                        limit=limit(1000, 1 << 20)))
    return out


# -- MagnaTagATune -------------------------------------------------------------------------------------
MTT_BASE = "https://mirg.city.ac.uk/datasets/magnatagatune"


def _mtt_audio(member: str) -> str | None:
    p = PurePosixPath(member)
    if p.suffix == ".mp3" and len(p.parts) >= 2 and len(p.parent.name) == 1:
        return f"mp3/{p.parent.name}/{p.name}"
    return None


@lru_cache(maxsize=1)
def _mtt_clips() -> frozenset[str]:
    """The clips of the split (``mtt.tsv``: 25 860, the 3 unreadable mp3s left out) as installed paths."""
    from marble.datasets.splitfiles import read_table

    return frozenset(f"mp3/{p}" for p in read_table("mtt.tsv")["mp3_path"])


def _mtt_sources(tasks) -> list[Source]:
    parts = tuple(Remote(f"{MTT_BASE}/mp3.zip.00{i}", f"mp3.zip.00{i}") for i in (1, 2, 3))
    return [Source("mp3.zip", parts, "zip", mapper=_mtt_audio, provides=_mtt_clips(),
                   covers=lambda rel: rel.startswith("mp3/"),
                   limit=limit(25863, 30 * 128_000 / 8)),  # 25 863 clips of ~29 s (32 kbit/s; 128 allowed)
            _one("annotations_final.csv", f"{MTT_BASE}/annotations_final.csv", "file", target="annotations_final.csv")]


# -- GiantSteps key + GiantSteps-MTG-key --------------------------------------------------------------
@lru_cache(maxsize=1)
def _gs_assets() -> dict[str, dict]:
    with gzip.open(DATA / "giantsteps.json.gz", "rt") as f:
        return json.load(f)


def _gs_target(tag: str, asset: dict) -> str:
    folder = "giantsteps-key-dataset" if tag.startswith("GIANTSTEPS_KEY_") else "giantsteps-mtg-key-dataset"
    return f"{folder}/audio/{PurePosixPath(asset['path_rel']).name}"


@lru_cache(maxsize=1)
def _gs_songs() -> frozenset[str]:
    from marble.datasets.splitfiles import read_table

    return frozenset(str(int(s)) for s in read_table("gs.tsv")["song_uid"])


def _gs_entries() -> list[tuple[str, dict]]:
    songs = _gs_songs()
    return [(tag, a) for tag, a in sorted(_gs_assets().items())
            if PurePosixPath(a["path_rel"]).name.split(".")[0] in songs]


def _gs_sources(tasks) -> list[Source]:
    out = []
    for tag, a in _gs_entries():
        target = _gs_target(tag, a)
        out.append(_one(target, a["url"], "file", target=target, checksum=Checksum("md5", a["checksum"]),
                        provides=frozenset([target])))
    return out


def _gs_checksums() -> dict[str, Checksum]:
    return {_gs_target(tag, a): Checksum("md5", a["checksum"]) for tag, a in _gs_entries()}


# -- Emomusic ------------------------------------------------------------------------------------------
EMO_URL = "http://cvml.unige.ch/databases/emoMusic/clips_45sec.tar.gz"


def _emo_audio(member: str) -> str | None:
    p = PurePosixPath(member)
    return f"clips_45seconds/{p.name}" if p.suffix == ".mp3" and not p.name.startswith("._") else None


@lru_cache(maxsize=1)
def _emo_clips() -> frozenset[str]:
    """The 744 clips of ``emo.tsv`` (of the archive's 1 000), named as distributed (no leading zeros)."""
    from marble.datasets.splitfiles import read_table

    return frozenset(f"clips_45seconds/{int(uid)}.mp3" for uid in read_table("emo.tsv")["uid"])


def _emo_sources(tasks) -> list[Source]:
    return [_one("clips_45sec.tar.gz", EMO_URL, "tar", _emo_audio, provides=_emo_clips(), prefix="clips_45seconds/",
                 limit=limit(1000, 45 * 320_000 / 8))]  # 1 000 clips of 45 s, mp3 of at most 320 kbit/s


# -- NSynth --------------------------------------------------------------------------------------------
NSYNTH_BASE = "http://download.magenta.tensorflow.org/datasets/nsynth"


def _nsynth_member(member: str) -> str | None:
    p = PurePosixPath(member)
    if p.parts and p.parts[0] in ("nsynth-train", "nsynth-valid", "nsynth-test") and (p.name == "examples.json" or p.suffix == ".wav"):
        return str(p)
    return None


NSYNTH_NOTES = {"train": 289205, "valid": 12678, "test": 4096}


def _nsynth_sources(tasks) -> list[Source]:
    # per note: a 128 044-byte wav (4 s, 16 kHz, 16-bit) and its examples.json entry (< 2 kB); the largest
    # member is examples.json itself
    return [_one(f"nsynth-{s}.jsonwav.tar.gz", f"{NSYNTH_BASE}/nsynth-{s}.jsonwav.tar.gz", "tar", _nsynth_member,
                 prefix=f"nsynth-{s}/", limit=limit(n, max(128044, n * 2048), n * (128044 + 2048)))
            for s, n in NSYNTH_NOTES.items()]


# -- VocalSet ------------------------------------------------------------------------------------------
# the Zenodo API's content link (the record page's /files/<name> link may answer with a preview page)
VOCALSET_URL = "https://zenodo.org/api/records/1442513/files/VocalSet11.zip/content"


def _vocalset_member(member: str) -> str | None:
    parts = PurePosixPath(member).parts
    if "FULL" in parts and member.endswith(".wav") and not PurePosixPath(member).name.startswith("._"):
        return str(PurePosixPath(*parts[parts.index("FULL"):]))
    return None


def _vocalset_sources(tasks) -> list[Source]:
    # 10.1 h of mono 44.1 kHz audio (the paper); 12 h at 24 bits per sample as the ceiling, 10 min per recording
    return [_one("VocalSet11.zip", VOCALSET_URL, "zip", _vocalset_member, size=2077243579,
                 checksum=Checksum("md5", "0c09396242f946e7111ad7d8fc649b81"), prefix="FULL/",
                 limit=limit(1, 600 * 44100 * 3, 12 * 3600 * 44100 * 3))]


# -- MTG-Jamendo (audio-low) ---------------------------------------------------------------------------
MTG_BASE = "https://essentia.upf.edu/documentation/datasets/mtg-jamendo"
MTG_TASKS = ("mtg-instrument", "mtg-moodtheme", "mtg-genre", "mtg-top50")


def _sha_list(path: Path) -> dict[str, str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return {name: digest for digest, name in (ln.split() for ln in f if ln.strip())}


@lru_cache(maxsize=None)
def mtg_tracks(task: str) -> frozenset[str]:
    """``audio-low/NN/ID.low.mp3`` of every track of a task's split-0 (train, valid, test)."""
    from marble.datasets.mtg import parse_split_tsv
    from marble.datasets.splitfiles import read_text
    from marble.registry import get_card

    card = get_card(task)
    out = set()
    for split in card.splits.names:
        for _, rel, _ in parse_split_tsv(read_text(card.splits.source.format(split=split))):
            out.add("audio-low/" + (rel[:-4] + ".low.mp3" if rel.endswith(".mp3") else rel))
    return frozenset(out)


@lru_cache(maxsize=1)
def _moodtheme_tracks_sha() -> dict[str, str]:
    return _sha_list(DATA / "mtg_autotagging_moodtheme_audio-low_sha256_tracks.txt.gz")


def _mtg_member(member: str) -> str | None:
    p = PurePosixPath(member)
    return f"audio-low/{p.parent.name}/{p.name}" if p.name.endswith(".low.mp3") else None


def _mtg_sources(tasks: frozenset[str]) -> list[Source]:
    wanted = frozenset().union(*(mtg_tracks(t) for t in tasks if t in MTG_TASKS))
    # mood/theme alone: MTG publishes a smaller set of tars holding only the mood/theme tracks
    dataset = "autotagging_moodtheme" if tasks & set(MTG_TASKS) == {"mtg-moodtheme"} else "raw_30s"
    tars = _sha_list(DATA / f"mtg_{dataset}_audio-low_sha256_tars.txt")
    member_sha = _moodtheme_tracks_sha if dataset == "autotagging_moodtheme" else None
    out = []
    for name in sorted(tars):
        folder = name.rsplit("-", 1)[1].split(".")[0]  # raw_30s_audio-low-NN.tar -> NN
        provides = frozenset(t for t in wanted if t.split("/")[1] == folder)
        if not provides:
            continue
        out.append(_one(name, f"{MTG_BASE}/{dataset}/audio-low/{name}", "tar", _mtg_member,
                        checksum=Checksum("sha256", tars[name]), provides=provides, member_sha256=member_sha,
                        limit=limit(len(provides), 3600 * 96_000 / 8)))  # full tracks: 1 h at 96 kbit/s each
    return out


# -- MUSDB18 -------------------------------------------------------------------------------------------
def _musdb_member(member: str) -> str | None:
    """``[top/]{train,test}/<track>/<stem>.wav`` (HQ) or ``[top/]{train,test}/<track>.stem.mp4`` (stems)."""
    parts = PurePosixPath(member).parts
    for i, p in enumerate(parts):
        if p in ("train", "test") and len(parts) - i in (2, 3):
            rel = PurePosixPath(*parts[i:])
            if rel.suffix == ".wav" or rel.name.endswith(".stem.mp4"):
                return str(rel)
    return None


# ~10 h of music in 150 tracks; HQ: mixture + 4 stems as 44.1 kHz 16-bit stereo wav, a track at most 20 min (the
# stems mp4 is far smaller)
MUSDB_LOCAL = tuple(Source(name, (), "zip", mapper=_musdb_member,
                           limit=limit(5, 20 * 60 * 44100 * 4, 5 * 11 * 3600 * 44100 * 4))
                    for name in ("musdb18hq.zip", "musdb18.zip"))

MUSDB_INSTRUCTIONS = """MUSDB18 is distributed on Zenodo behind an access request (academic use only):
  1. request access at https://zenodo.org/records/1117372 (MUSDB18, stems, musdb18.zip) or
     https://zenodo.org/records/3338373 (MUSDB18-HQ, wav, musdb18hq.zip); the sigsep team grants it by hand.
  2. download the zip and unzip it so that {root}/train/ (100 tracks) and {root}/test/ (50 tracks) exist:
       unzip musdb18hq.zip -d {root}          (HQ: <track>/{{mixture,vocals,drums,bass,other}}.wav)
       unzip musdb18.zip -d {root}            (stems: <track>.stem.mp4; needs ffmpeg at run time, or
       musdbconvert {root} {root}-wav  to decode them to wav once)
     or let marble unzip it in place:  marble data download musdb --archive musdb18hq.zip --data-dir {data}
  3. marble data verify musdb --data-dir {data}"""

GTZAN_NOTE = ("The official host ({url}) has been offline since 2023 (MARBLE v1's download script says so). Use "
              "--mirror with a lab copy, or give marble a copy of genres.tar.gz (its md5 is checked): marble data download "
              "gtzan --archive genres.tar.gz. The Kaggle copy works too: kaggle datasets download -d "
              "andradaolteanu/gtzan-dataset-music-genre-classification, then marble data download gtzan --archive "
              "gtzan-dataset-music-genre-classification.zip (or unzip it into {root}: Data/genres_original/ is "
              "accepted as is), then marble data verify gtzan.")


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("gtzan", "GTZAN genre (+ GTZAN-Rhythm v2 beats)", "GTZAN", ("gtzan", "gtzan-beat"),
               "http://marsyas.info/downloads/datasets.html",
               "no licence stated (mirdata: none found); research use", "1 000 30-s clips, genres.tar.gz 1.14 GiB (TFDS "
               "catalogue); GTZAN-Rhythm annotations: size not published", "download",
               "genres.tar.gz md5 from mirdata gtzan_genre.py; GTZAN-Rhythm URL from MARBLE v1 download_gtzan.sh "
               "(no checksum published: verified by count and JAMS parse). The .au files are converted to the .wav "
               "names of the split (lossless, 16-bit, 22 050 Hz).", _gtzan_sources,
               instructions=GTZAN_NOTE, moved=(("genres", "genres_original"),)),
        Recipe("mtt", "MagnaTagATune", "MTT", ("mtt",), "https://mirg.city.ac.uk/codeapps/the-magnatagatune-dataset",
               "CC BY-NC-SA (Magnatune audio; see the dataset page)", "25 863 clips in a 3-part zip "
               "(mp3.zip.001-003) + annotations_final.csv; sizes not published", "download",
               "URLs from MARBLE v1 download_mtt.sh; no checksum published: verified by the split count "
               "(25 860 clips: the 3 unreadable ones excluded), recorded sizes and a decode test.", _mtt_sources),
        Recipe("gs", "GiantSteps key + GiantSteps-MTG-key", "GS", ("gs",), "https://github.com/GiantSteps/giantsteps-key-dataset",
               "annotations CC BY-SA 4.0; audio = Beatport previews, research use", "1 763 two-minute LOFI mp3 "
               "previews (604 test + 1 159 train/valid), one HTTP file each", "download",
               "per-file URLs (cp.jku.at backups) and md5s from MARBLE v1 benchmark/tasks/GS/assets/giantsteps.json "
               "(2 090 entries; the 1 763 songs of gs.tsv are fetched)", _gs_sources, file_checksums_fn=_gs_checksums),
        Recipe("emo", "Emomusic (1000 songs for emotional analysis of music)", "EMO", ("emo",),
               "https://cvml.unige.ch/databases/emoMusic/",
               "Free Music Archive audio under Creative Commons licences (see the dataset manual)",
               "744 of 1 000 45-s mp3 clips are used (clips_45sec.tar.gz); size not published", "download",
               "URL from MARBLE v1 download_emo.sh; no checksum published: verified by count and decode test.",
               _emo_sources),
        Recipe("nsynth", "NSynth", "NSynth", ("nsynth-instrument", "nsynth-pitch"),
               "https://magenta.tensorflow.org/datasets/nsynth", "CC BY 4.0",
               "305 979 4-s notes, 16 kHz wav: 39.2 GB extracted (305 979 x 128 044 bytes); 3 tar.gz", "download",
               "URLs from MARBLE v1 download_nsynth.sh; no archive checksum published: verified by the "
               "examples.json counts (289 205/12 678/4 096), WAV headers and a decode test.", _nsynth_sources),
        Recipe("vocalset", "VocalSet", "VocalSet", ("vocalset-technique", "vocalset-singer"),
               "https://zenodo.org/records/1442513", "CC BY 4.0", "VocalSet11.zip, 2 077 243 579 bytes", "download",
               "size and md5 from the Zenodo record's file metadata (record 1442513; MARBLE v1 used the same file "
               "name from record 1203819)", _vocalset_sources),
        Recipe("mtg", "MTG-Jamendo (split-0, audio-low)", "MTG", MTG_TASKS, "https://github.com/MTG/mtg-jamendo-dataset",
               "audio: Creative Commons licences per track (Jamendo); metadata CC BY-NC-SA 4.0",
               "audio-low (96 kbit/s) tars, 100 folders; only the tracks of the requested tasks are kept "
               "(55 525 for all four; 17 982 for mood/theme alone, from the smaller mood/theme tars)", "download",
               "host layout from mtg-jamendo scripts/download/download.py; tar sha256s (and mood/theme per-track "
               "sha256s, checked when extracting the mood/theme tars: the raw_30s tars' tracks may differ) from "
               "mtg-jamendo data/download/", _mtg_sources),
        Recipe("musdb", "MUSDB18 / MUSDB18-HQ", "MUSDB18", ("musdb",), "https://sigsep.github.io/datasets/musdb.html",
               "academic use only; access request on Zenodo", "150 tracks (100 train, 50 test): stems zip or HQ wav zip",
               "manual", "Zenodo records 1117372 (stems) and 3338373 (HQ); the musdb package reads either layout",
               None, instructions=MUSDB_INSTRUCTIONS,
               manual_urls=("https://zenodo.org/records/1117372", "https://zenodo.org/records/3338373"),
               local_sources=MUSDB_LOCAL),
    ]
}

# task-card dataset family -> recipe
FAMILY = {"gtzan": "gtzan", "gtzan-beat": "gtzan", "mtt": "mtt", "giantsteps": "gs", "emomusic": "emo",
          "nsynth": "nsynth", "vocalset": "vocalset", "mtg": "mtg", "musdb": "musdb"}


def recipe_for_task(task: str) -> Recipe:
    for r in RECIPES.values():
        if task in r.tasks:
            return r
    raise KeyError(task)
