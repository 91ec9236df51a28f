"""Cost of the paired bootstrap behind `marble compare` and the leaderboard's tie groups: one model's task score on
every resample (marble.leaderboard.significance.task_score_resamples), on test sets of the real tasks' sizes with
synthetic outputs. Prints wall and process CPU seconds per task and resample count.

    python bench/bootstrap.py [--resamples 1000] [--tasks gtzan,emo,mtt,mtg-genre]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

#: test items of the real splits (files; GS songs): marble/splits/data and the cards' split decisions
SIZES = {"gtzan": 290, "emo": 125, "gs": 604, "nsynth-instrument": 4096, "mtt": 5329, "mtg-genre": 11479}


def outputs(task: str, n: int, rng):
    from marble.registry import get_card
    from marble.results.artifacts import TestOutputs

    card = get_card(task)
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
    ap.add_argument("--tasks", default="gtzan,emo,gs,mtt,mtg-genre")
    args = ap.parse_args()
    from marble.leaderboard.significance import Scored, task_score_resamples
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
        print(f"| {task} | {len(o)} x {o.estimate.shape[1]} | {args.resamples} | {wall:.1f} | {cpu:.1f} |")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
