"""What `marble extract`, `marble probe` and `marble run` say about files they could not use (issue 22 item 0's
silent probe, issue 23 items 6 and 19): one summary line per split with counts by reason (the list goes in the
manifest), decoder chatter collected into the manifest instead of the terminal, and a probe score on part of a
split announced as such, with the count and the reasons, before the score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import audio_fixtures as af  # noqa: E402

from marble.cache import store  # noqa: E402
from marble.results.accounting import coverage, reason_counts, reason_kind  # noqa: E402
from marble.testing.fixtures import write_folder_dataset  # noqa: E402

HERE = Path(__file__).parent
PLUGIN = str(HERE / "extract_plugin.py") + ":ToyEncoder"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}


def _marble(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marble", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A user folder task whose test split also lists four MP3s: a complete 0.86 s note with an ID3 tag and no Xing
    frame (issue 22's case: cached), one with a damaged stretch (libmpg123 complains, it decodes: cached), a cut one
    with a Xing frame (skipped: truncated; libmpg123 warns about it too) and a 0-byte one (skipped: empty file)."""
    card = write_folder_dataset(tmp_path / "data", per_split=3, seconds=1.5, task_id="notes")
    root = tmp_path / "data" / "mydata"
    audio = root / "audio"
    note, _ = af.mp3(tmp_path, "ffmpeg-cbr-noxing", "id3", 1.2)
    note.rename(audio / "test_note.mp3")
    damaged, _ = af.mp3(tmp_path, "lame-cbr-noxing", "none", 1.5, seed=1)
    b = damaged.read_bytes()
    (audio / "test_damaged.mp3").write_bytes(b[: len(b) // 2] + bytes(range(7, 200)) + b[len(b) // 2:])
    whole, _ = af.mp3(tmp_path, "lame-cbr", "id3", 1.5, seed=2)
    af.cut_audio(whole, 0.5).rename(audio / "test_cut.mp3")
    (audio / "test_empty.mp3").write_bytes(b"")
    meta = root / "metadata.csv"
    meta.write_text(meta.read_text() + "".join(f"audio/test_{n}.mp3,{lab},test\n" for n, lab in
                                               (("note", "low"), ("damaged", "mid"), ("cut", "high"), ("empty", "low"))))
    return card, tmp_path / "cache"


@pytest.mark.parametrize("workers", [0, 1])
def test_extract_sums_up_skips_and_keeps_decoder_chatter_off_the_terminal(tmp_path, workers):
    """Before: one "skipped <file>: <reason>" line per file (1,752 lines on a real collection), libmpg123's "Note:
    Illegal Audio-MPEG-Header ..." lines through the progress output, and a 0-byte file skipped as "File does not
    exist or is not a regular file". After: the split's one summary line counts the skips by reason and the
    decoder's lines; both lists are in the manifest."""
    card, cache = _dataset(tmp_path)
    r = _marble("extract", "--model", PLUGIN, "--task", "notes", "--tasks-dir", card.parent, "--data-dir",
                tmp_path / "data", "--cache-dir", cache, "--device", "cpu", "--num-workers", workers)
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert "Illegal Audio-MPEG-Header" not in err and "Note:" not in err, err
    assert "skipped " + str(tmp_path) not in err  # no line per skipped file
    summary = [ln for ln in err.splitlines() if "notes/test:" in ln and "files cached" in ln]
    assert len(summary) == 1, err
    assert ("notes/test: 5 of 7 files cached, 2 skipped (empty file 1, truncated 1); the decoder printed 4 message "
            "line(s) about 2 file(s); see errors and decoder_messages in") in summary[0], summary[0]
    end = [ln for ln in err.splitlines() if ln.startswith("notes/test: 7/7 files in")]
    assert len(end) == 1 and end[0].endswith(", 2 skipped"), err  # the progress counts them too (not a tty: end line)
    d = Path(r.stdout.strip().splitlines()[-1])
    m = store.read_manifest(d)["splits"]["test"]
    reasons = {Path(e["file"]).name: e["reason"] for e in m["errors"]}
    assert set(reasons) == {"test_cut.mp3", "test_empty.mp3"}
    assert reasons["test_empty.mp3"].startswith("empty file (0 bytes")
    assert reasons["test_cut.mp3"].startswith("truncated: decoded")
    said = m["decoder_messages"]
    assert said["n_files"] == 2 and said["n_lines"] == 4  # the damaged file's three lines, the cut one's warning
    by_file = {Path(f["file"]).name: f for f in said["files"]}
    assert by_file["test_damaged.mp3"]["lines"][0].startswith("Note: Illegal Audio-MPEG-Header")
    assert by_file["test_cut.mp3"]["lines"] == ["Warning: Xing stream size off by more than 1%, fuzzy seeking may be "
                                                "even more fuzzy than by design!"]
    for split in ("train", "valid"):
        assert store.read_manifest(d)["splits"][split]["decoder_messages"] == {"n_files": 0, "n_lines": 0, "files": []}


def test_probe_and_run_say_what_they_did_not_score_before_the_score(tmp_path):
    """`marble probe` printed `test accuracy 0.5000` on 12 of 507 test files without a word. Now a line naming the
    split, the counts and the reasons comes before the table and the score (`marble run` likewise)."""
    card, cache = _dataset(tmp_path)
    common = ["--model", PLUGIN, "--task", "notes", "--tasks-dir", card.parent, "--cache-dir", cache, "--device", "cpu"]
    sweep = ["--layers", "0", "--lrs", "1e-3", "--max-epochs", "2"]
    assert _marble("extract", *common, "--data-dir", tmp_path / "data", "-q").returncode == 0
    r = _marble("probe", *common, *sweep, "--results-dir", tmp_path / "results")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    line = "notes test: 5 of 7 listed files scored; 2 not (empty file 1, truncated 1)"
    assert line in " ".join(out.split()), out
    assert out.index("test: 5 of 7") < out.index("selected layer")
    r = _marble("run", *common, *sweep, "--data-dir", tmp_path / "data", "--results-dir", tmp_path / "results2", "-q")
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert "1/1 notes: test: 5 of 7 listed files scored; 2 not (empty file 1, truncated 1)" in err, err
    assert err.index("5 of 7 listed") < err.index("done, test")


def test_coverage_and_reason_counts():
    assert reason_kind("truncated: decoded 0.65 s but the header declares 0.86 s") == "truncated"
    assert reason_kind("cannot decode (LibsndfileError: x)") == "cannot decode"
    assert reason_kind("empty file (0 bytes; an interrupted copy or download?); replace the file") == "empty file"
    entries = [{"reason": "truncated: a"}, {"reason": "truncated: b"}, {"reason": "cannot decode (x)"}]
    assert reason_counts(entries) == "truncated 2, cannot decode 1"
    result = {"data": {"excluded": {"jazz.00054.wav": "corrupt"}, "splits": {
        "train": {"listed": 3, "scored": 3, "skipped": []},
        "valid": {"listed": 4, "scored": 3, "skipped": [{"file": "genres/jazz/jazz.00054.wav", "reason": "corrupt"}]},
        "test": {"listed": 507, "scored": 12, "skipped": [{"file": f"{i}.mp3", "reason": "truncated: x"}
                                                          for i in range(490)]}}}}
    assert coverage(result) == ["valid: 3 of 4 listed files scored; 1 not (excluded by the task card 1)",
                                "test: 12 of 507 listed files scored; 495 not (truncated 490, not scored 5)"]
    assert coverage({"data": {"splits": {"test": {"listed": 5, "scored": 5, "skipped": []}}}}) == []
    json.dumps(result)


@pytest.mark.parametrize("command", ["extract", "probe", "run"])
def test_threads_option_sets_torchs_cpu_threads(tmp_path, command):
    """`--threads N` sets torch's intra-op threads (issue 23 item 19: the default spins on a shared 2-core machine);
    0 is a usage error. Before: no such option (exit 2)."""
    import torch
    from typer.testing import CliRunner

    from marble.cli import app

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        # a task whose data is missing: the command sets its threads, then stops with a clear error (no work)
        res = CliRunner().invoke(app, [command, "--model", PLUGIN, "--task", "gtzan", "--data-dir", str(tmp_path),
                                       "--cache-dir", str(tmp_path / "c"), "--device", "cpu", "--threads", "1"])
        assert "No such option" not in res.output, res.output
        assert torch.get_num_threads() == 1, res.output
        r = _marble(command, "--model", PLUGIN, "--task", "gtzan", "--threads", "0")
        assert r.returncode == 2 and "error: --threads 0: give at least 1" in r.stderr, r.stderr
    finally:
        torch.set_num_threads(before)


def test_metric_caveats_are_one_line_per_task(tmp_path):
    """A multilabel probe whose validation split lacks a label: Python printed a two-line UserWarning (file:line and
    the source line); now the task gets one line naming the caveat once, with how often it came up."""
    card = write_folder_dataset(tmp_path / "data", prediction="multilabel", per_split=3, task_id="tags")
    common = ["--model", PLUGIN, "--task", "tags", "--tasks-dir", card.parent, "--cache-dir", tmp_path / "cache",
              "--device", "cpu"]
    assert _marble("extract", *common, "--data-dir", tmp_path / "data", "-q", "--num-workers", "0").returncode == 0
    r = _marble("probe", *common, "--layers", "0,1", "--lrs", "1e-3", "--max-epochs", "3", "--results-dir",
                tmp_path / "results")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "labels have no positive or no negative example" in ln]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("[marble probe] tags: metric caveats: roc_auc_macro: 1 of 4 labels"), lines[0]
    assert "UserWarning" not in r.stderr and "warnings.warn" not in r.stderr and "select.py" not in r.stderr


def test_summarised_leaves_other_warnings_alone():
    import warnings

    from marble.metrics._common import MetricWarning
    from marble.metrics.notes import summarised

    said = []
    with pytest.warns(DeprecationWarning, match="something else"):
        with summarised("t", said.append):
            for _ in range(3):
                warnings.warn("ap_macro: 2 of 5 labels have no positive", MetricWarning)
            warnings.warn("roc_auc_macro: 2 of 5 labels have no positive", MetricWarning)
            warnings.warn("something else", DeprecationWarning)
    assert said == ["t: metric caveats: ap_macro, roc_auc_macro: 2 of 5 labels have no positive (4 times)"]
