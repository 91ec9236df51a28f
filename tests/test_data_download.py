"""``marble data download`` / ``verify`` against a real HTTP server on 127.0.0.1 (``download_fixtures``:
a thread of this test, stopped at the end and by a watchdog) serving small archives in the official
shapes, so the real download code (urllib, resume, checksum, extraction) runs end to end. No test
contacts any other address. What a hostile or broken server, archive or data folder gets is in
``test_data_trust.py``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from marble.fetch import archives, http
from marble.fetch.http import Checksum, ChecksumError, DownloadError, download, mirror_url
from marble.fetch.install import Manifest, install
from marble.fetch.recipes import RECIPES, Source
from marble.fetch.verify import verify, wav_truncation
from tests.download_fixtures import ROOT, Server
from tests.download_fixtures import blob as _blob
from tests.download_fixtures import cli as _cli
from tests.download_fixtures import mp3_bytes as _mp3_bytes
from tests.download_fixtures import sha as _sha
from tests.download_fixtures import tar_gz as _tar_gz
from tests.download_fixtures import wav_bytes as _wav_bytes
from tests.download_fixtures import zip_bytes as _zip


@pytest.fixture
def server():
    with Server() as s:
        yield s


# -- the HTTP layer ------------------------------------------------------------------------------------
def test_interrupted_download_leaves_no_file_and_resumes_with_range(server, tmp_path):
    data = _blob(700_000)
    server.files["/d/blob.bin"] = data
    server.cut["/d/blob.bin"] = 250_000
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="rerun the same command to resume"):
        download(f"{server.base}/d/blob.bin", dest, checksum=_sha(data), retries=0, quiet=True)
    part = dest.with_name("blob.bin.part")
    assert not dest.exists(), "an interrupted download must not leave a file under its final name"
    have = part.stat().st_size
    assert 0 < have < len(data)
    assert part.read_bytes() == data[:have]
    download(f"{server.base}/d/blob.bin", dest, checksum=_sha(data), retries=0, quiet=True)
    assert dest.read_bytes() == data and not part.exists()
    # one byte of overlap: the part's last byte must be the server's byte at that offset
    assert server.requests("/d/blob.bin") == [(None, 200), (f"bytes={have - 1}-", 206)]


def test_dropped_connection_is_retried_in_the_same_call(server, tmp_path):
    data = _blob(300_000, 1)
    server.files["/d/x.bin"] = data
    server.cut["/d/x.bin"] = 100_000
    got = download(f"{server.base}/d/x.bin", tmp_path / "x.bin", size=len(data), checksum=_sha(data), quiet=True)
    assert got.path.read_bytes() == data and got.sha256 == _sha(data).hexdigest and got.size == len(data)
    (first, s1), (second, s2) = server.requests("/d/x.bin")
    assert (first, s1) == (None, 200) and s2 == 206 and int(second.split("=")[1].rstrip("-")) > 0


def test_redirect_is_followed(server, tmp_path):
    data = _blob(50_000, 2)
    server.files["/real/file.zip"] = data
    server.redirects["/old/file.zip"] = f"{server.base}/moved/file.zip"
    server.redirects["/moved/file.zip"] = "/real/file.zip"  # a relative Location too
    got = download(f"{server.base}/old/file.zip", tmp_path / "file.zip", checksum=_sha(data), quiet=True)
    assert got.path.read_bytes() == data
    assert [s for _, _, s in server.log] == [302, 302, 200]


def test_checksum_mismatch_is_detected_and_nothing_kept(server, tmp_path):
    server.files["/d/f.tar.gz"] = _blob(20_000, 3)
    dest = tmp_path / "f.tar.gz"
    with pytest.raises(ChecksumError, match="does not match the pinned"):
        download(f"{server.base}/d/f.tar.gz", dest, checksum=Checksum("md5", "0" * 32), quiet=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ChecksumError, match="expected 19999"):
        download(f"{server.base}/d/f.tar.gz", dest, size=19_999, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_final_file_is_not_trusted(server, tmp_path):
    data = _blob(10_000, 4)
    server.files["/d/a.bin"] = data
    dest = tmp_path / "a.bin"
    dest.write_bytes(data[:5000])  # e.g. copied by hand and cut short: nothing shows which of it to keep
    download(f"{server.base}/d/a.bin", dest, checksum=_sha(data), quiet=True)
    assert dest.read_bytes() == data
    assert server.requests("/d/a.bin") == [(None, 200)]
    n = len(server.log)
    download(f"{server.base}/d/a.bin", dest, checksum=_sha(data), quiet=True)  # a right one is kept as is
    assert len(server.log) == n


def test_full_disk_keeps_only_a_part(server, tmp_path):
    """A write error (here the file-size limit, as a full disk would) leaves a resumable part, never the file."""
    data = _blob(400_000, 5)
    server.files["/d/big.bin"] = data
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, resource.RLIM_INFINITY))\n"
        "from marble.fetch.http import download, DownloadError\n"
        "try:\n"
        f"    download({server.base + '/d/big.bin'!r}, {str(tmp_path / 'big.bin')!r}, quiet=True)\n"
        "except DownloadError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 3, res.stderr
    assert "cannot write" in res.stdout and "rerun the same command to resume" in res.stdout
    assert not (tmp_path / "big.bin").exists()
    assert (tmp_path / "big.bin.part").stat().st_size <= 150_000
    download(f"{server.base}/d/big.bin", tmp_path / "big.bin", checksum=_sha(data), quiet=True)
    assert (tmp_path / "big.bin").read_bytes() == data


def test_mirror_replaces_the_host_and_keeps_the_path():
    assert mirror_url("https://zenodo.org/records/1442513/files/VocalSet11.zip", "http://127.0.0.1:9/m/") == \
        "http://127.0.0.1:9/m/records/1442513/files/VocalSet11.zip"
    assert mirror_url("http://a/b?download=1", None) == "http://a/b?download=1"
    assert mirror_url("http://a/x/y.tar?download=1", "http://m") == "http://m/x/y.tar?download=1"


# -- archives in the official shapes -------------------------------------------------------------------
def _with_checksums(recipe, fix):
    """The real recipe with each source passed through ``fix`` (fixtures cannot match the pinned digests)."""
    return dataclasses.replace(recipe, sources_fn=lambda tasks: [fix(s) for s in recipe.sources_fn(tasks)])


def test_gtzan_tarball_au_files_become_the_split_wavs(server, tmp_path):
    genres = {}
    for g, i in (("blues", 0), ("jazz", 1)):
        x = (np.random.default_rng(i).standard_normal(2205) * 2000).astype(np.int16)
        buf = io.BytesIO()
        sf.write(buf, x, 22050, format="AU", subtype="PCM_16")
        genres[f"genres/{g}/{g}.0000{i}.au"] = (buf.getvalue(), x)
    blob = _tar_gz({k: v[0] for k, v in genres.items()} | {"genres/bextract_single.mf": b"x"})
    server.files["/sound/genres.tar.gz"] = blob
    md5 = hashlib.md5(blob).hexdigest()
    recipe = _with_checksums(RECIPES["gtzan"], lambda s: dataclasses.replace(
        s, parts=(dataclasses.replace(s.parts[0], checksum=Checksum("md5", md5)),)))
    rep = install(recipe, tmp_path, ["gtzan"], mirror=server.base, quiet=True)
    # the README's layout, as the Kaggle copy has it (the tarball's folder is genres/)
    assert sorted(rep.installed) == ["genres_original/blues/blues.00000.wav", "genres_original/jazz/jazz.00001.wav"]
    for name, (_, x) in genres.items():
        wav = tmp_path / "GTZAN" / name.replace(".au", ".wav").replace("genres/", "genres_original/")
        y, sr = sf.read(wav, dtype="int16")
        assert sr == 22050 and np.array_equal(y, x)
    assert not (tmp_path / "GTZAN" / ".marble" / "downloads" / "genres.tar.gz").exists()  # removed after extraction
    man = Manifest.load(tmp_path / "GTZAN")
    assert man.sources == {"genres.tar.gz": "complete"} and set(man.files) == set(rep.installed)


def test_gtzan_with_the_pinned_md5_refuses_a_different_tarball(server, tmp_path):
    server.files["/sound/genres.tar.gz"] = _tar_gz({"genres/blues/blues.00000.au": b"not the real GTZAN"})
    res = _cli("data", "download", "gtzan", "--data-dir", str(tmp_path), "--mirror", server.base, "--quiet")
    assert res.returncode == 1
    assert "5b3d6dddb579ab49814ab86dba69e7c7" in res.stdout + res.stderr
    root = tmp_path / "GTZAN"
    assert not (root / "genres").exists() and not (root / "genres_original").exists()
    assert [p.name for p in (root / ".marble" / "downloads").iterdir()] == []


def test_mtt_multipart_zip_is_joined_and_extracted(server, tmp_path):
    from marble.datasets.splitfiles import read_table

    split = read_table("mtt.tsv")
    names = [split.loc[split["split"] == sp, "mp3_path"].iloc[0] for sp in ("train", "valid")]
    clips = {name: _mp3_bytes(i) for i, name in enumerate(names)}
    unused = "6/norine_braun-now_and_zen-08-gently-117-146.mp3"  # one of the 3 unreadable clips the split leaves out
    assert unused not in set(split["mp3_path"])
    blob = _zip(clips | {unused: b"unreadable"})
    third = len(blob) // 3
    for i, chunk in enumerate((blob[:third], blob[third:2 * third], blob[2 * third:]), 1):
        server.files[f"/datasets/magnatagatune/mp3.zip.00{i}"] = chunk
    server.files["/datasets/magnatagatune/annotations_final.csv"] = b'"clip_id"\t"mp3_path"\n'
    res = _cli("data", "download", "mtt", "--data-dir", str(tmp_path), "--mirror", server.base, "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    for name, data in clips.items():
        assert (tmp_path / "MTT" / "mp3" / name).read_bytes() == data
    assert not (tmp_path / "MTT" / "mp3" / unused).exists()
    assert (tmp_path / "MTT" / "annotations_final.csv").exists()
    assert list((tmp_path / "MTT" / ".marble" / "downloads").iterdir()) == []


def test_mtg_keeps_only_the_tracks_the_task_needs(server, tmp_path):
    from marble.fetch.recipes import mtg_tracks

    wanted = sorted(t for t in mtg_tracks("mtg-moodtheme") if t.split("/")[1] == "00")[:2]
    members = {t.split("/", 1)[1]: _mp3_bytes(i) for i, t in enumerate(wanted)}
    members["00/99999900.low.mp3"] = _mp3_bytes(9)  # a track no moodtheme split lists
    blob = _tar_gz(members)
    server.files["/documentation/datasets/mtg-jamendo/autotagging_moodtheme/audio-low/autotagging_moodtheme_audio-low-00.tar"] = blob
    published = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
    recipe = _with_checksums(RECIPES["mtg"], lambda s: dataclasses.replace(
        s, parts=(dataclasses.replace(s.parts[0], checksum=_sha(blob)),), member_sha256=lambda: published))
    only_00 = dataclasses.replace(recipe, sources_fn=lambda t: recipe.sources_fn(t)[:1])
    rep = install(only_00, tmp_path, ["mtg-moodtheme"], mirror=server.base, quiet=True)
    assert sorted(rep.installed) == wanted
    assert not (tmp_path / "MTG" / "audio-low" / "00" / "99999900.low.mp3").exists()
    # a member that does not match its published sha256 aborts the archive: nothing of it is installed
    published[wanted[0].split("/", 1)[1]] = "0" * 64
    (tmp_path / "MTG" / wanted[0]).unlink()
    (tmp_path / "MTG" / wanted[1]).unlink()
    rep = install(only_00, tmp_path, ["mtg-moodtheme"], mirror=server.base, quiet=True, log=lambda m: None)
    assert rep.failed and "published one" in rep.failed[0]
    assert not (tmp_path / "MTG" / "audio-low" / "00").exists() or not any((tmp_path / "MTG" / "audio-low" / "00").iterdir())


def test_vocalset_zip_is_found_below_its_top_folder(server, tmp_path):
    members = {"VocalSet11/FULL/f1/scales/straight/f1_scales_straight_a.wav": _wav_bytes(seed=1),
               "VocalSet11/FULL/m3/arpeggios/belt/m3_arpeggios_belt_e.wav": _wav_bytes(seed=2),
               "__MACOSX/VocalSet11/FULL/._junk.wav": b"junk", "VocalSet11/README.txt": b"readme"}
    blob = _zip(members)
    server.files["/api/records/1442513/files/VocalSet11.zip/content"] = blob
    recipe = _with_checksums(RECIPES["vocalset"], lambda s: dataclasses.replace(
        s, parts=(dataclasses.replace(s.parts[0], size=len(blob), checksum=Checksum("md5", hashlib.md5(blob).hexdigest())),)))
    rep = install(recipe, tmp_path, mirror=server.base, quiet=True)
    assert sorted(rep.installed) == ["FULL/f1/scales/straight/f1_scales_straight_a.wav",
                                     "FULL/m3/arpeggios/belt/m3_arpeggios_belt_e.wav"]
    report = verify(recipe, tmp_path, sample=10)
    assert sorted(report.decoded) == sorted(rep.installed)
    assert {p.kind for p in report.problems.values()} == {"missing"}  # the singers this small zip lacks


def test_archive_member_escaping_the_dataset_folder_is_refused(tmp_path):
    arc = tmp_path / "evil.tar"
    arc.write_bytes(_tar_gz({"../../etc/x.mp3": b"x"}))
    with pytest.raises(DownloadError, match="would leave the dataset folder"):
        archives.extract(arc, "tar", tmp_path / "root", mapper=lambda m: m)
    assert not (tmp_path / "etc").exists()


def test_wav_truncation_is_read_from_the_header(tmp_path):
    p = tmp_path / "a.wav"
    p.write_bytes(_wav_bytes())
    assert wav_truncation(p) is None
    p.write_bytes(p.read_bytes()[:-100])
    assert "its header announces" in wav_truncation(p)


# -- the CLI end to end: EMO with its real (checksum-less) recipe through --mirror -----------------------
def test_download_verify_and_fix_only_the_damaged_files(server, tmp_path):
    clips = {f"clips_45seconds/{uid}.mp3": _mp3_bytes(uid, seconds=2.0) for uid in (2, 3, 4)}
    server.files["/databases/emoMusic/clips_45sec.tar.gz"] = _tar_gz(clips)
    data = str(tmp_path)
    res = _cli("data", "download", "emo", "--data-dir", data, "--mirror", server.base, "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 files installed" in res.stdout
    root = tmp_path / "EMO"
    for name, b in clips.items():
        assert (root / name).read_bytes() == b

    res = _cli("data", "verify", "emo", "--data-dir", data)
    assert res.returncode == 1  # 741 of the 744 clips are not in this small archive
    assert "missing: 741" in res.stdout and "deleted" not in res.stdout and "truncated" not in res.stdout

    (root / "clips_45seconds/2.mp3").unlink()
    damaged = root / "clips_45seconds/3.mp3"
    damaged.write_bytes(clips["clips_45seconds/3.mp3"][:1000])
    intact = root / "clips_45seconds/4.mp3"
    before = intact.stat()
    res = _cli("data", "verify", "emo", "--data-dir", data)
    assert res.returncode == 1
    assert "deleted: 1\n    clips_45seconds/2.mp3" in res.stdout
    assert "truncated: 1\n    clips_45seconds/3.mp3 (1000 bytes" in res.stdout

    n_requests = len(server.log)
    res = _cli("data", "verify", "emo", "--data-dir", data, "--fix", "--mirror", server.base)
    assert "fix: 2 files fetched" in res.stdout, res.stdout + res.stderr
    # the one archive, and (no size is pinned for it) its last byte asked again to confirm the length
    tgz = "/databases/emoMusic/clips_45sec.tar.gz"
    assert server.log[n_requests:] == [(tgz, None, 200), (tgz, f"bytes={len(server.files[tgz]) - 1}-", 206)]
    for name, b in clips.items():
        assert (root / name).read_bytes() == b
    after = intact.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "an intact file was rewritten"
    res = _cli("data", "verify", "emo", "--data-dir", data)
    assert "deleted" not in res.stdout and "truncated" not in res.stdout and "missing: 741" in res.stdout


def test_gs_per_file_md5s_fix_refetches_only_the_bad_files(server, tmp_path):
    """GiantSteps: one HTTP file per song with a published md5. Serve three real-shaped songs under their
    official paths with md5s pinned to the fixture, then repair a corrupt one."""
    recipe0 = RECIPES["gs"]
    srcs = recipe0.sources()[:3]
    payload = {s.target: _mp3_bytes(i) for i, s in enumerate(srcs)}
    for s in srcs:
        server.files[http.urllib.parse.urlsplit(s.parts[0].url).path] = payload[s.target]
    fixed = [dataclasses.replace(s, parts=(dataclasses.replace(s.parts[0], checksum=Checksum("md5", hashlib.md5(payload[s.target]).hexdigest())),))
             for s in srcs]
    recipe = dataclasses.replace(recipe0, sources_fn=lambda t: fixed,
                                 file_checksums_fn=lambda: {s.target: s.parts[0].checksum for s in fixed})
    rep = install(recipe, tmp_path, mirror=server.base, quiet=True)
    assert sorted(rep.installed) == sorted(payload)
    bad = tmp_path / "GS" / srcs[1].target
    bad.write_bytes(b"\0" * len(payload[srcs[1].target]))  # same size, wrong bytes
    report = verify(recipe, tmp_path, sample=0, deep=True)
    assert [p.rel for p in report.by_kind("corrupt")] == [srcs[1].target]
    n = len(server.log)
    bad.unlink()
    install(recipe, tmp_path, mirror=server.base, only={srcs[1].target}, quiet=True)
    assert [p for p, _, _ in server.log[n:]] == [http.urllib.parse.urlsplit(srcs[1].parts[0].url).path]
    assert bad.read_bytes() == payload[srcs[1].target]


# -- recipes -------------------------------------------------------------------------------------------
def test_every_dataset_has_a_recipe_with_source_size_and_licence():
    from marble.registry import all_cards

    assert sorted(RECIPES) == ["emo", "gs", "gtzan", "mtg", "mtt", "musdb", "nsynth", "vocalset"]
    covered = {t for r in RECIPES.values() for t in r.tasks}
    assert covered == set(all_cards())  # the 14 built-in tasks
    readme = (ROOT / "README.md").read_text()
    for r in RECIPES.values():
        assert r.urls(), r.name
        assert r.licence and r.size and r.provenance
        assert f"`{r.name}`" in readme, f"README data section lacks {r.name}"
    assert all(isinstance(s, Source) for s in RECIPES["mtg"].sources(frozenset({"mtg-moodtheme"})))


def test_pinned_lists_match_their_sources():
    from marble.fetch.recipes import DATA, _sha_list

    gs = json.loads(gzip.open(DATA / "giantsteps.json.gz").read())
    assert len(gs) == 2090 and all(len(a["checksum"]) == 32 for a in gs.values())
    assert len(RECIPES["gs"].sources()) == 1763  # the songs of gs.tsv: 923 + 236 + 604
    for name in ("raw_30s", "autotagging_moodtheme"):
        tars = _sha_list(DATA / f"mtg_{name}_audio-low_sha256_tars.txt")
        assert len(tars) == 100 and all(len(v) == 64 for v in tars.values())
    mood = RECIPES["mtg"].sources(frozenset({"mtg-moodtheme"}))
    assert sum(len(s.provides) for s in mood) == 17982
    assert all("autotagging_moodtheme" in s.parts[0].url for s in mood)
    assert sum(len(s.provides) for s in RECIPES["mtg"].sources()) == 55525


def test_check_all_prints_every_source_url(tmp_path):
    res = _cli("data", "check", "all", "--data-dir", str(tmp_path))
    assert res.returncode == 1
    for r in RECIPES.values():
        assert r.urls()[0] in res.stdout, r.name
    assert RECIPES["gtzan"].urls()[1] in res.stdout  # gtzan-beat's GTZAN-Rhythm annotations


def test_manual_dataset_prints_instructions(tmp_path):
    res = _cli("data", "download", "musdb", "--data-dir", str(tmp_path))
    assert res.returncode == 1
    assert "https://zenodo.org/records/1117372" in res.stdout and "request access" in res.stdout
    res = _cli("data", "download", "no-such-dataset")
    assert res.returncode == 2 and res.stderr.startswith("error: unknown task or dataset 'no-such-dataset'")


def test_verify_accepts_a_users_copy_of_an_access_request_dataset(tmp_path):
    """MUSDB18 cannot be downloaded for the user: verify reads their copy (no manifest) and finds a WAV cut
    short from its header; --fix prints the access steps and deletes nothing."""
    from marble.testing.fixtures import write_musdb

    write_musdb(tmp_path, per_split=1, seconds=1.0)
    root = tmp_path / "MUSDB18"
    wavs = sorted(root.glob("*/*/vocals.wav"))
    res = _cli("data", "verify", "musdb", "--data-dir", str(tmp_path), "--sample", "50")
    assert res.returncode == 1  # a 3-track copy is not the 150-track dataset
    assert "truncated" not in res.stdout and "corrupt" not in res.stdout
    assert f"{5 * 3} files present" in res.stdout and "test 1/50" in res.stdout
    cut = wavs[0]
    cut.write_bytes(cut.read_bytes()[:2000])
    res = _cli("data", "verify", "musdb", "--data-dir", str(tmp_path), "--fix")
    rel = cut.relative_to(root).as_posix()
    assert f"truncated: 1\n    {rel} (2000 bytes, its header announces" in res.stdout
    assert "request access at https://zenodo.org/records/1117372" in res.stdout
    assert cut.stat().st_size == 2000  # the user's file is left for them to replace


def test_a_damaged_archive_installs_nothing(tmp_path):
    """An archive that ends early (a cut download kept by hand, a bad mirror) is read to the end before
    anything moves into place: no member appears under the dataset root, the staging folder is gone."""
    blob = _tar_gz({f"clips_45seconds/{i}.mp3": _blob(40_000, i) for i in range(5)})
    arc = tmp_path / "clips_45sec.tar.gz"
    arc.write_bytes(blob[: int(len(blob) * 0.7)])
    root = tmp_path / "EMO"
    with pytest.raises(DownloadError, match="damaged archive"):
        archives.extract(arc, "tar", root, mapper=lambda m: m)
    assert [p for p in root.rglob("*") if p.is_file()] == []
    assert not any((root / ".marble").glob("staging-*"))


def test_a_task_fetches_only_its_sources():
    from marble.fetch.install import _needed

    gtzan = RECIPES["gtzan"]
    assert [s.name for s in gtzan.sources(frozenset({"gtzan"}))] == ["genres.tar.gz"]
    assert [s.name for s in gtzan.sources(frozenset({"gtzan-beat"}))] == ["genres.tar.gz", "GTZAN-Rhythm_v2.tar.gz"]
    # --fix of one NSynth file needs the archive of its split only, and only that file from it
    man = Manifest(Path("/nonexistent/manifest.json"))
    only = {"nsynth-valid/audio/bass_electronic_018-022-100.wav"}
    needs = {s.name: _needed(s, Path("/nonexistent"), man, only) for s in RECIPES["nsynth"].sources()}
    assert needs == {"nsynth-train.jsonwav.tar.gz": set(), "nsynth-valid.jsonwav.tar.gz": only,
                     "nsynth-test.jsonwav.tar.gz": set()}
    # MTG: one task's tracks only; every kept track is listed by that task's split-0
    from marble.fetch.recipes import mtg_tracks

    genre = RECIPES["mtg"].sources(frozenset({"mtg-genre"}))
    kept = set().union(*(s.provides for s in genre))
    assert kept == mtg_tracks("mtg-genre") and len(kept) == 32572 + 11043 + 11479  # split-0 genre rows


def test_archive_you_already_have_is_installed_in_the_official_layout(tmp_path):
    """--archive: MUSDB18-HQ zip (with a top folder) after the access request; the Kaggle GTZAN zip; a file
    carrying an official name must match its pinned checksum."""
    from marble.testing.fixtures import write_musdb

    src = tmp_path / "src"
    write_musdb(src, per_split=1, seconds=1.0)
    members = {f"musdb18hq/{p.relative_to(src / 'MUSDB18').as_posix()}": p.read_bytes()
               for p in sorted((src / "MUSDB18").rglob("*.wav"))}
    (tmp_path / "musdb18hq.zip").write_bytes(_zip(members | {"musdb18hq/README.md": b"x"}))
    data = tmp_path / "data"
    res = _cli("data", "download", "musdb", "--data-dir", str(data), "--archive", str(tmp_path / "musdb18hq.zip"))
    assert res.returncode == 0, res.stdout + res.stderr
    for name, b in members.items():
        assert (data / "MUSDB18" / name.split("/", 1)[1]).read_bytes() == b
    res = _cli("data", "verify", "musdb", "--data-dir", str(data))
    assert "15 files present" in res.stdout and "truncated" not in res.stdout and "corrupt" not in res.stdout

    kaggle = {"Data/genres_original/blues/blues.00000.wav": _wav_bytes(seed=3),
              "Data/images_original/blues/blues00000.png": b"png", "Data/features_30_sec.csv": b"a,b"}
    (tmp_path / "gtzan-dataset-music-genre-classification.zip").write_bytes(_zip(kaggle))
    res = _cli("data", "download", "gtzan", "--data-dir", str(data), "--archive",
               str(tmp_path / "gtzan-dataset-music-genre-classification.zip"))
    assert res.returncode == 0, res.stdout + res.stderr
    # installed in the README's layout (genres_original/), which the loader reads
    got = data / "GTZAN/genres_original/blues/blues.00000.wav"
    assert got.read_bytes() == kaggle["Data/genres_original/blues/blues.00000.wav"]
    assert sorted(p.name for p in (data / "GTZAN").rglob("*.wav")) == ["blues.00000.wav"]
    from marble.datasets import get_dataset
    from marble.registry import get_card

    assert get_dataset(get_card("gtzan"), data).check().splits[1].found == 1  # blues.00000 is in valid

    (tmp_path / "genres.tar.gz").write_bytes(_tar_gz({"genres/jazz/jazz.00001.au": b"not GTZAN"}))
    res = _cli("data", "download", "gtzan", "--data-dir", str(data), "--archive", str(tmp_path / "genres.tar.gz"))
    assert res.returncode == 2 and "it is not the official file" in res.stderr
    assert not (data / "GTZAN/genres_original/jazz").exists()
