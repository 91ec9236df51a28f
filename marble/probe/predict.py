"""``marble predict``: a result's shipped probe applied to new audio files.

The features are made by ``marble extract`` itself (:func:`marble.cache.extract.extract` into a temporary cache,
with the card's audio settings and the probe's recorded ``max_chunk_seconds`` and compute dtype), then the
probe's float64 path (:mod:`marble.probe.shipped`) scores them as the result's own test files were scored: the
activated mean of a file's window logits, or for a probe with a GS group rule the rule over the file's 30 s
windows taken as the clips of one song. So a file of the result's test split gets exactly the estimate stored in
the result's test outputs, when the encoder gives it the same features (the encoder contract: an item's features
do not depend on the batch; the fp16 cache rounds away the last-bit differences a BLAS can still make).

A beat probe (``frame-binary``, GTZAN beat) gets each file's frame features from the same extraction (the card's
first 30 s, its encoder-piece rule, fp16 frames) and decodes them with :func:`marble.beat.train.shipped_beats`,
the function behind the result's test outputs: a test file gets exactly the beat times stored there.

A separation probe (MUSDB) separates each file, a stereo mixture (a mono file's channel duplicated), into its four
stems with the trainer's own reconstruction (:func:`marble.separation.train.separate_track`: features of the whole
file by the card's piece rule, computed on the fly as the trainer computes them without a frame cache, each
source's model rebuilt from the probe, per-source Wiener EM, inverse STFT) and writes them as 24 kHz float wavs:
the stems of a test mixture are the estimates the result's shipped SDRs were scored on.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marble.errors import MarbleError
from marble.probe.shipped import ShippedProbe


@dataclass
class Prediction:
    file: str
    scores: dict[str, float]  # label -> probability / tag score / value (the estimate the metrics consume)
    array: np.ndarray = field(repr=False, default=None)
    beats: np.ndarray | None = field(repr=False, default=None)  # beat probes: the decoded beat times (float64 s)
    stems: dict[str, str] | None = None  # separation probes: source -> the wav written
    notes: list[str] = field(default_factory=list)  # what was done to the input (a mono mixture duplicated)


def load_probe(path: str | os.PathLike, tasks_dir=None) -> ShippedProbe:
    """A shipped probe from a result JSON (its ``artifacts.probe``, sha256-checked) or a ``.probe.safetensors``."""
    from marble.results import ResultError, read_result
    from marble.results.artifacts import read_artifact

    path = Path(path)
    if not path.is_file():
        raise MarbleError(f"{path}: no such file; give a result JSON (results/<model>/<task>/<track>.json) or its "
                          ".probe.safetensors")
    try:
        if path.suffix == ".json":
            result = read_result(path, tasks_dir=tasks_dir)
            return ShippedProbe.from_bytes(read_artifact(path, result, "probe"), str(path))
        return ShippedProbe.load(path)
    except ValueError as e:
        if isinstance(e, ResultError):
            raise MarbleError(str(e).splitlines()[0] + "; re-run `marble probe` to ship the probe") from None
        raise MarbleError(f"{e}; give a result JSON or a .probe.safetensors written by `marble probe`") from None


def _dummy_label(card):
    """Labels the extraction pipeline expects on an item (a new file has none; they are never read)."""
    return {"multiclass": 0, "multilabel": [], "regression": [0.0] * card.num_outputs}[card.prediction]


def _items(card, probe: ShippedProbe, paths: list[str]):
    """One item per file; for a probe with a group rule (GS) the file is a song cut as the dataset cuts one:
    non-overlapping clips of the card's window length from 0 s, a shorter tail dropped, each clip an item of
    the song. Returns ``(items, skipped)``."""
    from marble.audio import AudioError, info
    from marble.datasets.base import Item

    window = card.audio.window_seconds
    if not (probe.group_rule and window):
        return [Item(uid=p, path=Path(p), label=_dummy_label(card)) for p in paths], []
    items, skipped = [], []
    for p in paths:
        try:
            sr, n = info(p)
        except AudioError as e:
            skipped.append({"file": p, "reason": e.reason})
            continue
        k = int((n / sr) // window)
        if k == 0:
            skipped.append({"file": p, "reason": f"too short: {n / sr:.2f} s, shorter than one {window:g} s clip"})
        items += [Item(uid=f"{p}#{i}", path=Path(p), label=_dummy_label(card), offset=i * window, duration=window,
                       group=p) for i in range(k)]
    return items, skipped


def check_encoder(probe: ShippedProbe, encoder) -> None:
    """The probe reads features of one encoder: another one (other weights, other config) is refused."""
    import json

    want = probe.meta.get("encoder") or {}
    have = json.loads(json.dumps(encoder.identity(), sort_keys=True, default=str))
    diff = sorted(k for k in set(want) | set(have) if k != "name" and want.get(k) != have.get(k))
    if want and diff:
        shown = "; ".join(f"{k}: probe {want.get(k)!r}, --model {have.get(k)!r}" for k in diff[:4])
        raise MarbleError(f"--model: the probe was trained on features of encoder {want.get('name')!r} and this "
                          f"encoder differs ({shown}); give the model the result was computed with")


def predict_files(probe: ShippedProbe, encoder, files, *, device: str = "cpu", batch_size: int = 8,
                  tasks_dir=None, out_dir=None) -> tuple[list[Prediction], list[dict]]:
    """Estimates of ``probe`` for audio ``files`` with ``encoder``: ``(predictions in input order, skipped)``;
    ``skipped`` holds ``{"file", "reason"}`` of files the extraction refused (unreadable, too short, ...). A
    separation probe writes each file's stems under ``out_dir`` (default ``separated``)."""
    import torch

    from marble.cache.extract import extract
    from marble.cache.store import read_clip_split, read_manifest
    from marble.probe.select import FileIndex, file_labels
    from marble.registry import get_card

    meta = probe.meta
    card = get_card(meta["task"], tasks_dir)
    if card.version != meta["task_version"]:
        raise MarbleError(f"the probe was trained with task card {card.id} version {meta['task_version']}; this "
                          f"installation has version {card.version} ({card.path}), whose features may differ")
    if not card.is_clip_level and card.prediction not in ("frame-binary", "separation"):
        raise MarbleError(f"task {card.id!r} is {card.prediction}; marble predict applies clip-task, beat and "
                          "separation probes")
    check_encoder(probe, encoder)
    paths = list(dict.fromkeys(str(f) for f in files))
    for p in paths:
        if not Path(p).is_file():
            raise MarbleError(f"{p}: no such audio file")
    if card.prediction == "frame-binary":
        return _predict_beats(probe, card, encoder, paths, device, batch_size)
    if card.prediction == "separation":
        return _predict_stems(probe, card, encoder, paths, device, Path(out_dir or "separated"))
    items, unreadable = _items(card, probe, paths)
    empty = np.zeros((0, card.num_outputs), np.float32)
    keys, est, errors = [], empty, []
    with tempfile.TemporaryDirectory(prefix="marble-predict-") as tmp:
        if items:
            d = extract(card, encoder, {"test": items}, tmp, splits=["test"], device=device, batch_size=batch_size,
                        num_workers=0, dtype=meta.get("compute_dtype") or "auto", progress=False,
                        max_chunk_seconds=float(meta.get("max_chunk_seconds") or 60.0))
            errors = read_manifest(d).get("errors", [])
            split = read_clip_split(d / "test")
            files_ = FileIndex.build(np.asarray(split.uids).astype(str))
            groups = (FileIndex.build(file_labels(np.asarray(split.groups).astype(str), files_))
                      if probe.group_rule else None)
            keys = list((groups if groups is not None else files_).keys)
            if len(files_):
                X = torch.from_numpy(np.array(split.features, dtype=np.float16)).to(device)
                est = probe.estimates(X, files_, groups)
    skipped = unreadable + [{"file": e.get("file"), "reason": e.get("reason")} for e in errors]
    row = {k: i for i, k in enumerate(keys)}
    vocab = probe.vocabulary
    out = [Prediction(p, {v: float(x) for v, x in zip(vocab, est[row[p]])}, est[row[p]]) for p in paths if p in row]
    return out, skipped


