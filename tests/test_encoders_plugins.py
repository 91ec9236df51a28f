"""load_encoder resolution order, user plug-ins (file.py:Class, entry points), the conformance check
and the ``marble models`` CLI."""

from __future__ import annotations


import pytest
import typer
from typer.testing import CliRunner

from marble.encoders import EncoderLoadError, list_encoders, load_encoder
from marble.encoders.check import all_ok, check_encoder
from tests.encoder_ckpts import make_mert_dir, write_plugin_package

GOOD = '''
import torch
from marble.encoders.base import Encoder

class FrameEnergy(Encoder):
    """16 kHz, 50 Hz frames: per-frame [mean, rms, max] through 2 tiny 'layers'."""
    name = "frame-energy"
    sample_rate = 16000
    frame_rate = 50.0
    num_states = 3
    dim = 3

    def __init__(self, device="cpu"):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3).to(device)
        torch.nn.init.eye_(self.lin.weight)

    def num_frames(self, n):
        return n // 320

    def hidden_states(self, wav, upto=None):
        t = self.num_frames(wav.shape[-1])
        f = wav[:, : t * 320].reshape(wav.shape[0], t, 320)
        x = torch.stack([f.mean(-1), f.square().mean(-1).sqrt(), f.amax(-1)], -1)
        states = [x]
        for _ in range(2 if upto is None else upto):
            states.append(torch.tanh(self.lin(states[-1])))
        return torch.stack(states, 1)
'''

# contract violations: num_frames off by one; dropout left active; upto ignored; NaN for long inputs
BROKEN = {
    "frames": GOOD.replace("return n // 320", "return n // 320 + 1"),
    "dropout": GOOD.replace("        states = [x]",
                            "        x = torch.nn.functional.dropout(x, 0.5, training=True)\n        states = [x]"),
    "upto": GOOD.replace("range(2 if upto is None else upto)", "range(2)"),
    "nan": GOOD.replace("        states = [x]", "        x = x * float(\"nan\") if wav.shape[-1] > 20000 else x\n        states = [x]"),
}
EXPECTED_FAIL = {"frames": "shape", "dropout": "determinism", "upto": "upto", "nan": "shape"}

NO_DEVICE = '''
from marble.encoders.handcrafted import HandcraftedEncoder

class Plain(HandcraftedEncoder):
    name = "plain"
    def __init__(self):
        super().__init__()
'''


@pytest.fixture
def plugin_dir(tmp_path):
    (tmp_path / "good_enc.py").write_text(GOOD)
    for k, src in BROKEN.items():
        (tmp_path / f"broken_{k}.py").write_text(src)
    (tmp_path / "plain_enc.py").write_text(NO_DEVICE)
    return tmp_path


def cli():
    from marble.cli.models import register

    app = typer.Typer()

    @app.callback()
    def _root():  # a group, as the real `marble` app is
        pass

    register(app)
    return app


def test_file_plugin_loads_and_conforms(plugin_dir):
    enc = load_encoder(f"{plugin_dir}/good_enc.py:FrameEnergy")
    assert enc.name == "frame-energy" and not enc.training
    results = check_encoder(enc)
    assert all_ok(results), [r for r in results if not r.ok]
    plain = load_encoder(f"{plugin_dir}/plain_enc.py:Plain")  # no `device` argument
    assert plain.name == "plain"


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_plugin_fails_the_check(plugin_dir, kind):
    spec = f"{plugin_dir}/broken_{kind}.py:FrameEnergy"
    results = check_encoder(load_encoder(spec))
    failed = [r.name for r in results if not r.ok]
    assert any(n.startswith(EXPECTED_FAIL[kind]) for n in failed), failed
    assert "attributes" not in failed
    r = CliRunner().invoke(cli(), ["models", "check", spec])
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.output


def test_plugin_errors_are_clear(plugin_dir):
    with pytest.raises(Exception, match="plug-in file not found"):
        load_encoder(f"{plugin_dir}/nope.py:X")
    with pytest.raises(Exception, match="no attribute 'Missing'.*FrameEnergy"):
        load_encoder(f"{plugin_dir}/good_enc.py:Missing")
    with pytest.raises(EncoderLoadError, match="unknown encoder 'no-such-thing'.*built-in.*entry points"):
        load_encoder("no-such-thing")
    (plugin_dir / "empty").mkdir()
    with pytest.raises(EncoderLoadError, match="no config.json"):
        load_encoder(str(plugin_dir / "empty"))


def test_entry_point_plugin(plugin_dir, monkeypatch):
    """A plug-in package installed with an entry point (a real .dist-info on sys.path)."""
    pkg = write_plugin_package(plugin_dir / "site", "my_marble_plugin", GOOD, "frame-energy",
                               "my_marble_plugin:FrameEnergy")
    monkeypatch.syspath_prepend(str(pkg))
    enc = load_encoder("frame-energy")
    assert type(enc).__name__ == "FrameEnergy" and all_ok(check_encoder(enc))
    assert {"name": "frame-energy", "kind": "entry point",
            "description": "my_marble_plugin:FrameEnergy"} in list_encoders()


@pytest.mark.parametrize("pre_ln", [False, True])
def test_check_passes_on_mert_dir(tmp_path, pre_ln):
    d, _ = make_mert_dir(tmp_path / "m", pre_ln=pre_ln)
    results = check_encoder(load_encoder(str(d)))
    assert all_ok(results), [r for r in results if not r.ok]


def test_cli_list_and_check_builtins(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli(), ["models", "list"])
    assert r.exit_code == 0 and "handcrafted" in r.output and "MERT-v1-330M" in r.output
    from marble.encoders import BUILTINS

    for name in BUILTINS:
        r = runner.invoke(cli(), ["models", "check", name])
        assert r.exit_code == 0, r.output
        assert "all checks passed" in r.output
    d, _ = make_mert_dir(tmp_path / "m")
    r = runner.invoke(cli(), ["models", "check", str(d)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli(), ["models", "check", "definitely-not-an-encoder"])
    assert r.exit_code == 2 and "unknown encoder" in r.output
