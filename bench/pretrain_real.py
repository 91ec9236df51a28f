"""The real pretraining run (issue 15): a k-means teacher, the tiny preset on real music, then a probe of the
exported model against the same architecture at random init. Not a CI test; every stage is skipped when its
output exists, so a rerun continues where it stopped (``--fresh`` starts over).

Stages (``--work DIR``, default ``runs/pretrain_real``):

1. ``audio/``: links to the Debian game soundtracks ``wesnoth-1.16-music`` and ``warzone2100-music``
   (``apt-get install -y wesnoth-1.16-music warzone2100-music``; ~6.2 h of ogg/opus by composers unrelated
   to this project);
2. ``teacher.safetensors``: ``marble pretrain teacher fit`` (log-mel 300 + chroma 200 clusters);
3. ``run/``: ``marble pretrain run --preset tiny --teacher kmeans:...``, stopped with Ctrl-C (SIGINT: the
   trainer finishes the step and saves) at ``--minutes`` if the steps are not done by then;
4. ``export/`` (pretrained) and ``random{seed}/`` (same preset, random init, exported the same way);
5. ``notes/``: the labelled probe set: single notes rendered with fluidsynth from the General MIDI SoundFont
   ``FluidR3_GM.sf2`` (``apt-get install -y fluidsynth fluid-soundfont-gm``): 8 instruments x 25 pitches
   (C3..C5) x 4 velocities, 1 s notes cut to 1.2 s clips (from 50 ms before the onset); labels: instrument
   (8 classes) on held-out pitches, pitch class (12) on held-out instruments (``split_of``); a split by
   velocity alone put near-copies of every test note in training and every model scored 100 %;
6. probe, twice:
   a. quick: every hidden state of each model, mean over time, standardised; scikit-learn ``MLPClassifier``
      (one 512-unit hidden layer) for LR in {1e-3, 5e-3}, select the state and LR on validation accuracy,
      report test accuracy; seeds 0, 1, 2 (probe initialisation, and the random model's initialisation);
   b. marble's own: the note set as two user tasks (``tasks/*.toml``, ``data/gmnotes/metadata-*.csv``,
      docs/user-tasks.md), ``marble extract`` + ``marble probe --track constrained`` (six LRs, every state and
      the learned weighted sum, batches of 64 files, selection on validation); the pretrained model with
      ``--seeds 3 --seeds-sweep``, each random init with its own seed; results in ``results/``; then the same
      on the semi-constrained track with a longer schedule (``LONG_SCHEDULE``: same head and LR grid, up to
      400 epochs, patience 50), a diagnostic of whether the constrained probe converged on this small set;
7. ``report.json`` and ``loss.png`` (the loss curve from ``run/log.jsonl``).

Usage: nice -n 5 python bench/pretrain_real.py [--work runs/pretrain_real] [--minutes 28] [--steps 6000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACKAGES = ("wesnoth-1.16-music", "warzone2100-music")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
# General MIDI programs (0-based): piano, vibraphone, organ, nylon guitar, violin, trumpet, alto sax, flute
INSTRUMENTS = {"piano": 0, "vibraphone": 11, "organ": 19, "guitar": 24, "violin": 40, "trumpet": 56, "sax": 65,
               "flute": 73}
PITCHES = list(range(48, 73))  # C3 .. C5
VELOCITIES = (64, 88, 100, 112)
SPLIT_NAMES = ("train", "valid", "test")
# held-out conditions, so that neither label can be read off a near-copy of a training note:
# instrument on unseen pitches (pitch mod 4: 0, 2 train; 3 valid; 1 test), pitch class on unseen instruments
_PITCH_SPLIT = {0: "train", 2: "train", 3: "valid", 1: "test"}
_INSTRUMENT_SPLIT = {"piano": "train", "organ": "train", "guitar": "train", "violin": "train", "vibraphone": "valid",
                     "sax": "valid", "trumpet": "test", "flute": "test"}


def split_of(clip: dict, label: str) -> str:
    return _PITCH_SPLIT[clip["pitch"] % 4] if label == "instrument" else _INSTRUMENT_SPLIT[clip["instrument"]]
SEEDS = (0, 1, 2)
LRS = (1e-3, 5e-3)
SR = 24000
NOTE_S, CLIP_S = 1.0, 1.5


def sh(cmd: list[str], **kw) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def marble_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "marble", *map(str, args)]


def stage_audio(work: Path) -> Path:
    d = work / "audio"
    if d.is_dir() and any(d.iterdir()):
        return d
    files = []
    for pkg in PACKAGES:
        try:
            listing = subprocess.run(["dpkg", "-L", pkg], check=True, capture_output=True, text=True).stdout
        except (subprocess.CalledProcessError, FileNotFoundError):
            sys.exit(f"error: Debian package {pkg} is not installed; run `apt-get install -y {' '.join(PACKAGES)}`")
        files += [Path(p) for p in listing.split() if p.endswith((".ogg", ".opus"))]
    d.mkdir(parents=True, exist_ok=True)
    for f in files:
        (d / "_".join(f.parts[-3:])).symlink_to(f)
    return d


def stage_teacher(work: Path, audio: Path, crops: int, features: str) -> Path:
    out = work / "teacher.safetensors"
    if not out.is_file():
        sh(marble_cmd("pretrain", "teacher", "fit", "--audio-dir", audio, "--out", out, "--crops", crops,
                      "--features", features, "-q"))
    return out


def stage_train(work: Path, audio: Path, teacher: Path, a) -> Path:
    run = work / "run"
    cmd = marble_cmd("pretrain", "run", "--audio-dir", audio, "--out", run, "--preset", "tiny", "--teacher",
                     f"kmeans:{teacher}", "--steps", a.steps, "--crop-seconds", a.crop_seconds, "--warmup-steps", a.warmup, "--batch-size", a.batch_size,
                     "--save-every", 50, "--log-every", 5, "--num-workers", 1, "--seed", a.seed, "-q")
    done = run / "done.json"
    if done.is_file():
        return run
    print("+", " ".join(map(str, cmd)), flush=True)
    t0 = time.time()
    p = subprocess.Popen([str(c) for c in cmd])
    try:
        p.wait(timeout=a.minutes * 60)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)  # the trainer finishes the step, saves the checkpoint and exits
        p.wait()
    last = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()][-1]
    (done).write_text(json.dumps({"wall_s": time.time() - t0, "returncode": p.returncode, "last": last,
                                  "command": " ".join(map(str, cmd[2:]))}))
    return run


def stage_export(work: Path, run: Path) -> dict[str, Path]:
    import torch

    from marble.encoders.mert import save_mert_dir
    from marble.pretrain.config import Preset
    from marble.pretrain.export import backbone_state_dict, mert_config_dict
    from marble.pretrain.model import MERTPretrainModel
    from marble.pretrain.trainer import load_checkpoint

    models = {"pretrained": work / "export"}
    if not (models["pretrained"] / "config.json").is_file():
        sh(marble_cmd("pretrain", "export", run, models["pretrained"]))
    preset = Preset.from_dict(load_checkpoint(run)["preset"])
    for seed in SEEDS:
        d = models[f"random{seed}"] = work / f"random{seed}"
        if not (d / "config.json").is_file():
            torch.manual_seed(seed)
            m = MERTPretrainModel(preset)
            save_mert_dir(d, mert_config_dict(preset), backbone_state_dict(m.state_dict()),
                          normalize=preset.normalize, sample_rate=preset.sample_rate)
    return models


def write_midi(path: Path, program: int, notes: list[tuple[int, int]]) -> None:
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: 960 ticks per second
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.Message("program_change", program=program, channel=0, time=0))
    on, gap = int(NOTE_S * 960), int((CLIP_S - NOTE_S) * 960)
    for pitch, vel in notes:
        tr.append(mido.Message("note_on", note=pitch, velocity=vel, channel=0, time=gap))
        tr.append(mido.Message("note_off", note=pitch, velocity=0, channel=0, time=on))
    mid.save(str(path))


def stage_notes(work: Path) -> dict:
    import soundfile as sf

    d = work / "notes"
    index = d / "index.json"
    if index.is_file():
        return json.loads(index.read_text())
    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
        sys.exit("error: fluidsynth or the GM SoundFont is missing; run `apt-get install -y fluidsynth "
                 "fluid-soundfont-gm`")
    d.mkdir(parents=True, exist_ok=True)
    clips = []
    all_vel = list(VELOCITIES)
    for name, prog in INSTRUMENTS.items():
        notes = [(p, v) for v in all_vel for p in PITCHES]
        mid, wav = d / f"{name}.mid", d / f"{name}.wav"
        write_midi(mid, prog, notes)
        sh(["fluidsynth", "-ni", "-g", "0.8", "-r", SR, "-F", wav, SOUNDFONT, mid], stdout=subprocess.DEVNULL)
        x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        assert sr == SR, sr
        step = int(CLIP_S * SR)
        for i, (p, v) in enumerate(notes):
            start = int((CLIP_S - NOTE_S) * SR) + i * step - int(0.05 * SR)  # 50 ms before the onset
            seg = x[max(0, start):start + int(1.2 * SR)]
            f = d / f"{name}_{p}_{v}.wav"
            sf.write(str(f), seg, SR)
            clips.append({"file": f.name, "instrument": name, "pitch": p, "pitch_class": p % 12, "velocity": v})
        wav.unlink()
    meta = {"clips": clips, "soundfont": str(SOUNDFONT), "instruments": INSTRUMENTS}
    index.write_text(json.dumps(meta))
    return meta


def embed(model_dir: Path, notes_dir: Path, clips: list[dict]) -> np.ndarray:
    """``[N, S, H]``: time-mean of every hidden state, through marble's own encoder loader."""
    import soundfile as sf
    import torch

    from marble.encoders import load_encoder

    enc = load_encoder(str(model_dir))
    out = []
    with torch.no_grad():
        for c in clips:
            x, _ = sf.read(str(notes_dir / c["file"]), dtype="float32")
            h = enc.hidden_states(torch.from_numpy(enc.prepare(x))[None])[0]  # [S, T, H]
            out.append(h.mean(dim=1).numpy())
    return np.stack(out)


