"""``marble finetune``: the unconstrained track (fine-tune the encoder on the task's audio: LoRA, full, or the
frozen-encoder baseline), as its own command: it reads audio, not the feature cache ``marble probe`` reads, and
takes options no probe has (method, adapters, encoder LR, checkpoints, processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marble import settings
from marble.cli import options

EPILOG = (
    "Examples:\n\n"
    "  marble finetune --model m-a-p/MERT-v1-95M --task gtzan --method lora --data-dir ~/data --device cuda\n\n"
    "  marble finetune --model m-a-p/MERT-v1-95M --task gtzan --method full --lrs 1e-5,5e-5 --layer-decay 0.9\n\n"
    "  marble finetune --model m-a-p/MERT-v1-330M --task emo --method full --gradient-checkpointing --accumulate 4\n\n"
    "  marble finetune --model m-a-p/MERT-v1-95M --task gtzan --method head   (the frozen-encoder baseline)\n\n"
    "  torchrun --nproc-per-node 4 -m marble finetune --model m-a-p/MERT-v1-95M --task mtt --method full\n\n"
    "Results: <results-dir>/<model>+<method>/<task>/unconstrained.json, the trained parts beside it in "
    "unconstrained/ (head.safetensors; the LoRA adapter in peft's format; the fine-tuned encoder under full). "
    "A stopped run (Ctrl-C, kill) resumes: rerun the same command (--fresh starts over). Settings: built-in "
    "defaults < the card's [finetune] table < --config FILE < these options (docs/tracks.md)."
)


def register(app: typer.Typer) -> None:
    app.command("finetune", epilog=EPILOG)(finetune)


def finetune(
    model: str = typer.Option(..., "--model", help="Encoder spec: hub id, checkpoint folder, file.py:Class, entry point "
                              "(lora and full need a wav2vec 2.0-family model: MERT, HuBERT, wav2vec 2.0, data2vec)."),
    task: str = typer.Option(..., "--task", "--tasks", "-t", help="Task id, a card .toml, or several separated by commas."),
    method: str = typer.Option("lora", "--method", help="lora (peft adapters + head) | full (every encoder weight but "
                               "the conv feature encoder + head) | head (frozen encoder, the baseline)."),
    name: Optional[str] = typer.Option(None, "--name", help="The row's name in the result and the leaderboard "
                                       "(default: <encoder name>+<method>)."),
    data_dir: Optional[Path] = options.data_dir("Dataset root: the task's audio (default ./data)."),
    results_dir: Optional[Path] = options.results_dir("Where result JSONs (and the trained parts) are written "
                                                      "(default ./results)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present, bf16 autocast) | cpu | cuda | cuda:N"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the head, adapters, crops, order and dropout "
                                       "(default: the card's)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with a [finetune] table (keys: docs/tracks.md)."),
    lrs: Optional[str] = typer.Option(None, "--lrs", help="The learning-rate grid, e.g. 1e-4,5e-4 (encoder LR for "
                                      "lora/full, head LR for head)."),
    head_lr: Optional[float] = typer.Option(None, "--head-lr", help="The head's LR under lora/full (default: lora the "
                                            "row's LR, full 1e-3)."),
    layer_decay: Optional[float] = typer.Option(None, "--layer-decay", help="full: layer-wise LR decay (1 = off)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Epochs at most (default 10)."),
    warmup_ratio: Optional[float] = typer.Option(None, "--warmup-ratio", help="Fraction of the steps of linear warm-up "
                                                 "(default 0.1)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping: epochs without a better "
                                           "validation score (default 3; 0 = off)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Crops per micro-batch and process (default 8)."),
    accumulate: Optional[int] = typer.Option(None, "--accumulate", help="Micro-batches per optimiser step (default 1)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay (default 0.01)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="The head's input: weighted (default) or a state index."),
    train_crop_seconds: Optional[float] = typer.Option(None, "--train-crop-seconds", help="Training crop length "
                                                       "(default: the card's training chunk, window or whole clip)."),
    lora_rank: Optional[int] = typer.Option(None, "--lora-rank", help="LoRA rank (default 8)."),
    lora_alpha: Optional[float] = typer.Option(None, "--lora-alpha", help="LoRA alpha (default 16)."),
    lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout", help="LoRA dropout (default 0)."),
    lora_targets: Optional[str] = typer.Option(None, "--lora-targets", help="Modules with adapters (default q_proj,v_proj)."),
    train_feature_encoder: bool = typer.Option(False, "--train-feature-encoder", help="full: train the conv feature "
                                               "encoder too (frozen by default)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Recompute layer activations in "
                                                "the backward pass (less memory, e.g. for MERT-v1-330M)."),
    save_every: int = typer.Option(50, "--save-every", help="Write the resumable checkpoint every N steps (also after "
                                   "every epoch and on Ctrl-C)."),
    num_workers: int = typer.Option(2, "--num-workers", help="DataLoader workers decoding training audio."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard a saved run state instead of resuming it."),
    tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra directory of task cards."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Fine-tune an encoder on a task (the unconstrained track): LoRA, full, or the frozen-encoder baseline."""
    from rich.console import Console

    from marble.finetune.config import WEIGHTED
    from marble.finetune.run import plan, run_finetune
    from marble.registry import select_cards

    def floats(text: str | None, flag: str):
        if text is None:
            return None
        try:
            return [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise typer.BadParameter(f"{text!r}: expected numbers separated by commas", param_hint=flag) from None

    layer_value = None if layer is None else (WEIGHTED if layer == WEIGHTED else _int(layer, "--layer"))
    overrides = {"learning_rates": floats(lrs, "--lrs"), "head_lr": head_lr, "layer_decay": layer_decay,
                 "max_epochs": max_epochs, "warmup_ratio": warmup_ratio, "early_stop_patience": patience,
                 "batch_size": batch_size, "accumulate": accumulate, "weight_decay": weight_decay, "layer": layer_value,
                 "train_crop_seconds": train_crop_seconds, "lora_rank": lora_rank, "lora_alpha": lora_alpha,
                 "lora_dropout": lora_dropout,
                 "lora_targets": [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None,
                 "freeze_feature_encoder": False if train_feature_encoder else None,
                 "gradient_checkpointing": True if gradient_checkpointing else None}
    cards = select_cards(task, tasks_dir)
    for card in cards:  # every task's settings are checked before any training starts
        plan(card, method, config, overrides)
    console = Console(stderr=False)
    for card in cards:
        result = run_finetune(card, model, method=method, data_dir=settings.data_dir(data_dir),
                              results_dir=settings.results_dir(results_dir), device=device, seed=seed, name=name,
                              config=config, overrides=overrides, save_every=save_every, num_workers=num_workers,
                              fresh=fresh, progress=not quiet)
        if result:
            _print(console, result)


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected 'weighted' or a hidden-state index", param_hint=flag) from None


def _print(console, result: dict) -> None:
    from rich.table import Table

    main = result["main_metric"]
    tr = result["training"]
    table = Table(title=f"{result['model']} / {result['task']} / unconstrained ({tr['method']}, "
                        f"{tr['trainable_parameters']:,} trained parameters)")
    names = list(result["test"])
    for col in ["lr", "head lr", f"valid {main}", *[f"test {n}" for n in names], "best ep", "epochs", "stopped"]:
        table.add_column(col, justify="right")
    sel = result["selected"]
    fmt = lambda v: "nan" if v is None else f"{v:.4f}"  # noqa: E731
    for r in result["sweep"]:
        mark = "*" if r["lr"] == sel["lr"] else ""
        table.add_row(f"{r['lr']:g}{mark}", f"{r.get('head_lr', r['lr']):g}", fmt(r["valid"].get(main)),
                      *[fmt(r["test"].get(n)) for n in names], str(r["best_epoch"]), str(r["epochs"]), r["stopped"])
    console.print(table)
    console.print(f"selected lr {sel['lr']:g}: test " + ", ".join(f"{k} {v:.4f}" for k, v in result["test"].items()
                                                                  if v is not None))
    for key, art in (tr.get("artefacts") or {}).items():
        console.print(f"{key}: {art['path']}")
