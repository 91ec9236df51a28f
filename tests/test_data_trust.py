"""What a hostile or broken server, archive or data folder gets from ``marble data download/verify``
(issue 22 items 3 and 5 and the download partials; issue 23 items 7 and 13).

Each case runs the real command against a loopback HTTP server (``download_fixtures.Server``, bound to
127.0.0.1, stopped at the end and by a watchdog) with EMO's real recipe, whose archive has no pinned
checksum: the hardest case, where nothing but marble's own checks stands between a bad file and the
dataset folder. ``localhost`` (the same loopback server under another host name) plays the other host of
a redirect. No test contacts any other address.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from marble.fetch import http
from marble.fetch.http import Checksum, UnreachableError, download
from marble.fetch.install import Manifest, install
from marble.fetch.recipes import RECIPES
from tests.download_fixtures import ROOT, Server, blob, cli, cli_as, mp3_bytes, sha, tar_gz, unprivileged

EMO_TGZ = "/databases/emoMusic/clips_45sec.tar.gz"
PART = Path(".marble/downloads/clips_45sec.tar.gz.part")


@pytest.fixture
def server():
    with Server() as s:
        yield s


def _serve_emo(server, uids=(2, 3), seconds=1.0) -> dict[str, bytes]:
    clips = {f"clips_45seconds/{u}.mp3": mp3_bytes(u, seconds=seconds) for u in uids}
    server.files[EMO_TGZ] = tar_gz(clips)
    return clips


def _installed(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "clips_45seconds").glob("*"))}


def _record(path: Path, url: str, total: int, etag: str | None = None) -> None:
    """The record a part is resumed on (``<dest>.part.json``), as ``download`` writes it."""
    path.write_text(json.dumps({"url": url, "total": total, "etag": etag, "modified": None}))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- issue 22 item 3: a leftover or planted .part is never installed as the download -----------------------
def test_a_planted_part_larger_than_the_file_is_discarded_not_installed(server, tmp_path):
    clips = _serve_emo(server)
    server.etags[EMO_TGZ] = '"v1"'
    planted = tar_gz({f"clips_45seconds/{u}.mp3": mp3_bytes(10 + u, seconds=3.0) for u in (2, 3, 4)})
    assert len(planted) > len(server.files[EMO_TGZ])  # so the server answers a resume with 416
    root = tmp_path / "EMO"
    (root / PART).parent.mkdir(parents=True)
    (root / PART).write_bytes(planted)
    # with a record claiming this URL and the server's ETag: the strongest a planted part can look
    _record(root / f"{PART}.json", server.base + EMO_TGZ, len(planted), '"v1"')
    res = cli("data", "download", "emo", "--data-dir", str(tmp_path), "--mirror", server.base, "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _installed(root) == clips  # the server's clips, not the planted ones (4.mp3 was only in the part)
    assert server.requests(EMO_TGZ)[:2] == [(f"bytes={len(planted) - 1}-", 416), (None, 200)]
    man = Manifest.load(root)
    assert {r: m["sha256"] for r, m in man.files.items()} == {r: hashlib.sha256(b).hexdigest() for r, b in clips.items()}
    res = cli("data", "verify", "emo", "--data-dir", str(tmp_path), "--deep")
    assert "corrupt" not in res.stdout and "2 hashed" in res.stdout


def test_a_part_with_no_record_or_starting_with_junk_is_not_resumed(server, tmp_path):
    """A leftover part nothing vouches for is discarded; before, the junk was resumed, installed as the
    archive, failed to extract, and (kept under its final name) failed the same way on every rerun."""
    clips = _serve_emo(server)
    root = tmp_path / "EMO"
    (root / PART).parent.mkdir(parents=True)
    (root / PART).write_bytes(b"junk" * 1000)
    res = cli("data", "download", "emo", "--data-dir", str(tmp_path), "--mirror", server.base, "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _installed(root) == clips
    assert server.requests(EMO_TGZ)[0] == (None, 200)
    assert list((root / ".marble" / "downloads").iterdir()) == []


def test_resume_is_checked_against_size_validators_and_the_overlap_byte(server, tmp_path):
    data = blob(300_000, 7)
    url, path = f"{server.base}/d/f.bin", "/d/f.bin"
    server.files[path] = data
    server.etags[path] = '"a"'
    dest = tmp_path / "f.bin"
    part, meta = tmp_path / "f.bin.part", tmp_path / "f.bin.part.json"

    def plant(content: bytes, total: int = len(data), etag: str = '"a"'):
        part.write_bytes(content)
        _record(meta, url, total, etag)
        dest.unlink(missing_ok=True)
        server.log.clear()

    plant(data[:100_000])  # a genuine part: resumed from one byte before its end
    assert download(url, dest, quiet=True).path.read_bytes() == data
    assert server.requests(path)[0] == ("bytes=99999-", 206) and not meta.exists()

    plant(data[:100_000], etag='"old"')  # the file changed since: If-Range gets the whole file
    assert download(url, dest, quiet=True).path.read_bytes() == data
    assert server.requests(path)[0] == ("bytes=99999-", 200)

    plant(data[:99_999] + b"X")  # the part's last byte is not the file's: start over
    assert download(url, dest, quiet=True).path.read_bytes() == data
    assert server.requests(path)[:2] == [("bytes=99999-", 206), (None, 200)]

    plant(data[:100_000], total=len(data) + 5)  # recorded for a file of another size: start over
    assert download(url, dest, quiet=True).path.read_bytes() == data
    assert server.requests(path)[:2] == [("bytes=99999-", 206), (None, 200)]

    plant(data[:100_000])  # a pinned size the record disagrees with: start over, then the size check
    with pytest.raises(http.ChecksumError, match="expected 300001"):
        download(url, dest, size=len(data) + 1, quiet=True)
    assert not part.exists() and not dest.exists()


def test_a_file_nothing_vouches_for_is_replaced_only_by_a_verified_download(server, tmp_path):
    dest = tmp_path / "annotations_final.csv"
    dest.write_bytes(b"a copy of unknown origin")
    with pytest.raises(UnreachableError):
        download(f"http://127.0.0.1:{_closed_port()}/a.csv", dest, retries=0, quiet=True)
    assert dest.read_bytes() == b"a copy of unknown origin"  # a failed download loses nothing
    server.files["/a.csv"] = b"clip_id\tmp3_path\n"
    got = download(f"{server.base}/a.csv", dest, quiet=True)
    assert dest.read_bytes() == b"clip_id\tmp3_path\n" and server.requests("/a.csv")[0] == (None, 200)
    n = len(server.log)
    assert download(f"{server.base}/a.csv", dest, reuse_sha256=got.sha256, quiet=True).sha256 == got.sha256
    assert len(server.log) == n  # the recorded digest matches: kept, not fetched again


# -- issue 22 item 5: verify --fix deletes and writes only inside the dataset folder ---------------------
def test_verify_fix_never_deletes_or_writes_through_a_link_out_of_the_folder(server, tmp_path):
    _serve_emo(server)
    data = tmp_path / "data"
    res = cli("data", "download", "emo", "--data-dir", str(data), "--mirror", server.base, "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    root = data / "EMO"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.mp3").write_bytes(b"precious")
    (outside / "victim2.mp3").write_bytes(b"precious too")
    (root / "evil").symlink_to(outside)
    man = json.loads((root / ".marble/manifest.json").read_text())
    # sizes that differ: 'corrupt' to verify (an entry that climbs out by name is not even looked at)
    for rel in ("evil/victim.mp3", "../../outside/victim2.mp3"):
        man["files"][rel] = {"size": 1, "sha256": "0" * 64, "source": "clips_45sec.tar.gz"}
    (root / ".marble/manifest.json").write_text(json.dumps(man))

    res = cli("data", "verify", "emo", "--data-dir", str(data), "--fix", "--mirror", server.base)
    assert (outside / "victim.mp3").read_bytes() == b"precious"
    assert (outside / "victim2.mp3").read_bytes() == b"precious too"
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"refused: evil/victim.mp3: leads to {outside.resolve() / 'victim.mp3'}, outside the dataset folder" in res.stdout

    # a folder of the layout that is a link out of the dataset folder is not written through either
    data2, elsewhere = tmp_path / "data2", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (data2 / "EMO").mkdir(parents=True)
    (data2 / "EMO" / "clips_45seconds").symlink_to(elsewhere)
    res = cli("data", "download", "emo", "--data-dir", str(data2), "--mirror", server.base, "--quiet")
    assert res.returncode == 1 and "outside the dataset folder" in res.stdout + res.stderr
    assert list(elsewhere.iterdir()) == []


# -- issue 22 partials -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mirror", ["http://[::1", "not a url", "", "ftp://host/x"])
def test_a_mirror_that_is_not_an_http_url_is_an_error_line(tmp_path, mirror):
    for cmd in (["download", "emo"], ["verify", "emo", "--fix"]):
        res = cli("data", *cmd, "--data-dir", str(tmp_path), "--mirror", mirror)
        assert res.returncode == 2 and res.stderr.startswith(f"error: --mirror {mirror!r}: "), res.stderr
        assert "Traceback" not in res.stderr and "http://mirror.lab/marble" in res.stderr
    assert not (tmp_path / "EMO").exists()


def test_download_into_a_read_only_folder_is_an_error_line(server, tmp_path):
    prefix = unprivileged()
    _serve_emo(server)
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o555)
    try:
        res = cli_as(prefix, "data", "download", "emo", "--data-dir", str(data), "--mirror", server.base, "--quiet")
    finally:
        data.chmod(0o755)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(f"error: {data}: cannot write (Permission denied); choose a --data-dir you can write")
    assert server.log == []


def test_a_second_download_of_the_same_dataset_waits_for_the_first(server, tmp_path):
    from marble.locks import exclusive

    clips = _serve_emo(server)
    root = tmp_path / "EMO"
    lock = exclusive(root / ".marble" / "lock", lambda pid: None)  # as a first download holds it
    p = subprocess.Popen([sys.executable, "-m", "marble", "data", "download", "emo", "--data-dir", str(tmp_path),
                          "--mirror", server.base, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    try:
        first = p.stderr.readline()  # blocks until the second download says it waits (or ends)
        assert f"{root}: another marble download (pid {os.getpid()}) is working on this dataset" in first
        assert server.log == [] and not (root / "clips_45seconds").exists()
    finally:
        lock.close()
        out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    assert _installed(root) == clips


def test_a_redirect_to_another_host_is_named_and_refused_without_a_pinned_checksum(server, tmp_path):
    clips = _serve_emo(server)
    other = server.base.replace("127.0.0.1", "localhost")
    server.files["/elsewhere/clips.tar.gz"] = server.files.pop(EMO_TGZ)
    server.redirects[EMO_TGZ] = f"{other}/elsewhere/clips.tar.gz"
    args = ["data", "download", "emo", "--data-dir", str(tmp_path), "--mirror", server.base, "--quiet"]
    res = cli(*args)
    assert res.returncode == 1
    assert "the server redirects to another host, localhost" in res.stderr and "--allow-redirects" in res.stderr
    assert not (tmp_path / "EMO" / "clips_45seconds").exists()
    res = cli(*args, "--allow-redirects")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "redirected to another host, localhost" in res.stderr
    assert _installed(tmp_path / "EMO") == clips
    # a file with a pinned checksum follows it (the checksum vouches for the bytes), and names the host
    said = []
    got = download(f"{server.base}{EMO_TGZ}", tmp_path / "x.tgz", checksum=sha(server.files["/elsewhere/clips.tar.gz"]),
                   quiet=True, log=said.append)
    assert got.size == len(server.files["/elsewhere/clips.tar.gz"]) and said == [
        f"{server.base}{EMO_TGZ}: redirected to another host, localhost"]


def test_a_content_length_short_of_the_file_is_not_installed_short(server, tmp_path):
    clips = _serve_emo(server)
    n = len(server.files[EMO_TGZ])
    server.short[EMO_TGZ] = 3000  # a full answer announces (and sends) 3 000 bytes less than the file
    res = cli("data", "download", "emo", "--data-dir", str(tmp_path), "--mirror", server.base, "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _installed(tmp_path / "EMO") == clips
    # the last byte asked again reveals the true length; the rest is resumed, then confirmed
    assert server.requests(EMO_TGZ) == [(None, 200), (f"bytes={n - 3001}-", 206), (f"bytes={n - 3001}-", 206),
                                        (f"bytes={n - 1}-", 206)]


def test_an_archive_expanding_past_the_datasets_size_is_refused(server, tmp_path):
    """A 32 MiB 'clip' in 33 kB (the issue's was 256 MiB from 323 kB): an EMO clip is 45 s of mp3, at most
    ~2.3 MB with the margin, so it is refused before a byte of it is written, and the download, which no
    checksum vouches for, is dropped."""
    server.files[EMO_TGZ] = tar_gz({"clips_45seconds/2.mp3": b"\0" * (32 << 20)})
    assert len(server.files[EMO_TGZ]) < 100_000
    res = cli("data", "download", "emo", "--data-dir", str(tmp_path), "--mirror", server.base, "--quiet")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "member clips_45seconds/2.mp3 declares 33,554,432 bytes, more than the 2,250,000 one file may have" in res.stderr
    root = tmp_path / "EMO"
    assert not (root / "clips_45seconds").exists() and not list((root / ".marble").glob("staging-*"))
    assert list((root / ".marble" / "downloads").iterdir()) == []

    # the total: members each within the ceiling that together pass the archive's
    from marble.fetch.archives import Limit

    server.files[EMO_TGZ] = tar_gz({f"clips_45seconds/{u}.mp3": blob(400_000, u) for u in (2, 3, 4)})
    emo = RECIPES["emo"]
    small = dataclasses.replace(emo, sources_fn=lambda t: [dataclasses.replace(s, limit=Limit(500_000, 1_000_000))
                                                           for s in emo.sources_fn(t)])
    rep = install(small, tmp_path, mirror=server.base, quiet=True, log=lambda m: None)
    assert len(rep.failed) == 1 and "takes the archive past 1,000,000 bytes" in rep.failed[0]
    assert not (root / "clips_45seconds").exists()

    # every archive a recipe fetches or accepts is bounded, above what the dataset is published to hold
    for r in RECIPES.values():
        for s in r.sources() + list(r.local_sources):
            assert s.kind == "file" or s.limit, (r.name, s.name)
    assert sum(s.limit.total for s in RECIPES["nsynth"].sources()) > 305979 * 128044
    assert RECIPES["vocalset"].sources()[0].limit.total > 2077243579  # the zip's own size


def test_a_part_owned_by_another_user_says_what_to_do(server, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    prefix = unprivileged()
    _serve_emo(server)
    tgz = server.files[EMO_TGZ]
    root = tmp_path / "EMO"
    downloads = root / ".marble" / "downloads"
    downloads.mkdir(parents=True)
    (root / PART).write_bytes(tgz[:1000])
    _record(root / f"{PART}.json", server.base + EMO_TGZ, len(tgz))
    for p in (downloads, root / PART, root / f"{PART}.json"):
        os.chown(p, 65534, 65534)
    downloads.chmod(0o1777)  # a shared folder: only a file's owner may delete it
    res = cli_as(prefix, "data", "download", "emo", "--data-dir", str(tmp_path), "--mirror", server.base, "--quiet")
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "Traceback" not in out
    who = __import__("pwd").getpwuid(65534).pw_name
    assert f"{root / PART}: cannot write (Permission denied): it belongs to {who}; ask {who} to finish or delete it" in out
    assert "rerun" not in out.split("failed:")[1].splitlines()[0]


def test_an_unreachable_host_is_named_once_and_not_called_an_interruption(tmp_path):
    """GiantSteps is 1 763 files on one host: the first failure names the host, the others are not tried."""
    mirror = f"http://127.0.0.1:{_closed_port()}"
    res = cli("data", "download", "gs", "--data-dir", str(tmp_path), "--mirror", mirror)
    out = res.stdout + res.stderr
    assert res.returncode == 1
    assert out.count("cannot reach 127.0.0.1") == 1 and "Connection refused" in out
    assert "interrupted" not in out and "resume" not in out
    assert "0 files installed, 0 sources already done, 1763 failed" in res.stdout
    assert "... and 1762 more failed sources, 1762 of them not tried: their host could not be reached" in res.stdout


def test_a_name_that_does_not_resolve_is_named_as_such(tmp_path, monkeypatch):
    def no_such_host(host, *a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(UnreachableError, match=r"cannot reach mirror\.invalid \(.*Name or service not known\); check "
                                               "the network connection and the host name"):
        download("http://mirror.invalid/x.tar.gz", tmp_path / "x", retries=0, quiet=True)
    assert list(tmp_path.iterdir()) == []


# -- issue 23 item 7 -------------------------------------------------------------------------------------
def test_a_damaged_unpinned_archive_is_deleted_so_a_rerun_fetches_it_again(server, tmp_path):
    clips = _serve_emo(server)
    good = server.files[EMO_TGZ]
    server.files[EMO_TGZ] = good[: len(good) * 2 // 3]
    args = ["data", "download", "emo", "--data-dir", str(tmp_path), "--mirror", server.base, "--quiet"]
    res = cli(*args)
    assert res.returncode == 1 and "damaged archive" in res.stderr and "was deleted" in res.stderr
    assert list((tmp_path / "EMO" / ".marble" / "downloads").iterdir()) == []
    server.files[EMO_TGZ] = good  # the host serves the file again
    res = cli(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _installed(tmp_path / "EMO") == clips


def test_gtzan_says_where_else_to_get_it_before_trying_and_each_failure_prints_once(tmp_path):
    mirror = f"http://127.0.0.1:{_closed_port()}"
    res = subprocess.run([sys.executable, "-m", "marble", "data", "download", "gtzan", "--data-dir", str(tmp_path),
                          "--mirror", mirror], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    out = res.stdout
    assert res.returncode == 1
    assert "offline since 2023" in out and out.index("offline since 2023") < out.index("failed: genres.tar.gz")
    assert out.count("cannot reach 127.0.0.1") == 1 and "see the note above" in out


def test_a_moved_install_layout_is_carried_over(server, tmp_path):
    """GTZAN files an earlier marble installed in genres/ move to genres_original/ (the README's layout)
    before a --fix adds to it, so the loader never sees half a dataset in each."""
    root = tmp_path / "GTZAN"
    (root / "genres/blues").mkdir(parents=True)
    (root / "genres/blues/blues.00000.wav").write_bytes(b"x")
    man = Manifest(root / ".marble/manifest.json", {"genres/blues/blues.00000.wav": {"size": 1, "sha256": "0", "source": "s"}})
    man.save()
    server.files["/sound/genres.tar.gz"] = tar_gz({})
    gtz = RECIPES["gtzan"]
    recipe = dataclasses.replace(gtz, sources_fn=lambda t: [dataclasses.replace(
        s, parts=(dataclasses.replace(s.parts[0], checksum=Checksum("md5", hashlib.md5(tar_gz({})).hexdigest())),))
        for s in gtz.sources_fn(t)])
    install(recipe, tmp_path, ["gtzan"], mirror=server.base, quiet=True, log=lambda m: None)
    assert (root / "genres_original/blues/blues.00000.wav").read_bytes() == b"x" and not (root / "genres").exists()
    assert list(Manifest.load(root).files) == ["genres_original/blues/blues.00000.wav"]


# -- issue 23 item 13 ------------------------------------------------------------------------------------
def test_check_all_ends_with_a_summary_and_keeps_absent_splits_short(tmp_path):
    res = cli("data", "check", "all", "--data-dir", str(tmp_path))
    assert res.returncode == 1
    out = res.stdout
    assert "0 of 14 tasks complete" in out and f"get them: marble data download all --data-dir {tmp_path}" in out
    summary = out[out.index("summary"):]
    for task in ("emo", "gs", "mtt", "musdb", "nsynth-pitch", "vocalset-singer"):
        assert f"│ {task} " in summary
    assert "│ emo                │ EMO      │ 0 / 744          │ absent │" in summary
    # an absent split: one example, relative to the dataset folder, and the count of the rest
    assert "  missing (train): clips_45seconds/10.mp3  (and 503 more)\n" in out
    assert sum("missing (" in line for line in out.splitlines()) <= 3 * 14  # one per absent split (5 before)


def test_an_incomplete_split_counts_what_is_missing():
    from marble.datasets import get_dataset
    from marble.datasets.base import DataNotFoundError
    from marble.registry import get_card

    with pytest.raises(DataNotFoundError, match=r"none of the 86 tracks found\n"):
        get_dataset(get_card("musdb"), "/nonexistent").items("train")


# -- issue 23 house: repeated work -------------------------------------------------------------------------
def test_verify_lists_each_split_once(tmp_path, monkeypatch):
    from marble.datasets.emomusic import EmoMusic
    from marble.fetch.verify import verify

    calls = []
    real = EmoMusic.expected
    monkeypatch.setattr(EmoMusic, "expected", lambda self, split: calls.append(split) or real(self, split))
    verify(RECIPES["emo"], tmp_path, sample=0)
    assert sorted(calls) == ["test", "train", "valid"]


def test_a_downloaded_file_is_read_once_to_verify_and_record_it(server, tmp_path, monkeypatch):
    src = RECIPES["gs"].sources()[0]
    payload = mp3_bytes(1)
    server.files[urllib.parse.urlsplit(src.parts[0].url).path] = payload
    fixed = dataclasses.replace(src, parts=(dataclasses.replace(src.parts[0], checksum=Checksum("md5", hashlib.md5(payload).hexdigest())),))
    recipe = dataclasses.replace(RECIPES["gs"], sources_fn=lambda t: [fixed])
    reads = []
    import marble.io

    for mod in (http, marble.io):  # the download is written by fetch.http and hashed by marble.io.file_digests
        monkeypatch.setattr(mod, "open", lambda p, mode="r", *a, **k: reads.append((Path(p).name, mode)) or open(p, mode, *a, **k),
                            raising=False)
    rep = install(recipe, tmp_path, mirror=server.base, quiet=True)
    assert rep.installed == [src.target]
    assert [r for r in reads if r[1] == "rb"] == [(Path(src.target).name + ".part", "rb")]  # md5 and sha256 in one read
    assert Manifest.load(tmp_path / "GS").files[src.target]["sha256"] == hashlib.sha256(payload).hexdigest()