def _predict_beats(probe: ShippedProbe, card, encoder, paths: list[str], device: str,
                   batch_size: int) -> tuple[list[Prediction], list[dict]]:
    """Beat times of a beat probe for ``paths``: frame features of each file's evaluated audio (the card's crop)
    by ``marble extract`` with the probe's compute dtype, then :func:`marble.beat.train.shipped_beats`."""
    from marble.beat.train import shipped_beats
    from marble.cache.extract import extract
    from marble.cache.store import read_manifest
    from marble.datasets.base import Item
    from marble.probe.frames import FrameFeatures, feature_layers

    meta = probe.meta
    if not meta.get("decoder"):
        raise MarbleError(f"the {card.id} probe records no decoder (frame rate, DBN settings); re-run `marble probe` "
                          "to ship the probe")
    states = feature_layers([probe.layer], encoder.num_states)
    items = [Item(uid=p, path=Path(p)) for p in paths]
    with tempfile.TemporaryDirectory(prefix="marble-predict-") as tmp:
        d = extract(card, encoder, {"test": items}, tmp, splits=["test"], device=device, batch_size=batch_size,
                    num_workers=0, dtype=meta.get("compute_dtype") or "auto", states=states, progress=False,
                    max_chunk_seconds=float(meta.get("max_chunk_seconds") or 60.0))
        errors = read_manifest(d).get("errors", [])
        feats = FrameFeatures(encoder, states, device, d, "test", 0.0, card)
        done = [it for it in items if feats.store is not None and feats.store.has(it.uid)]
        beats = shipped_beats(probe, (feats(it) for it in done), states, device)
    skipped = [{"file": e.get("file"), "reason": e.get("reason")} for e in errors]
    return [Prediction(it.uid, {}, None, b) for it, b in zip(done, beats)], skipped


