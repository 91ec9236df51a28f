"""``marble card``: a Hugging Face model card (model-index eval results) from a model's results."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marble.cli import options


def register(app: typer.Typer) -> None:
    @app.command("card", epilog=(
        "Examples:\n\n"
        "  marble card --model m-a-p/MERT-v1-95M\n\n"
        "  marble card --results-dir runs/results --model my-lab/my-encoder --out MODEL_CARD.md\n\n"
        "  marble card --model my-lab/my-encoder --push     # needs a token (HF_TOKEN or `hf auth login`)\n\n"))
    def card_cmd(
        model: str = typer.Option(..., "--model", "-m", help="The model name in the result files."),
        results_dir: Optional[Path] = options.results_dir(),
        track: str = typer.Option("constrained", "--track", help="constrained | semi-constrained | unconstrained"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write the card (default: "
                                           "<results-dir>/<model>/README.md)."),
        push: bool = typer.Option(False, "--push", help="Also merge the results into the model repository's card "
                                  "on the Hugging Face Hub (needs a token)."),
        repo_id: Optional[str] = typer.Option(None, "--repo-id", help="With --push: the Hub repository (default: "
                                              "the model name, when it is a hub id)."),
        pr: bool = typer.Option(True, "--pr/--no-pr", help="With --push: open a pull request (default) or commit."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra task cards (user tasks)."),
    ) -> None:
        """Write a Hugging Face model card holding a model's MARBLE results as model-index eval results (task,
        dataset, metric, value, the protocol and track named): the metadata the Hub shows on a model page.
        Built and read back with huggingface_hub's ModelCard classes; works offline. --push only when asked."""
        import json

        from marble import settings
        from marble.io import slug
        from marble.errors import MarbleError
        from marble.leaderboard.hfcard import build_card, push_card
        from marble.registry import all_cards

        root = settings.results_dir(results_dir)
        info_path = root / slug(model) / "model.json"
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else None
        card = build_card(root, model, track=track, cards=all_cards(tasks_dir), info=info)
        out = out or root / slug(model) / "README.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(str(card), encoding="utf-8")
        typer.echo(f"wrote {out} ({len(card.data.eval_results or [])} eval results)")
        if push:
            target = repo_id or (model if model.count("/") == 1 and not Path(model).exists() else None)
            if target is None:
                raise MarbleError("--push: give --repo-id OWNER/NAME (the model name is not a Hub id)")
            url = push_card(card, target, create_pr=pr)
            typer.echo(f"pushed the eval results to {target}: {url}")
