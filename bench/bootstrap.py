"""Cost of the paired bootstrap behind `marble compare` and the leaderboard's tie groups: one model's task score on
every resample (marble.leaderboard.significance.task_score_resamples), on test sets of the real tasks' sizes with
synthetic outputs. Prints wall and process CPU seconds per task and resample count; for gtzan-beat also its
per-track ``beat_f_measure`` (reported beside the pooled main score, not part of the task score).

    python bench/bootstrap.py [--resamples 1000] [--tasks gtzan,emo,gs,mtt,mtg-genre,gtzan-beat]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

#: test items of the real splits (files; GS songs): marble/splits/data and the cards' split decisions
SIZES = {"gtzan": 290, "emo": 125, "gs": 604, "nsynth-instrument": 4096, "mtt": 5329, "mtg-genre": 11479,
         "gtzan-beat": 290}
#: card metrics outside the task score timed on their own row
EXTRA = {"gtzan-beat": ["beat_f_measure"]}
BEAT_FPS = 75.0  # MERT's frame rate: the pooled F's references are rounded to it


def beat_outputs(n: int, rng):
    """``n`` 30 s tracks at 100-150 BPM (about 2 beats/s): reference beats, and estimates with 25 ms jitter, 10 %
    of the beats missed, 5 % spurious, every 10th track at double tempo and one track without any estimate."""
    from marble.results.artifacts import TestOutputs

    refs, ests = [], []
    for i in range(n):
        period = 60.0 / rng.uniform(100, 150)
        ref = np.arange(rng.uniform(0, period), 30.0, period)
        kept = ref[rng.random(ref.size) > 0.1]
        est = kept + rng.normal(0, 0.025, kept.size)
        if i % 10 == 9:
            est = np.arange(est[0] if est.size else 0.1, 30.0, period / 2)
        est = np.concatenate([est, rng.uniform(0, 30, rng.binomial(ref.size, 0.05))])
        est = np.sort(est[(est >= 0) & (est < 30)])
        refs.append(ref)
        ests.append(est if i != 3 else np.zeros(0))
    return TestOutputs([f"{i:06d}" for i in range(n)], refs, ests, "track", (), None, BEAT_FPS)


def outputs(task: str, n: int, rng):
    from marble.registry import get_card
    from marble.results.artifacts import TestOutputs

    card = get_card(task)
    if card.prediction == "frame-binary":
        return beat_outputs(n, rng)
    C = card.num_outputs
    if card.prediction == "multiclass":
        ref = rng.integers(0, C, n)
        est = rng.random((n, C)).astype(np.float32)
        est[np.arange(n // 2), ref[: n // 2]] += 1
        est /= est.sum(1, keepdims=True)
    elif card.prediction == "multilabel":
        ref = (rng.random((n, C)) < 0.06).astype(np.uint8)
        est = (rng.random((n, C)) + 0.5 * ref).astype(np.float32)
    else:
        ref = rng.normal(size=(n, C)).astype(np.float32)
        est = (ref + rng.normal(size=(n, C))).astype(np.float32)
    return TestOutputs([f"{i:06d}" for i in range(n)], ref, est, "song" if task == "gs" else "file",
                       tuple(card.vocabulary()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--tasks", default="gtzan,emo,gs,mtt,mtg-genre,gtzan-beat")
    args = ap.parse_args()
    from marble.leaderboard.significance import Scored, task_score_resamples
    from marble.metrics.resample import indices, on_resamples
    from marble.registry import get_card

    rng = np.random.default_rng(0)
    print(f"| task | items x outputs | resamples | wall s | CPU s |")
    print("|---|---|---:|---:|---:|")
    for task in args.tasks.split(","):
        o = outputs(task, SIZES[task], rng)
        s = Scored("bench", None, {}, o)
        t0, c0 = time.perf_counter(), time.process_time()
        task_score_resamples(get_card(task), s, sorted(o.keys), args.resamples, 1234)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = (f"{len(o)} x {o.estimate.shape[1]}" if not o.ragged else
                f"{len(o)} tracks, {sum(len(e) for e in o.estimate)} estimated beats")
        print(f"| {task} | {size} | {args.resamples} | {wall:.2f} | {cpu:.2f} |")
        for name in EXTRA.get(task, []):
            t0, c0 = time.perf_counter(), time.process_time()
            f = on_resamples(name, *o.metric_inputs(name))
            for idx in indices(len(o), args.resamples, 1234):
                f(idx)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"| {task} ({name}) | {size} | {args.resamples} | {wall:.2f} | {cpu:.2f} |")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
