"""``marble predict``: apply a result's shipped probe to new audio files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("predict", epilog=(
        "Examples:\n\n"
        "  marble predict --probe results/m-a-p__MERT-v1-95M/gtzan/constrained.json --model m-a-p/MERT-v1-95M song.wav\n\n"
        "  marble predict --probe results/handcrafted/mtt/constrained.json --model handcrafted --format json *.mp3\n\n"
        "  marble predict --probe results/m-a-p__MERT-v1-95M/gtzan-beat/constrained.json --model m-a-p/MERT-v1-95M "
        "song.wav\n\n"
        "  marble predict --probe results/m-a-p__MERT-v1-95M/musdb/constrained.json --model m-a-p/MERT-v1-95M "
        "--out-dir stems song.wav\n\n"))
    def predict(
        audio: List[Path] = typer.Argument(..., help="Audio files (any format marble extract reads)."),
        probe: Path = typer.Option(..., "--probe", help="A result JSON (its shipped probe, sha256-checked) or "
                                   "its <track>.probe.safetensors."),
        model: str = typer.Option(..., "--model", help="The encoder the result was computed with (any spelling "
                                  "marble extract takes); another encoder is refused."),
        top: int = typer.Option(5, "--top", help="Labels shown per file (multiclass / multilabel text output)."),
        fmt: str = typer.Option("text", "--format", "-f", help="text | json (every label's score, full precision)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
        batch_size: int = typer.Option(8, "--batch-size", help="Windows per encoder batch (as marble extract)."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra task cards (a probe of a user task)."),
        out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Separation probes (musdb): where the stems "
                                               "go, DIR/<input name>/<source>.wav (default ./separated)."),
    ) -> None:
        """Label new audio with a leaderboard cell's probe: the selected probe of a result (its layer or
        weighted sum and its head, shipped beside the result) on the features of the same encoder.

        Multiclass tasks print each file's most probable labels, multilabel tasks its highest tag scores,
        regression tasks every target's value, beat tracking (gtzan-beat) the decoded beat times; --format json
        prints every score (every beat time, in seconds, full precision). Features are made exactly as `marble
        extract` makes them (the card's crop and windows), so a file of the result's own test split gets the
        prediction stored in the result's test outputs.

        Source separation (musdb) separates each file, a stereo mixture (a mono file is duplicated to two
        channels, and says so), into vocals, drums, bass and other with the result's four source models and
        the trainer's reconstruction, and writes them as 24 kHz float wavs under --out-dir; a test mixture's
        stems score exactly the SDRs the result ships."""
        import json

        from marble.devices import resolve_device
        from marble.encoders import load_encoder
        from marble.errors import MarbleError
        from marble.probe.predict import format_text, load_probe, predict_files

        if fmt not in ("text", "json"):
            raise typer.BadParameter(f"{fmt!r}; choose text or json", param_hint="--format")
        shipped = load_probe(probe, tasks_dir)
        if out_dir is not None and not shipped.is_modules:
            raise typer.BadParameter(f"the {shipped.meta['task']} probe prints its predictions; only separation "
                                     "probes write files", param_hint="--out-dir")
        dev = str(resolve_device(device))
        try:
            encoder = load_encoder(model, device=dev)
        except (OSError, ValueError) as e:
            raise MarbleError(f"--model {model}: {e}") from None
        preds, skipped = predict_files(shipped, encoder, audio, device=dev, batch_size=batch_size, tasks_dir=tasks_dir,
                                       out_dir=out_dir)
        for p in preds:
            for note in p.notes:
                typer.echo(f"note: {note}", err=True)
        if fmt == "json":
            def entry(p):
                if p.stems is not None:
                    return {"file": p.file, "stems": p.stems}
                return {"file": p.file, "scores": p.scores} if p.beats is None else {"file": p.file,
                                                                                      "beats": p.beats.tolist()}

            typer.echo(json.dumps({"task": shipped.meta["task"], "model": shipped.meta["model"],
                                   "prediction": shipped.prediction, "group_rule": shipped.group_rule,
                                   "files": [entry(p) for p in preds], "skipped": skipped}, indent=2))
        elif preds:
            typer.echo(format_text(preds, shipped, top))
        for s in skipped:
            typer.echo(f"error: {s['file']}: {s['reason']}; not predicted", err=True)
        if skipped:
            raise typer.Exit(2)
