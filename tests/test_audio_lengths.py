"""A file is held to a length only where it states one (issue 22, item 0).

Complete MP3s from several encoders, with and without a Xing/Info frame, CBR and VBR, untagged, with a ~2 kB ID3v2
tag, with ~150 kB of cover art and with an APE tag, short (0.4 s, 0.86 s), medium (2.5 s) and long (12 s), are read
whole; cut ones are refused where the file states its length (a Xing/Info frame) and read as what is there where it
states none. Ogg (Vorbis, Opus), FLAC and WAV: complete files read (streamed ones too), cut ones refused.
"""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
import audio_fixtures as af  # noqa: E402

from marble.audio import AudioError, info, load  # noqa: E402

SECONDS = (0.4, 0.86, 2.5, 12.0)
MPEG2_FRAME = 576  # samples per MPEG-2 layer III frame (22.05 kHz)


def _tagged(tmp_path: Path, encoder: str, seconds: float) -> tuple[dict[str, Path], np.ndarray]:
    x = af.music(seconds, seed=int(seconds * 100))
    base = af.encode(encoder, x, tmp_path / f"{encoder}-{seconds:g}s.mp3")
    out = {}
    for kind in af.TAGS:
        p = tmp_path / f"{encoder}-{kind}-{seconds:g}s.mp3"
        shutil.copy(base, p)
        out[kind] = af.tag(p, kind)
    return out, x


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("encoder", list(af.ENCODERS))
def test_complete_mp3s_are_read_whole(tmp_path, encoder):
    """Every complete file decodes to its full length: exactly the source where a Xing/LAME frame gives the encoder
    delay and padding, the source plus them (under four frames) where none does. Before the fix a short file with
    an ID3 tag and no Xing frame was refused as truncated (libsndfile's estimate counts the tag as audio), and a VBR
    file without one was cut at libsndfile's estimate (at 12 s: 4.6 s of 12)."""
    stated = af.ENCODERS[encoder][2]
    for seconds in SECONDS:
        files, x = _tagged(tmp_path, encoder, seconds)
        for kind, p in files.items():
            y = load(p)
            where = f"{p.name} ({len(x)} source samples, {len(y)} decoded)"
            if stated:
                assert len(y) == len(x), where
                assert info(p) == (af.SR, len(x)), where
            else:
                assert len(x) <= len(y) < len(x) + 4 * MPEG2_FRAME, where
            assert 0.8 < _rms(y) / _rms(x) < 1.25, where  # the music, not silence or noise
            if stated:  # and in place: the decoded signal matches the source sample for sample (lossy: roughly)
                assert np.corrcoef(x, y)[0, 1] > 0.9, where


@pytest.mark.parametrize("encoder", [e for e, (_, _, stated) in af.ENCODERS.items() if stated])
def test_cut_mp3s_that_state_their_length_are_refused(tmp_path, encoder):
    """A Xing/Info frame states the frame count: a copy cut inside the audio (at 60 % of its audio bytes, and at 90 %
    from 2.5 s on: the 0.25 s lost is more than the two frames of slack), 0.4 s to 12 s, any tag, is refused, naming
    the frame; one cut inside a 150 kB cover-art tag names the tag."""
    for seconds in SECONDS:
        files, _ = _tagged(tmp_path, encoder, seconds)
        for kind, p in files.items():
            for keep in (0.6, 0.9) if seconds >= 2.5 else (0.6,):
                c = af.cut_audio(p, keep)
                with pytest.raises(AudioError, match=r"truncated: decoded .* but its (Xing|Info) frame states"):
                    load(c)
        c = af.cut(files["cover-art"], 0.5)
        with pytest.raises(AudioError, match="truncated: .* but its ID3v2 tag alone declares"):
            load(c)


