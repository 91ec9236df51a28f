"""`marble card`: the Hugging Face model card of a model's results loads with huggingface_hub's own ModelCard
and its eval results parse back to the results' numbers (offline; --push refuses without a token)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from marble.cli import app
from marble.leaderboard import build
from marble.metrics import SCALE
from marble.metrics.aggregate import default_task_ids
from marble.registry import all_cards
from marble.results import read_result
from tests.leaderboard_fixtures import model_info, write_model


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


def test_card_loads_with_huggingface_hub_and_parses_back_to_the_same_numbers(tmp_path, offline):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    files = write_model(tmp_path, "lab/enc", default_task_ids(), info=model_info("lab/enc", license="CC-BY-4.0"))
    out = tmp_path / "card.md"
    res = CliRunner().invoke(app, ["card", "--model", "lab/enc", "--results-dir", str(tmp_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    card = ModelCard.load(out)
    assert card.data.model_name == "enc" and card.data.license == "cc-by-4.0" and "marble" in card.data.tags
    got = {((e.dataset_config or e.dataset_type).split(" ")[0], e.metric_type): e.metric_value
           for e in card.data.eval_results}
    cards = all_cards()
    want = {}
    for task, p in files.items():
        r = read_result(p)
        e = next(e for e in card.data.eval_results if (e.dataset_config or "").startswith(task + " "))
        assert e.dataset_split == "test" and f"v{cards[task].version}" in e.dataset_config
        assert "marble-v1" in e.dataset_config and "MARBLE" in e.source_name and "constrained" in e.source_name
        want.update({(task, m): v * SCALE[m] for m, v in r["test"].items() if v is not None})
    ms = next(r for r in build(tmp_path, reported=False, ties=False).rows if r.model == "lab/enc").marble_score
    want[("marble", "marble_score")] = ms
    assert got == want  # exactly the numbers of the results (x100 / dB), and the MARBLE score
    # the raw model-index (what the Hub reads) parses back through huggingface_hub too
    name, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "enc" and [e.metric_value for e in evals] == [e.metric_value for e in card.data.eval_results]


def test_card_push_needs_a_token_and_nothing_needs_the_network(tmp_path, offline):
    write_model(tmp_path, "lab/enc", ["gtzan"])
    res = CliRunner().invoke(app, ["card", "--model", "lab/enc", "--results-dir", str(tmp_path), "--push"])
    assert res.exit_code != 0 and "no Hugging Face token found" in str(res.exception)
    assert (tmp_path / "lab__enc" / "README.md").is_file()  # the card is written before any push
    res = CliRunner().invoke(app, ["card", "--model", "lab/none", "--results-dir", str(tmp_path)])
    assert res.exit_code != 0 and "no constrained-track results of model 'lab/none'" in str(res.exception)