def probe(X: np.ndarray, clips: list[dict], label: str, seed: int) -> dict:
    """Select the hidden state and LR on validation accuracy; report test accuracy of that choice."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    y = np.array([c[label] for c in clips])
    split = np.array([split_of(c, label) for c in clips])
    best = None
    for s in range(X.shape[1]):
        sc = StandardScaler().fit(X[split == "train", s])
        xs = {k: sc.transform(X[split == k, s]) for k in SPLIT_NAMES}
        for lr in LRS:
            clf = MLPClassifier(hidden_layer_sizes=(512,), learning_rate_init=lr, batch_size=64, max_iter=200,
                                random_state=seed).fit(xs["train"], y[split == "train"])
            va = float((clf.predict(xs["valid"]) == y[split == "valid"]).mean())
            if best is None or va > best["valid"]:
                te = float((clf.predict(xs["test"]) == y[split == "test"]).mean())
                best = {"state": s, "lr": lr, "valid": va, "test": te}
    return best


LABELS = ("instrument", "pitch_class")
TASK_IDS = {"instrument": "gmnotes-instrument", "pitch_class": "gmnotes-pitchclass"}
_CARD = """id = "{id}"
version = 1
protocol = "user-gmnotes"
name = "GM notes: {label} ({held_out})"
dataset = "folder"
prediction = "multiclass"

