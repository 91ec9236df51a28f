"""The unconstrained track (marble.finetune) on a tiny random MERT and official-layout fixtures: LoRA starts as
the frozen model and trains only adapters and head (checked against the checkpoint file's bytes, and the saved
adapter against peft's own loader and a float re-computation of the merged weights); full training moves the
transformer and leaves the frozen conv feature encoder as it was; the result is an ordinary sealed result of
track unconstrained; bad input is one error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marble.encoders import load_encoder
from marble.finetune import FinetuneError
from marble.finetune.config import resolve
from marble.finetune.model import TunedModel
from marble.finetune.run import run_finetune
from marble.registry import load_card
from marble.results import result_path
from marble.testing.fixtures import write_folder_dataset
from tests.encoder_ckpts import make_mert_dir

ROOT = Path(__file__).resolve().parent.parent
QUICK = {"max_epochs": 2, "batch_size": 2, "learning_rates": [1e-2], "warmup_ratio": 0.0}


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    mdir, _ = make_mert_dir(root / "tiny-mert")
    card = load_card(write_folder_dataset(root / "data", "multiclass", per_split=4, seconds=1.0))
    return {"root": root, "mert": mdir, "card": card, "data": root / "data"}


def _file_weights(mdir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(mdir / "model.safetensors"))


def _wav(seconds=1.0, batch=2, seed=0):
    return torch.randn(batch, int(seconds * 24000), generator=torch.Generator().manual_seed(seed))


def test_lora_starts_as_the_frozen_model_and_trains_only_adapters_and_head(setup, tmp_path):
    card, mdir = setup["card"], setup["mert"]
    frozen = load_encoder(str(mdir))
    enc = load_encoder(str(mdir))
    cfg = resolve("lora", overrides=QUICK)
    model = TunedModel(enc, card, cfg, seed=3).eval()
    x = _wav()
    with torch.no_grad():
        assert torch.equal(model.states(x), frozen.hidden_states(x))  # B = 0: exactly the frozen states
    lora = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    assert lora and all(".q_proj." in n or ".v_proj." in n for n in lora)
    assert len(lora) == 2 * 2 * 2  # A and B, q and v, 2 layers
    counts = model.counts()
    assert counts["trainable_parameters"] == sum(p.numel() for n, p in model.named_parameters() if n in lora) \
        + counts["head_parameters"]

    enc = load_encoder(str(mdir))
    res = run_finetune(card, str(mdir), method="lora", data_dir=setup["data"], results_dir=tmp_path, device="cpu",
                       overrides=QUICK, encoder=enc)
    # every base weight byte-identical to the checkpoint file; LoRA B left zero
    base = {n.replace(".base_layer", ""): p for n, p in enc.model.named_parameters() if "lora_" not in n}
    want = _file_weights(mdir)
    assert set(base) == set(want) - {"masked_spec_embed"} | ({"masked_spec_embed"} & set(base))
    for n, t in want.items():
        assert torch.equal(base[n].detach(), t), n
    moved = {n for n, p in enc.model.named_parameters() if "lora_B" in n and p.detach().abs().max() > 0}
    assert len(moved) == 4
    tr = res["training"]
    assert res["track"] == "unconstrained" and res["model"] == "tiny-mert+lora" and tr["method"] == "lora"
    assert tr["finetune"]["lora_rank"] == 8 and tr["finetune"]["lora_alpha"] == 16.0
    assert tr["finetune"]["lora_targets"] == ["q_proj", "v_proj"]
    assert tr["trainable_parameters"] == counts["trainable_parameters"]
    assert res["manifest"]["encoder"]["weights_sha256"] == frozen.weights_sha256()

    # the saved adapter: peft loads it onto the base model and gives the merged weights W + alpha/r B A
    from peft import PeftModel
    from safetensors.torch import load_file

    from marble.encoders.hf import walk_hidden_states

    folder = result_path(tmp_path, "tiny-mert+lora", card.id, "unconstrained").parent
    adapter = folder / tr["artefacts"]["adapter"]["path"]
    cfg_json = json.loads((adapter.parent / "adapter_config.json").read_text())
    assert (cfg_json["r"], cfg_json["lora_alpha"], sorted(cfg_json["target_modules"])) == (8, 16, ["q_proj", "v_proj"])
    peft_model = PeftModel.from_pretrained(load_encoder(str(mdir)).model, str(adapter.parent)).eval()
    merged = load_encoder(str(mdir)).model.eval()
    ad = load_file(str(adapter))
    with torch.no_grad():
        for i, layer in enumerate(merged.encoder.layers):
            for proj in ("q_proj", "v_proj"):
                key = f"base_model.model.encoder.layers.{i}.attention.{proj}"
                a, b = ad[f"{key}.lora_A.weight"].double(), ad[f"{key}.lora_B.weight"].double()
                lin = getattr(layer.attention, proj)
                lin.weight.copy_((lin.weight.double() + 16 / 8 * b @ a).float())
        got = walk_hidden_states(peft_model.get_base_model(), x)
        ref = walk_hidden_states(merged, x)
        tuned = walk_hidden_states(enc.model.eval(), x)
    assert float((got - ref).abs().max()) < 1e-4
    assert torch.equal(got, tuned)
    assert float((got - frozen.hidden_states(x)).abs().max()) > 1e-3  # the adapter did something


def test_full_trains_the_transformer_and_keeps_the_conv_feature_encoder(setup, tmp_path):
    card, mdir = setup["card"], setup["mert"]
    enc = load_encoder(str(mdir))
    res = run_finetune(card, str(mdir), method="full", data_dir=setup["data"], results_dir=tmp_path, device="cpu",
                       overrides={**QUICK, "learning_rates": [1e-3], "layer_decay": 0.5}, encoder=enc)
    want = _file_weights(mdir)
    now = dict(enc.model.named_parameters())
    conv = [n for n in want if n.startswith("feature_extractor.")]
    assert conv and all(torch.equal(now[n].detach(), want[n]) for n in conv)
    changed = [n for n in want if not n.startswith("feature_extractor.") and n in now
               and not torch.equal(now[n].detach(), want[n])]
    assert any(n.startswith("encoder.layers.1.") for n in changed) and any("pos_conv" in n for n in changed)
    assert any(n.startswith("feature_projection.") for n in changed)
    tr = res["training"]
    n_conv = sum(want[n].numel() for n in conv)
    assert tr["trainable_parameters"] == tr["total_parameters"] - n_conv - now["masked_spec_embed"].numel()
    # the saved encoder folder loads as a marble encoder with the trained weights
    folder = result_path(tmp_path, "tiny-mert+full", card.id, "unconstrained").parent
    tuned = load_encoder(str(folder / Path(tr["artefacts"]["encoder"]["path"]).parent))
    x = _wav(seed=1)
    with torch.no_grad():
        assert torch.equal(tuned.hidden_states(x), enc.eval().hidden_states(x))


def test_layer_decay_and_head_lr_groups(setup):
    enc = load_encoder(str(setup["mert"]))
    cfg = resolve("full", overrides={"layer_decay": 0.5, "head_lr": 2e-3})
    model = TunedModel(enc, setup["card"], cfg, seed=0)
    groups = {g["name"]: g for g in model.param_groups(cfg, 1e-4)}
    assert groups["head"]["lr"] == 2e-3
    # 2 layers: layer 2 at lr, layer 1 at lr/2, everything before the first layer at lr/4
    assert [groups[k]["lr"] for k in ("encoder-1", "encoder-2", "encoder-3")] == [1e-4, 5e-5, 2.5e-5]
    names = {id(p): n for n, p in enc.model.named_parameters()}
    assert all(names[id(p)].startswith("encoder.layers.1.") for p in groups["encoder-1"]["params"])
    assert {names[id(p)].split(".")[0] for p in groups["encoder-3"]["params"]} == {"feature_projection", "encoder"}
    n_groups = sum(len(g["params"]) for g in groups.values())
    assert n_groups == sum(p.requires_grad for p in model.parameters())


def test_result_is_a_sealed_unconstrained_result_the_leaderboard_keeps_apart(setup, tmp_path):
    from marble.leaderboard.table import build
    from marble.results import read_result
    from marble.results.submission import check_file
    from marble.registry import all_cards

    card = setup["card"]
    res = run_finetune(card, str(setup["mert"]), method="head", data_dir=setup["data"], results_dir=tmp_path,
                       device="cpu", overrides=QUICK)
    path = result_path(tmp_path, "tiny-mert+head", card.id, "unconstrained")
    cards = all_cards(setup["data"] / "cards")
    assert read_result(path, cards=cards) == res
    c = check_file(path, cards)
    assert c.accepted, c.reasons()
    assert res["manifest"]["content_sha256"]
    assert res["training"]["trainable_parameters"] == res["training"]["head_parameters"]
    assert res["data"]["splits"]["test"] == {"listed": 4, "cached": 4, "skipped": [], "scored": 4}
    assert not (path.parent / "unconstrained" / "run").exists()  # the run state goes once the result is written
    lb = build(tmp_path, track="unconstrained", tasks_dir=setup["data"] / "cards")
    assert [r.model for r in lb.rows] == ["tiny-mert+head"] and lb.rows[0].track == "unconstrained"
    assert build(tmp_path, track="constrained", reported=False, tasks_dir=setup["data"] / "cards").rows == []


def test_bad_input_is_one_error_line(setup, tmp_path):
    card = setup["card"]
    bad = tmp_path / "ft.toml"
    bad.write_text("[finetune]\nlora_rank = 'eight'\n")
    r = subprocess.run([sys.executable, "-m", "marble", "finetune", "--model", str(setup["mert"]), "--task",
                        str(card.path), "--config", str(bad), "--data-dir", str(setup["data"]), "--results-dir",
                        str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: {bad}: key 'finetune.lora_rank': expected an integer, got 'eight'" in r.stderr
    with pytest.raises(FinetuneError, match="--method 'adapter': choose one of lora, full, head"):
        resolve("adapter")
    with pytest.raises(FinetuneError, match="option '--lora-dropout': 1.5 must lie in"):
        resolve("lora", overrides={"lora_dropout": 1.5})
    with pytest.raises(FinetuneError, match="fewer than one step's 16"):
        run_finetune(card, str(setup["mert"]), method="head", data_dir=setup["data"], results_dir=tmp_path,
                     device="cpu", overrides={"batch_size": 16})
    with pytest.raises(FinetuneError, match="lora and full fine-tune the transformers wav2vec 2.0-family encoders"):
        run_finetune(card, "handcrafted", method="lora", data_dir=setup["data"], results_dir=tmp_path, device="cpu")
    from marble.registry import get_card

    with pytest.raises(FinetuneError, match="source separation .musdb. is not implemented"):
        run_finetune(get_card("musdb"), "handcrafted", method="head", results_dir=tmp_path, device="cpu")
    with pytest.raises(FinetuneError, match="lora_targets \\['k_proj2'\\]:.*linear modules of this encoder:.*q_proj"):
        TunedModel(load_encoder(str(setup["mert"])), card, resolve("lora", overrides={"lora_targets": ["k_proj2"]}), 0)


def test_card_finetune_table_is_checked_and_applied(tmp_path):
    from marble.registry import CardError

    card = write_folder_dataset(tmp_path, "multiclass", per_split=1)
    text = card.read_text()
    card.write_text(text + "\n[finetune]\nmax_epochs = 4\n\n[finetune.full]\nlearning_rates = [2e-5]\n")
    c = load_card(card)
    assert resolve("full", card_table=c.finetune).learning_rates == [2e-5]
    assert resolve("full", card_table=c.finetune).max_epochs == 4
    assert resolve("lora", card_table=c.finetune).learning_rates == [1e-4, 5e-4, 1e-3]
    assert resolve("full", card_table=c.finetune, overrides={"max_epochs": 2}).max_epochs == 2
    card.write_text(text + "\n[finetune]\nmax_epoch = 4\n")
    with pytest.raises(CardError, match="unknown key 'finetune.max_epoch'"):
        load_card(card)


def test_unconstrained_submission_site_and_reproduce(setup, tmp_path):
    """The whole life of an unconstrained result: `marble submit` accepts it (sealed, every file scored), the site
    shows it as a row of its own track (not ranked among the constrained rows), and `marble reproduce` re-runs
    `marble finetune` with the recorded method, seed and hyper-parameters to the same score."""
    import os

    from marble.leaderboard.reproduce import reproduce
    from marble.leaderboard.site import build_site
    from marble.leaderboard.submit import submit
    from marble.registry import all_cards
    from tests.leaderboard_fixtures import GIT_ENV, git, make_leaderboard, model_info

    card, tasks_dir = setup["card"], setup["data"] / "cards"
    cards = all_cards(tasks_dir)
    res_dir = tmp_path / "res"
    res = run_finetune(card, str(setup["mert"]), method="head", data_dir=setup["data"], results_dir=res_dir,
                       device="cpu", overrides=QUICK)
    name = res["model"]
    info = model_info(name, track="unconstrained", parameters=res["training"]["total_parameters"])
    result_path(res_dir, name, card.id, "unconstrained").parent.parent.joinpath("model.json").write_text(json.dumps(info))
    old = {k: os.environ.get(k) for k in [*GIT_ENV, "HOME"]}
    os.environ.update(GIT_ENV, HOME=str(tmp_path))
    try:
        clone, _ = make_leaderboard(tmp_path)
        cfg = json.loads((clone / "leaderboard.json").read_text())
        cfg["tasks"][card.id] = {"versions": [card.version], "protocol": card.protocol}
        (clone / "leaderboard.json").write_text(json.dumps(cfg))
        git(clone, "commit", "-qam", "accept the fixture task")
        sub = submit(res_dir, name, clone, cards=cards)
        git(clone, "merge", "-q", "--no-ff", "-m", "merge", sub.branch)
        pages = build_site(clone, tmp_path / "site", cards=cards)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    index = pages[0].read_text()
    assert f'data-track="unconstrained" data-entry="{sub.folder.split("/")[-1]}"' in index
    assert '<option value="constrained" selected>' in index and '<option value="unconstrained">' in index
    assert index.index('data-track="unconstrained"') > index.rindex('data-track="constrained"')  # ranked apart
    rows = reproduce(clone / sub.folder, model=str(setup["mert"]), data_dir=setup["data"], tasks_dir=tasks_dir,
                     device="cpu", cards=cards)
    assert [(r.task, r.track, r.error) for r in rows] == [(card.id, "unconstrained", None)]
    assert rows[0].metric_diffs == {"accuracy": 0.0}  # (a user task without aggregate metrics has no task score)
    assert rows[0].reproduced_selected == rows[0].submitted_selected == f"layer weighted, lr {res['selected']['lr']:g}"


def test_gtzan_beat_fine_tunes_the_frame_head(setup, tmp_path):
    """gtzan-beat on its official layout (GTZAN audio + GTZAN-Rhythm JAMS): the card's frame head on every frame,
    BCE on widened beat targets of the training crops, whole clips DBN-decoded on valid/test, the card's metrics."""
    from marble.beat.train import score_beats
    from marble.registry import get_card
    from marble.testing.fixtures import write_gtzan_beat

    card = get_card("gtzan-beat")
    write_gtzan_beat(tmp_path / "data", per_split=2, seconds=3.0)
    enc = load_encoder(str(setup["mert"]))
    res = run_finetune(card, str(setup["mert"]), method="lora", data_dir=tmp_path / "data", results_dir=tmp_path / "r",
                       device="cpu", overrides={**QUICK, "max_epochs": 1}, encoder=enc)
    assert set(res["test"]) == {"beat_f_measure_pooled", "beat_f_measure"}
    assert res["training"]["train_crop_seconds"] == 10.0  # the card's training chunk (the 3 s fixtures are shorter)
    assert res["training"]["eval_input"].startswith("whole clip")
    assert res["data"]["splits"]["valid"]["scored"] == 2
    # the reported test score is the card's metric of the saved model's DBN-decoded beats, recomputed here from the
    # artefacts (adapter through peft, head weights) on a freshly loaded encoder
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from marble.datasets import get_dataset
    from marble.finetune.evaluate import BeatEvaluator

    folder = result_path(tmp_path / "r", res["model"], card.id, "unconstrained").with_suffix("")
    fresh = load_encoder(str(setup["mert"]))
    model = TunedModel(fresh, card, resolve("lora", overrides=QUICK), seed=0)
    set_peft_model_state_dict(model.peft, load_file(str(folder / "adapter" / "adapter_model.safetensors")))
    model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    ds = get_dataset(card, tmp_path / "data", allow_partial=True)
    ev = BeatEvaluator(card, {s: ds.items(s) for s in ("valid", "test")}, fresh, "cpu")
    refs, est = ev.beats(model.eval(), "test")
    assert score_beats(card, refs, est, fresh.frame_rate) == res["test"]