@pytest.mark.parametrize("encoder", [e for e, (_, _, stated) in af.ENCODERS.items() if not stated])
def test_cut_mp3s_that_state_no_length_read_as_what_is_there(tmp_path, encoder):
    """Without a Xing/Info/VBRI frame an MP3 promises no length: a cut copy cannot be told from a shorter complete
    file, and is read as the frames it holds (README, "Errors and guarantees"; docs/fidelity.md). Its bytes are the
    guard: `marble data verify` checks them against the dataset's published checksums."""
    files, x = _tagged(tmp_path, encoder, 12.0)
    for kind, p in files.items():
        whole = load(p)
        part = load(af.cut_audio(p, 0.5))
        assert 0.4 * len(whole) < len(part) < 0.6 * len(whole), kind
        np.testing.assert_array_equal(part[: len(part) - 2 * MPEG2_FRAME], whole[: len(part) - 2 * MPEG2_FRAME])


@pytest.mark.parametrize("encoder", ["ffmpeg-vbr-noxing", "lame-vbr-noxing"])
def test_a_crop_past_libsndfiles_estimate_is_read(tmp_path, encoder):
    """libsndfile never reads past its frame count; for a VBR file without a Xing frame that count is an estimate at
    the first frame's bitrate, here well short of the file. A crop beyond it is decoded (as a stream), not returned
    empty or short (before the fix: "no audio samples"); a crop before it still goes through libsndfile's seek."""
    files, x = _tagged(tmp_path, encoder, 12.0)
    for kind in ("none", "id3", "ape"):  # (cover art makes the estimate overshoot instead)
        p = files[kind]
        whole = load(p)
        assert sf.info(str(p)).frames < len(whole) - af.SR  # the fixture does what it claims
        late = load(p, offset=9.0, duration=2.0)
        assert len(late) == 2 * af.SR, kind
        np.testing.assert_array_equal(late, whole[9 * af.SR: 11 * af.SR])
        early = load(p, offset=0.5, duration=1.0)
        assert len(early) == af.SR and np.corrcoef(early, whole[af.SR // 2: af.SR // 2 + af.SR])[0, 1] > 0.99


def test_empty_and_non_regular_files_are_named_so(tmp_path):
    """A 0-byte file is an "empty file", not libsndfile's "File does not exist or is not a regular file"."""
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty.mp3: empty file \(0 bytes"):
        load(empty)
    with pytest.raises(AudioError, match="empty file"):
        info(empty)
    (tmp_path / "dir.mp3").mkdir()
    with pytest.raises(AudioError, match="dir.mp3: not a regular file"):
        load(tmp_path / "dir.mp3")


# ---------------------------------------------------------------------------------------------------
# Ogg, FLAC, WAV


def _ogg_pages(data: bytes) -> list[int]:
    """Byte offsets where each Ogg page starts (walked by the page lengths)."""
    out, at = [], 0
    while at < len(data):
        assert data[at:at + 4] == b"OggS"
        out.append(at)
        nseg = data[at + 26]
        at += 27 + nseg + sum(data[at + 27:at + 27 + nseg])
    return out


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_cut_ogg_files_are_refused(tmp_path, subtype):
    """Every complete Ogg stream ends with an end-of-stream page; a cut one does not. Before the fix a cut Ogg file
    was read short without a word: libsndfile then reports the granule position of the last complete page, and
    that much decodes."""
    sr = 48000 if subtype == "OPUS" else af.SR
    x = af.music(6.0, sr=sr)
    p = tmp_path / f"song-{subtype}.ogg"
    sf.write(str(p), x, sr, format="OGG", subtype=subtype)
    assert abs(len(load(p)) - len(x)) <= 0.01 * sr
    data = p.read_bytes()
    pages = _ogg_pages(data)
    cuts = {"mid-page": len(data) * 2 // 3, "page boundary": pages[len(pages) // 2], "last bytes": len(data) - 3}
    for name, n in cuts.items():
        c = tmp_path / f"cut-{name}.ogg"
        c.write_bytes(data[:n])
        with pytest.raises(AudioError, match="truncated: .*end-of-stream"):
            load(c)


def test_real_world_ogg_capture_patterns_are_not_pages(tmp_path):
    """An ``OggS`` inside packet data after the last page is not taken for a cut page (its CRC does not match)."""
    x = af.music(3.0)
    p = tmp_path / "song.ogg"
    sf.write(str(p), x, af.SR, format="OGG", subtype="VORBIS")
    from marble.audioheaders import ogg_truncation

    assert ogg_truncation(p) is None
    q = tmp_path / "junk.ogg"
    q.write_bytes(p.read_bytes() + b"OggS\x00\x04" + bytes(40))  # a stray capture pattern, not a page
    assert "no end-of-stream" not in (ogg_truncation(q) or "")


def test_flac_states_its_length_and_a_streamed_one_is_refused_clearly(tmp_path):
    """FLAC's STREAMINFO states the sample count: a cut file is refused. A FLAC written to a pipe (count 0, unknown)
    cannot be read through soundfile, which seeks after every read (libsndfile refuses that seek): it is refused
    with that reason and the fix, not with "array is too big" (before) or libsndfile's "psf_fseek() failed"."""
    x = af.music(4.0)
    p = tmp_path / "a.flac"
    sf.write(str(p), x, af.SR, subtype="PCM_16")
    np.testing.assert_allclose(load(p), x, atol=1 / 32768)
    with pytest.raises(AudioError, match=p.stem):
        load(af.cut(p, 0.7))
    streamed = tmp_path / "streamed.flac"
    data = bytearray(p.read_bytes())
    # STREAMINFO follows "fLaC" and a 4-byte block header; total samples: the low 36 bits of bytes 13..17 of it
    si = 8
    packed = int.from_bytes(data[si + 13:si + 18], "big")
    assert packed & ((1 << 36) - 1) == len(x)
    data[si + 13:si + 18] = (packed & ~((1 << 36) - 1)).to_bytes(5, "big")
    data[si + 18:si + 34] = bytes(16)  # no MD5 either, as a streaming encoder writes
    streamed.write_bytes(bytes(data))
    assert sf.info(str(streamed)).frames > 1 << 62  # libsndfile: length unknown
    with pytest.raises(AudioError, match=r"gives no sample count .* rewrite it to a file"):
        load(streamed)


def test_a_streamed_wav_states_no_length_and_is_read(tmp_path):
    """A WAV written to a pipe (ffmpeg, sox) cannot go back to fill in its sizes and leaves 0xFFFFFFFF ("unknown");
    before the fix it was refused as truncated ("its header announces 4294967373"). A WAV whose data chunk runs past
    the end is still refused."""
    x = af.music(2.0)
    p = tmp_path / "a.wav"
    sf.write(str(p), x, af.SR, subtype="PCM_16")
    data = bytearray(p.read_bytes())
    at = data.find(b"data")
    struct.pack_into("<I", data, 4, 0xFFFFFFFF)
    struct.pack_into("<I", data, at + 4, 0xFFFFFFFF)
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    np.testing.assert_allclose(load(streamed), x, atol=1 / 32768)
    with pytest.raises(AudioError, match="truncated: .*its header announces"):
        load(af.cut(p, 0.6))


# ---------------------------------------------------------------------------------------------------
# decoder chatter (issue 23, item 6)


def test_decoder_messages_are_collected_not_printed(tmp_path, capfd):
    """libmpg123 writes its warnings to the process's stderr (fd 2), where they break progress bars: ``load`` collects
    them into ``messages`` and nothing reaches the terminal."""
    p, _ = af.mp3(tmp_path, "lame-vbr", "none", 2.5)
    c = af.cut_audio(p, 0.6)
    capfd.readouterr()
    said: list[str] = []
    with pytest.raises(AudioError):
        load(c, messages=said)
    assert any("Xing stream size off" in m for m in said), said
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    said = []
    assert len(load(p, messages=said)) and said == []  # a clean file says nothing