[source]
subdir = "gmnotes"
metadata = "{table}"

[labels]
values = {values}

[splits]
source = "{table}"

[training]
loss = "cross-entropy"

[metrics]
main = "accuracy"
names = ["accuracy"]
"""


def stage_user_tasks(work: Path, meta: dict) -> tuple[Path, Path]:
    """The note set as two marble user tasks (docs/user-tasks.md): one folder of audio, one metadata table
    per label with this script's held-out splits, one card each; every other card field is the constrained
    protocol's default (one 512-unit layer, dropout 0.2, batches of 64 files, six LRs, every state and the
    learned weighted sum, selection on validation)."""
    import csv

    tasks, data = work / "tasks", work / "data"
    ds = data / "gmnotes"
    (ds / "audio").mkdir(parents=True, exist_ok=True)
    tasks.mkdir(exist_ok=True)
    clips = meta["clips"]
    for c in clips:
        dst = ds / "audio" / c["file"]
        if not dst.exists():  # a hard link (a symbolic one out of the dataset folder is refused by marble)
            src = (work / "notes" / c["file"]).resolve()
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    for label in LABELS:
        table = f"metadata-{label}.csv"
        with open(ds / table, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split"])
            for c in clips:
                w.writerow([f"audio/{c['file']}", str(c[label]), split_of(c, label)])
        values = sorted({str(c[label]) for c in clips}, key=lambda v: (len(v), v))
        held_out = "unseen pitches" if label == "instrument" else "unseen instruments"
        (tasks / f"{TASK_IDS[label]}.toml").write_text(_CARD.format(
            id=TASK_IDS[label], label=label.replace("_", " "), held_out=held_out, table=table,
            values=json.dumps(values)))
    return tasks, data


#: the semi-constrained diagnostic: the constrained head and LR grid, trained up to 4x longer with 2.5x the
#: early-stopping patience (on ~400 training clips, 7 batches an epoch, the constrained probe stops before it
#: converges: its best rows sit at the top of the LR grid and stop early)
LONG_SCHEDULE = """[head]
hidden = [512]
dropout = 0.2