# The fixture task fine-tuning must win: harmonic tones of random timbre (1 to 5 harmonics of random level and phase),
# label = the register of the fundamental (150-300 Hz vs the octave above), 512/128/128 clips of 0.5 s
# (marble.testing.fixtures.write_pitch_task). The frozen tiny MERT's time-mean states are dominated by the timbre
# (which harmonics are loud moves every frame's random features far more than the octave does) and the mean over
# frames keeps no per-frame nonlinearity that could separate the two: the best the head does on them is ~0.73 (a
# 512-unit MLP and a logistic regression from sklearn on the frozen pooled states of both layers, concatenated, reach
# 0.74 and 0.73 on the same kind of data). Fine-tuning makes the per-frame features timbre-invariant before the
# mean. One learning rate per method (the grid is tested elsewhere), 12 epochs, every seed fixed: the numbers are
# deterministic on CPU (one thread); measured head 0.734, lora 0.836, full 0.820 (test accuracy of 128 clips).
PITCH_RUNS = {
    "head": {"learning_rates": [2e-2]},
    "lora": {"learning_rates": [4e-2]},  # adapters and head
    "full": {"learning_rates": [1e-3], "head_lr": 2e-2},
}


def test_lora_and_full_solve_what_the_frozen_encoder_cannot(tmp_path):
    from marble.testing.fixtures import write_pitch_task

    card = load_card(write_pitch_task(tmp_path / "data", per_split=(512, 128, 128), seconds=0.5))
    mdir, _ = make_mert_dir(tmp_path / "tiny-mert")
    test = {}
    for method, over in PITCH_RUNS.items():
        res = run_finetune(card, str(mdir), method=method, data_dir=tmp_path / "data", results_dir=tmp_path / "r",
                           device="cpu", seed=0, overrides={"max_epochs": 12, "batch_size": 16,
                                                            "early_stop_patience": 0, **over})
        assert res["training"]["method"] == method and res["data"]["splits"]["test"]["scored"] == 128
        test[method] = res["test"]["accuracy"]
    assert test["head"] <= 0.76, test  # the frozen encoder's pooled states do not carry the register
    assert test["lora"] >= 0.80 and test["full"] >= 0.80, test
    assert min(test["lora"], test["full"]) - test["head"] >= 0.06, test
