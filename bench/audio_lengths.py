"""Real music, complete and cut: which files marble reads whole and which it refuses (figures for bench/README.md and
docs/fidelity.md row 22).

Sources: Debian's ``wesnoth-1.16-music`` (Ogg Vorbis) and ``warzone2100-music`` (Ogg Opus). Each source is decoded
complete and cut (2/3 of its bytes). Then excerpts of the sources (0.5-1 s and 1-4 s, the note lengths of issue 22)
and some whole tracks are encoded to MP3 by the encoders of ``tests/audio_fixtures.py`` (ffmpeg's libmp3lame with
and without its Info/Xing frame, CBR and VBR; the lame CLI with and without; libsndfile's own writer), each
untagged, with a ~2 kB ID3v2 tag, with the package's album cover (or 150 kB) as ID3 art and with an APE tag, complete
and cut inside the audio (2/3 of the audio bytes). For each file: marble's verdict, the decoded length against the
source's, and what the pre-fix rule said (libsndfile's frame count with 1 % / two-frame slack for MP3 and Ogg).

    apt-get install ffmpeg lame wesnoth-1.16-music warzone2100-music
    python bench/audio_lengths.py [--root /usr/share/games] [--every 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
import audio_fixtures as af  # noqa: E402  (the encoders and taggers of the tests)

from marble.audio import AudioError, load  # noqa: E402


def old_rule(path: Path) -> str:
    """The check before issue 22's fix: libsndfile's frame count as a promise, with 1 % (at least two MPEG frames or
    8192 samples) of slack for MP3 and Ogg."""
    try:
        with sf.SoundFile(str(path)) as f:
            declared, fmt = f.frames, f.format
            got = len(f.read(dtype="float32"))
    except Exception:
        return "error"
    slack = max(2304, declared // 100) if fmt == "MP3" else max(8192, declared // 100) if fmt == "OGG" else 0
    return "refused" if got + slack < declared else "read"


def verdict(path: Path) -> tuple[str, int]:
    try:
        return "read", len(load(path))
    except AudioError as e:
        return "refused: " + e.reason.split(":")[0].split("(")[0].strip(), 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/usr/share/games", help="where the Debian music packages put their files")
    ap.add_argument("--every", type=int, default=3, help="encode excerpts of every N-th source (all: 1)")
    ap.add_argument("--tracks-every", type=int, default=4, help="and whole tracks of every N-th of those")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    srcs = sorted(glob.glob(f"{args.root}/wesnoth/**/*.ogg", recursive=True)
                  + glob.glob(f"{args.root}/warzone2100/**/*.opus", recursive=True))
    if not srcs:
        sys.exit(f"no .ogg/.opus below {args.root}: apt-get install wesnoth-1.16-music warzone2100-music")
    covers = glob.glob(f"{args.root}/warzone2100/**/albumcover.png", recursive=True)
    rng = random.Random(0)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="marble-audio-lengths-"))
    try:
        for s in map(Path, srcs):  # the sources themselves, complete and cut
            cut = work / f"cut{s.suffix}"
            cut.write_bytes(s.read_bytes()[: s.stat().st_size * 2 // 3])
            for name, p in (("complete", s), ("cut", cut)):
                v, n = verdict(p)
                rows.append({"file": f"source {s.suffix[1:]}", "kind": name, "tag": "-", "marble": v, "old": old_rule(p),
                             "source_len": 0, "decoded": n})
        picked = srcs[:: args.every]
        for s in picked:
            x, sr = sf.read(s, always_2d=True)
            x = x.mean(axis=1).astype(np.float32)
            plans = [("excerpt <1 s", rng.uniform(0.5, 1.0)), ("excerpt 1-4 s", rng.uniform(1.0, 4.0))]
            if s in picked[:: args.tracks_every]:
                plans.append(("whole track", None))
            for kind, secs in plans:
                seg = x if secs is None else x[2 * sr: 2 * sr + int(round(secs * sr))]
                for enc in af.ENCODERS:
                    base = af.encode(enc, seg, work / f"{enc}.mp3", sr=sr)
                    for t in af.TAGS:
                        p = work / f"{enc}-{t}.mp3"
                        shutil.copy(base, p)
                        if t == "cover-art" and covers:
                            from mutagen.id3 import APIC, ID3

                            tag = ID3()
                            tag.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=Path(covers[0]).read_bytes()))
                            tag.save(p)
                        else:
                            af.tag(p, t)
                        for name, q in (("complete", p), ("cut", af.cut_audio(p, 2 / 3))):
                            v, n = verdict(q)
                            rows.append({"file": enc, "kind": f"{kind}, {name}", "tag": t, "marble": v, "old": old_rule(q),
                                         "source_len": len(seg), "decoded": n})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = collections.defaultdict(collections.Counter)
    lengths = collections.defaultdict(list)
    for r in rows:
        key = (r["file"], r["kind"])
        table[key][f"marble {r['marble']}"] += 1
        table[key][f"before: {r['old']}"] += 1
        if r["marble"] == "read" and r["source_len"]:
            lengths[key].append(r["decoded"] - r["source_len"])
    print("| file | kind | files | marble | before the fix (libsndfile's count as a promise) | decoded - source samples |")
    print("|---|---|---|---|---|---|")
    for key in sorted(table):
        c = table[key]
        n = sum(v for k, v in c.items() if k.startswith("marble"))
        now = ", ".join(f"{k[7:]} {v}" for k, v in sorted(c.items()) if k.startswith("marble"))
        old = ", ".join(f"{k[8:]} {v}" for k, v in sorted(c.items()) if k.startswith("before"))
        d = lengths.get(key)
        rng_s = f"{min(d)}..{max(d)}" if d else "-"
        print(f"| {key[0]} | {key[1]} | {n} | {now} | {old} | {rng_s} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