def stem_folders(paths: list[str], out_dir: Path) -> dict[str, Path]:
    """Where each input's stems go: ``out_dir/<file name without suffix>``, or ``out_dir/<parent folder>/<name>``
    for inputs that share a name (MUSDB's every track is a ``mixture.wav``), numbered if still equal."""
    names = [Path(p).stem for p in paths]
    out, used = {}, set()
    for p, n in zip(paths, names):
        rel = Path(n) if names.count(n) == 1 else Path(Path(p).resolve().parent.name) / n
        k, cand = 1, rel
        while cand in used:
            k += 1
            cand = rel.with_name(f"{rel.name}-{k}")
        used.add(cand)
        out[p] = out_dir / cand
    return out


def _predict_stems(probe: ShippedProbe, card, encoder, paths: list[str], device: str,
                   out_dir: Path) -> tuple[list[Prediction], list[dict]]:
    """The four stems of each file by a separation probe: the mixture read as the trainer reads its wav mixtures
    (:func:`marble.separation.stems.read_mixture`), features on the fly by the card's piece rule
    (:class:`marble.probe.frames.FrameFeatures`, the trainer's), the probe's rebuilt models through
    :func:`marble.separation.train.separate_track`; written as float32 wavs at the separation rate."""
    import soundfile as sf
    import torch

    from marble.audio import AudioError
    from marble.datasets.base import Item
    from marble.probe.frames import FrameFeatures, feature_layers
    from marble.separation import settings
    from marble.separation.stems import read_mixture
    from marble.separation.train import separate_track
    from marble.separation.workers import ModelWorkers

    want, have = probe.meta.get("separation") or {}, settings()
    if want != have:
        diff = "; ".join(f"{k}: probe {want.get(k)!r}, here {have.get(k)!r}" for k in sorted(set(want) | set(have))
                         if want.get(k) != have.get(k))
        raise MarbleError(f"the {card.id} probe was trained with other STFT/Wiener settings than this marble "
                          f"reconstructs with ({diff}); use the marble version that wrote it")
    rate = have["sample_rate"]
    if int(encoder.sample_rate) != rate:
        raise MarbleError(f"--model: separation probes read {rate} Hz features; encoder {encoder.name!r} runs at "
                          f"{encoder.sample_rate} Hz")
    models = probe.modules(device)
    states = feature_layers([m.layer for m in models], encoder.num_states)
    feats = FrameFeatures(encoder, states, device, None, "test", 0.0, card)
    folders = stem_folders(paths, out_dir)
    workers = ModelWorkers.for_device(device)  # the four models side by side on the CPU, as the trainer scored
    preds, skipped = [], []
    with torch.no_grad():
        for p in paths:
            try:
                mix, channels = read_mixture(p, rate)
                x = feats(Item(uid=p, path=Path(p)))[None]  # [1, S_sel, T, H]
            except (AudioError, ValueError) as e:
                skipped.append({"file": p, "reason": getattr(e, "reason", None) or str(e)})
                continue
            est = separate_track(torch.as_tensor(mix).to(device), x, models, states, device, workers)
            folder = folders[p]
            folder.mkdir(parents=True, exist_ok=True)
            stems = {}
            for m, e in zip(models, est):
                stems[m.target] = str(folder / f"{m.target}.wav")
                sf.write(stems[m.target], e.T, rate, subtype="FLOAT")
            notes = ([f"{p} is mono: its channel was duplicated to two (the probe separates stereo mixtures)"]
                     if channels == 1 else [])
            preds.append(Prediction(p, {}, stems=stems, notes=notes))
    return preds, skipped


def format_text(preds: list[Prediction], probe: ShippedProbe, top: int = 5) -> str:
    """One line per file: the top labels with their probability (multiclass), the top tags with their scores
    (multilabel), every target's value (regression), the beat times (beat probes, ms resolution; --format json
    gives them in full), or where the stems were written (separation probes)."""
    lines = []
    for p in preds:
        if p.stems is not None:
            folder = Path(next(iter(p.stems.values()))).parent
            rate = (probe.meta.get("separation") or {}).get("sample_rate", 0) / 1000
            body = f"stems {', '.join(p.stems)} written to {folder}/<stem>.wav ({rate:g} kHz, float)"
        elif p.beats is not None:
            body = f"{len(p.beats)} beats at " + (" ".join(f"{t:.3f}" for t in p.beats) or "-") + " s"
        elif probe.prediction == "regression":
            body = ", ".join(f"{k} {v:.4f}" for k, v in p.scores.items())
        else:
            best = sorted(p.scores.items(), key=lambda kv: -kv[1])[:top]
            body = ", ".join(f"{k} {v:.3f}" for k, v in best)
        lines.append(f"{p.file}: {body}")
    return "\n".join(lines)
