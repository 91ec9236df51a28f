"""One identity per model: every spelling of a model (relative, ``./``, absolute checkpoint folder,
plug-in file, entry point, hub snapshot) maps to one cache key and a short display name; through the
real CLI each spelling extracts and then probes with no ``--name``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from marble.cache.store import read_manifest
from marble.cli import app
from marble.encoders import load_encoder
from marble.encoders.identity import display_name, identify, model_cache_dir
from marble.results import read_result
from marble.testing.fixtures import write_gtzan
from tests.encoder_ckpts import make_mert_dir, write_plugin_package

PLUGIN_SRC = '''
import torch
from marble.encoders.base import Encoder

class Energy(Encoder):
    """8 kHz, 100 Hz frames: per-frame [mean, rms] through two tiny layers; declares no name."""
    sample_rate = 8000
    frame_rate = 100.0
    num_states = 3
    dim = 2

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def num_frames(self, n):
        return n // 80

    def hidden_states(self, wav, upto=None):
        t = self.num_frames(wav.shape[-1])
        f = wav[:, : t * 80].reshape(wav.shape[0], t, 80)
        states = [torch.stack([f.mean(-1), f.square().mean(-1).sqrt()], -1)]
        for _ in range(self.num_states - 1 if upto is None else upto):
            states.append(torch.tanh(self.lin(states[-1])))
        return torch.stack(states, 1)
'''


def _ok(res):
    assert res.exit_code == 0, f"exit {res.exit_code}\n{res.output}\n{res.exception!r}"
    return res


def test_spellings_of_one_folder_share_one_key(tmp_path, monkeypatch):
    (tmp_path / "models" / "ckpt-100").mkdir(parents=True)
    (tmp_path / "other" / "ckpt-100").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    refs = [identify(s) for s in ("models/ckpt-100", "./models/ckpt-100", str(tmp_path / "models" / "ckpt-100"),
                                  "models/ckpt-100/", "models/../models/ckpt-100")]
    assert {r.kind for r in refs} == {"local-dir"}
    assert len({r.key for r in refs}) == 1 and {r.name for r in refs} == {"ckpt-100"}
    other = identify("other/ckpt-100")
    assert other.name == "ckpt-100" and other.key != refs[0].key  # same folder name, another checkpoint
    home = Path.home()
    rel_home = os.path.relpath(tmp_path / "models" / "ckpt-100", home)
    if not rel_home.startswith(".."):
        assert identify("~/" + rel_home).key == refs[0].key


def test_kinds_and_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "enc.py").write_text(PLUGIN_SRC)
    a, b = identify("enc.py:Energy"), identify(f"{tmp_path}/enc.py:Energy")
    assert a.kind == "plugin-file" and a.key == b.key and a.name == "Energy"
    assert identify("./enc.py:Energy").key == a.key
    assert identify("handcrafted").kind == "builtin" and identify("handcrafted").key == "handcrafted"
    hub = identify("m-a-p/MERT-v1-95M")
    assert (hub.kind, hub.key, hub.name) == ("hub", "m-a-p/MERT-v1-95M", "m-a-p/MERT-v1-95M")
    snap = tmp_path / "hub" / "models--m-a-p--MERT-v1-95M" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    assert identify(str(snap)).key == "m-a-p/MERT-v1-95M"  # a hub cache snapshot is its hub id
    plain = identify("my-model")
    assert (plain.kind, plain.key) == ("name", "my-model")
    assert model_cache_dir(tmp_path, "m-a-p/MERT-v1-95M", "gtzan") == tmp_path / "m-a-p__MERT-v1-95M" / "gtzan"
    assert display_name("enc.py:Energy", {"encoder": {"name": "recorded"}}) == "recorded"
    assert display_name("enc.py:Energy", None) == "Energy"


def test_load_encoder_names_and_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_mert_dir(tmp_path / "models" / "tiny")
    enc = load_encoder("./models/tiny")
    assert enc.name == "tiny" and enc.cache_key == identify("models/tiny").key
    (tmp_path / "enc.py").write_text(PLUGIN_SRC)
    enc = load_encoder("enc.py:Energy")
    assert enc.name == "Energy" and enc.cache_key == identify(str(tmp_path / "enc.py") + ":Energy").key
    toy = load_encoder(str(Path(__file__).parent / "extract_plugin.py") + ":ToyEncoder")
    assert toy.name == "plugins/toy-encoder"  # a name the encoder declares is kept


def _entry_point_site(root: Path) -> Path:
    return write_plugin_package(root / "site", "energy_plugin", PLUGIN_SRC, "energy", "energy_plugin:Energy")


@pytest.fixture(scope="module")
def gtzan_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("idata")
    write_gtzan(data, per_split=2, seconds=1.5)
    return data


SPELLINGS = {
    "relative": ("models/tiny", "tiny"),
    "dot-relative": ("./models/tiny", "tiny"),
    "absolute": ("{root}/models/tiny", "tiny"),
    "plugin-file": ("enc.py:Energy", "Energy"),
    "entry-point": ("energy", "energy"),
}


@pytest.mark.parametrize("how", sorted(SPELLINGS))
def test_cli_extract_then_probe_without_name(how, tmp_path, monkeypatch, gtzan_data):
    """`marble extract --model X` then `marble probe --model X'` where X' is another spelling of X."""
    monkeypatch.chdir(tmp_path)
    make_mert_dir(tmp_path / "models" / "tiny")
    (tmp_path / "enc.py").write_text(PLUGIN_SRC)
    monkeypatch.syspath_prepend(str(_entry_point_site(tmp_path)))
    spec, name = SPELLINGS[how]
    spec = spec.format(root=tmp_path)
    other = {"models/tiny": str(tmp_path / "models" / "tiny"), "./models/tiny": "models/tiny",
             str(tmp_path / "models" / "tiny"): "./models/tiny", "enc.py:Energy": "./enc.py:Energy"}.get(spec, spec)
    runner = CliRunner()
    _ok(runner.invoke(app, ["extract", "--model", spec, "--task", "gtzan", "--data-dir", str(gtzan_data),
                            "--cache-dir", "cache", "--allow-partial", "--num-workers", "0", "-q"]))
    cdir = model_cache_dir("cache", spec, "gtzan")
    assert read_manifest(cdir)["encoder"]["name"] == name
    assert str(tmp_path) not in cdir.name  # the cache folder is short, no path inside
    _ok(runner.invoke(app, ["probe", "--model", other, "--task", "gtzan", "--cache-dir", "cache",
                            "--results-dir", "results", "--max-epochs", "1", "--layers", "0", "--lrs", "1e-3"]))
    result = read_result(tmp_path / "results" / name / "gtzan" / "constrained.json")
    assert result["model"] == name
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [name]