[training]
learning_rates = [5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]
max_epochs = 400
early_stop_patience = 50
"""
TRACKS = ("constrained", "semi-constrained")


def marble_probe(work: Path, models: dict[str, Path], tasks: Path, data: Path) -> list[dict]:
    """``marble extract`` + ``marble probe`` on both user tasks, as a user runs them, on the constrained track
    and on the semi-constrained track with :data:`LONG_SCHEDULE`: the pretrained model with ``--seeds 3
    --seeds-sweep`` (the whole sweep and its selection per probe seed), each random init with the probe seed
    equal to its init seed. Results land in ``WORK/results``."""
    from marble.results import read_result, result_path

    rows = []
    common = ["--tasks-dir", tasks, "--data-dir", data, "--cache-dir", work / "cache"]
    long_cfg = work / "long-schedule.toml"  # not in tasks/: every .toml there is read as a card
    long_cfg.write_text(LONG_SCHEDULE)
    for name, d in models.items():
        for label in LABELS:
            task = TASK_IDS[label]
            for track in TRACKS:
                res = result_path(work / "results", name, task, track)
                if not res.is_file():
                    if not result_path(work / "results", name, task, TRACKS[0]).is_file():
                        sh(marble_cmd("extract", "--model", d, "--task", task, "--device", "cpu", "--num-workers", 0,
                                      "-q", *common))
                    seed_args = (["--seed", SEEDS[0], "--seeds", len(SEEDS), "--seeds-sweep"] if name == "pretrained"
                                 else ["--seed", int(name[len("random"):])])
                    config = ["--config", long_cfg] if track == "semi-constrained" else []
                    sh(marble_cmd("probe", "--model", d, "--name", name, "--task", task, "--track", track, *config,
                                  "--results-dir", work / "results", "--device", "cpu", *seed_args, *common))
                r = read_result(res, tasks_dir=tasks)
                per_seed = (r["seeds"]["values"] if r.get("seeds") else [r["test"]["accuracy"]])
                seeds = r["seeds"]["seeds"] if r.get("seeds") else [r["manifest"]["seed"]]
                for i, (sd, v) in enumerate(zip(seeds, per_seed)):
                    rows.append({"model": "pretrained" if name == "pretrained" else "random init", "seed": int(sd),
                                 "label": label, "track": track, "test": float(v),
                                 # the result records the first seed's selection only
                                 "selected": r["selected"] if i == 0 else None, "result": str(res)})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(results: list[dict]) -> dict:
    out = {}
    for model in ("pretrained", "random init"):
        for label in LABELS:
            v = [r["test"] for r in results if r["model"] == model and r["label"] == label]
            if v:
                out[f"{model}/{label}"] = {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)),
                                           "min": float(np.min(v)), "max": float(np.max(v)), "seeds": v}
    return out


def plot_loss(run: Path, out: Path, codebooks: list[tuple[str, int]]) -> None:
    """Each logged value (one batch of crops, faint) and its running mean over 20 logs (solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    steps = np.array([r["step"] for r in rows])
    w = min(20, len(rows))

    def curve(a, key: str, c: str, label: str | None = None) -> None:
        v = np.array([r[key] for r in rows], dtype=float)
        a.plot(steps, v, c=c, alpha=0.25, lw=0.7)
        a.plot(steps[w - 1:], np.convolve(v, np.ones(w) / w, mode="valid"), c=c, lw=1.8, label=label)

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    curve(ax[0], "loss", "C0")
    ax[0].set_title("total loss")
    for i, (name, k) in enumerate(codebooks):
        curve(ax[1], f"ce_{i}", f"C{i}", f"{name} codes ({k})")
        ax[1].axhline(np.log(k), ls=":", c=f"C{i}")
    ax[1].set_title("masked-prediction CE (dotted: uniform)")
    ax[1].legend()
    curve(ax[2], "cqt", "C2")
    ax[2].set_title("CQT MSE")
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(str(out), dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "pretrain_real")
    ap.add_argument("--minutes", type=float, default=28.0, help="wall limit of the training stage")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop-seconds", type=float, default=2.0)
    ap.add_argument("--teacher-crops", type=int, default=256)
    ap.add_argument("--teacher-features", default="logmel,chroma",
                    help="built-in frame features of the k-means teacher (`teacher fit --features`)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pretraining run (crops, masks, init)")
    ap.add_argument("--stop-after", choices=["train", "export", "notes"], default=None)
    ap.add_argument("--fresh", action="store_true", help="delete --work first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process (embedding, probes); "
                    "one avoids OpenMP spinning on a busy shared machine")
    a = ap.parse_args()
    import torch
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency: numpy's BLAS threads too

    torch.set_num_threads(a.threads)
    threadpool_limits(a.threads)
    if a.fresh and a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    audio = stage_audio(a.work)
    teacher = stage_teacher(a.work, audio, a.teacher_crops, a.teacher_features)
    run = stage_train(a.work, audio, teacher, a)
    if a.stop_after == "train":
        return
    models = stage_export(a.work, run)
    if a.stop_after == "export":
        return
    meta = stage_notes(a.work)
    if a.stop_after == "notes":
        return
    clips = meta["clips"]
    emb_dir = a.work / "embeddings"
    emb_dir.mkdir(exist_ok=True)
    results = []
    for name, d in models.items():
        f = emb_dir / f"{name}.npy"
        if not f.is_file():
            np.save(f, embed(d, a.work / "notes", clips))
        X = np.load(f)
        seeds = SEEDS if name == "pretrained" else (int(name[len("random"):]),)
        for seed in seeds:
            for label in ("instrument", "pitch_class"):
                r = probe(X, clips, label, seed)
                results.append({"model": "pretrained" if name == "pretrained" else "random init", "seed": seed,
                                "label": label, **r})
                print(json.dumps(results[-1]), flush=True)
    from marble.pretrain.teachers.kmeans import KMeansTeacher

    t = KMeansTeacher(teacher)
    plot_loss(run, a.work / "loss.png", list(zip(t.names, t.codebook_sizes)))
    tasks, data = stage_user_tasks(a.work, meta)
    marble_rows = marble_probe(a.work, models, tasks, data)
    summary = summarise(results)
    report = {"train": json.loads((run / "done.json").read_text()), "results": results, "summary": summary,
              "marble_probe": {"results": marble_rows,
                               "summary": {t: summarise([r for r in marble_rows if r["track"] == t]) for t in TRACKS}},
              "n_clips": {lab: {k: sum(split_of(c, lab) == k for c in clips) for k in SPLIT_NAMES}
                          for lab in LABELS}}
    (a.work / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({"sklearn probe": summary, "marble probe": report["marble_probe"]["summary"]}, indent=1))


if __name__ == "__main__":
    main()
