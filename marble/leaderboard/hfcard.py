"""``marble card``: a Hugging Face model card whose metadata holds a model's MARBLE results.

The card's YAML front matter carries the ``model-index`` the Hub shows on a model page (task, dataset, metric,
value per result), built and parsed back with ``huggingface_hub``'s own classes (``ModelCardData``,
``EvalResult``, ``ModelCard``), so what is written is what the Hub reads. One eval result per test metric of
each result (on the MARBLE table's scale: x100 for ratios, dB for SDR), its ``dataset_config`` naming the task,
the card version and the protocol, its ``source_name`` the MARBLE benchmark, the track and the toolkit; plus the
MARBLE score when all 14 tasks are there. Nothing needs the network: ``--push`` (``huggingface_hub.metadata_update``,
as a pull request on the model repository by default) runs only when asked and a token exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from marble.errors import MarbleError

PAPER = "https://arxiv.org/abs/2306.10548"
#: model-index task types: the Hub's own where one fits (audio classification, audio-to-audio), else a plain name
TASK_TYPES = {"multiclass": "audio-classification", "multilabel": "audio-classification",
              "regression": "audio-regression", "frame-binary": "beat-tracking", "separation": "audio-to-audio"}


def _results(results_dir: Path, model: str, track: str, cards: dict) -> list[dict]:
    from marble.io import slug
    from marble.results import read_result

    folder = Path(results_dir) / slug(model)
    files = sorted(folder.glob(f"*/{track}.json"))
    if not files:
        raise MarbleError(f"{folder}: no {track}-track results of model {model!r} (run `marble probe --model "
                          f"{model}` with --results-dir {results_dir})")
    return [read_result(f, cards=cards) for f in files]


def eval_results(results: list[dict], cards: dict) -> list:
    """``huggingface_hub.EvalResult`` per test metric of each result, and the MARBLE score when complete."""
    from huggingface_hub import EvalResult

    from marble import __version__
    from marble.leaderboard.table import _cell
    from marble.metrics import SCALE
    from marble.metrics.aggregate import default_task_ids, marble_score

    out = []
    scores = {}
    for r in sorted(results, key=lambda r: r["task"]):
        card = cards[r["task"]]
        source = f"MARBLE benchmark, {r['track']} track (marble toolkit {r.get('manifest', {}).get('toolkit_version', __version__)})"
        config = f"{card.id} (task card v{card.version}, protocol {card.protocol})"
        for name in card.metrics.names:
            value = r["test"].get(name)
            if value is None:
                continue
            unit = "dB" if SCALE[name] == 1.0 else "x100"
            out.append(EvalResult(
                task_type=TASK_TYPES.get(card.prediction, card.prediction), task_name=card.name,
                dataset_type=card.dataset, dataset_name=card.name, dataset_config=config, dataset_split="test",
                metric_type=name, metric_name=f"{name} ({unit}; selected probe, {r['track']} track)",
                metric_value=float(value) * SCALE[name], source_name=source, source_url=PAPER))
        scores[card.id] = _cell(r, card, None).score
    ms = marble_score(scores, default_task_ids())
    if ms is not None:
        out.append(EvalResult(task_type="music-representation-benchmark", task_name="MARBLE (14 tasks)",
                              dataset_type="marble", dataset_name="MARBLE benchmark", dataset_split="test",
                              metric_type="marble_score", metric_name="MARBLE score (mean of the 14 task scores)",
                              metric_value=ms, source_name=f"MARBLE benchmark (marble toolkit {__version__})",
                              source_url=PAPER))
    return out


def build_card(results_dir: str | os.PathLike, model: str, *, track: str = "constrained", cards: dict | None = None,
               info: dict | None = None):
    """The ``huggingface_hub.ModelCard`` of ``model``'s results, parsed back from its own text (so a card the Hub
    would not read raises here)."""
    from huggingface_hub import ModelCard, ModelCardData

    from marble.registry import all_cards

    cards = cards or all_cards()
    results = _results(Path(results_dir), model, track, cards)
    info = info or {}
    evals = eval_results(results, cards)
    data = ModelCardData(model_name=info.get("display_name") or model, eval_results=evals,
                         license=(info.get("license") or None) and str(info["license"]).lower(),
                         tags=["marble", "music", "audio", "music-information-retrieval", "representation-learning"])
    body = _body(model, results, evals, track)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")  # parses and validates the model-index
    back = card.data.eval_results or []
    if [(e.dataset_config, e.metric_type, e.metric_value) for e in back] != \
            [(e.dataset_config, e.metric_type, e.metric_value) for e in evals]:
        raise MarbleError("the model card's eval results do not read back as written (huggingface_hub)")
    return card


def _body(model: str, results: list[dict], evals: list, track: str) -> str:
    lines = [f"# {model}: MARBLE results", "",
             f"Results of the frozen encoder `{model}` on the MARBLE benchmark (Yuan et al., NeurIPS 2023), "
             f"{track} track, computed with the marble toolkit: every hidden state and a learned weighted sum "
             "probed at each learning rate of the task card, the probe chosen on validation and scored once on "
             "test. Values are x100 for ratios and dB for SDR.", "",
             "| task | metric | value |", "|---|---|---:|"]
    for e in evals:
        task = (e.dataset_config or e.task_name or "").split(" (")[0]
        lines.append(f"| {task} | {e.metric_type} | {e.metric_value:.2f} |")
    lines += ["", "Each result ships its selected probe and per-item test outputs: `marble predict --probe RESULT "
              f"--model {model} AUDIO...` applies a probe to new audio; `marble compare` tests differences between "
              "models with a paired bootstrap.", ""]
    return "\n".join(lines)


def push_card(card, repo_id: str, *, create_pr: bool = True) -> str:
    """Merge the card's metadata (the model-index) into the model repository's README on the Hub."""
    from huggingface_hub import get_token, metadata_update

    token = get_token()
    if not token:
        raise MarbleError("--push: no Hugging Face token found (set HF_TOKEN or run `hf auth login`); nothing was pushed")
    return metadata_update(repo_id, card.data.to_dict(), overwrite=True, token=token, create_pr=create_pr,
                           commit_message="Add MARBLE benchmark results (marble card)")
