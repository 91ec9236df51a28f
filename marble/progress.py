"""Progress of long work, the same way everywhere: a live bar on a terminal, one line per stage otherwise.

A log file or a CI console gets no carriage-return spam: :class:`Stage` prints a line when a stage starts
and one when it ends (with its duration); on a terminal it draws a tqdm bar. :class:`SweepProgress` is the
``on_epoch(epoch, active, best)`` callback of a probe sweep (clip and frame tasks): its bar shows the active
probes, the best validation score and an ETA from the measured epoch times (a fixed part and a part per active
probe) times the epochs left (an upper bound: early stopping only shortens it); its :meth:`SweepProgress.stage`
shows the work after the last epoch.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def interactive(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def say(msg: str, stream: TextIO | None = None) -> None:
    """One line on stderr that does not break a live tqdm bar (tqdm.write moves it)."""
    try:
        from tqdm import tqdm

        tqdm.write(msg, file=stream or sys.stderr)
    except Exception:  # pragma: no cover
        print(msg, file=stream or sys.stderr, flush=True)


def fmt_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _plural(unit: str) -> str:
    return {"batch": "batches"}.get(unit, unit + "s")  # the units marble counts: file, epoch, batch, step, ...


class Stage:
    """A unit-counted stage: ``with Stage("gtzan/train", total=120, unit="file") as st: st.update(1)``."""

    def __init__(self, label: str, total: int, unit: str = "it", *, enabled: bool = True, stream: TextIO | None = None,
                 live: bool | None = None, note: str = ""):
        self.label, self.total, self.unit, self.enabled, self.note = label, total, unit, enabled, note
        self.stream = stream or sys.stderr
        self.live = interactive(self.stream) if live is None else live
        self.done, self.postfix, self.t0, self.bar = 0, "", time.perf_counter(), None

    def __enter__(self) -> "Stage":
        if not self.enabled:
            return self
        if self.live:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.label, unit=self.unit, dynamic_ncols=True, file=self.stream)
        else:
            note = f" ({self.note})" if self.note else ""
            print(f"{self.label}: {self.total} {_plural(self.unit)}{note} ...", file=self.stream, flush=True)
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        else:
            extra = f", {self.postfix}" if self.postfix else ""
            print(f"{self.label}: {self.done}/{self.total} {_plural(self.unit)} in {fmt_seconds(time.perf_counter() - self.t0)}"
                  f"{extra}", file=self.stream, flush=True)
        self.enabled = False

    def __exit__(self, *exc) -> None:
        self.close()


#: the start line of a sweep says the epoch count is a cap (a sweep that ends at 57/57 stopped early, it did not
#: lose 43 epochs)
EARLY_STOP_NOTE = "at most; each probe stops early once its validation score stops improving"


class SweepProgress:
    """``on_epoch`` callback of a probe sweep with an ETA; use as a context manager around the sweep.

    The ETA models an epoch's time as ``fixed + per_probe * probes`` (a frame sweep pays per epoch for its training
    crops whatever number of probes still trains; every probe costs its training and validation), fitted by least
    squares to the epochs measured so far. Until the number of active probes has changed, the two cannot be told
    apart and the whole epoch time counts as fixed. Either way the ETA (the remaining epochs at the current number
    of active probes) is an upper bound: probes only stop. Work after the last epoch (a frame sweep's scoring of
    every probe on valid and test) gets its own stage line from :meth:`stage`."""

    def __init__(self, label: str, max_epochs: int, n_probes: int | None = None, *, enabled: bool = True,
                 stream: TextIO | None = None, live: bool | None = None):
        self.max_epochs, self.n_probes = int(max_epochs), n_probes
        self.bar_stage = Stage(label, self.max_epochs, "epoch", enabled=enabled, stream=stream, live=live,
                               note=EARLY_STOP_NOTE)
        self.last, self.epoch, self.t_last, self.best = None, 0, None, float("nan")
        self.samples: list[tuple[int, float]] = []  # (probes that trained, seconds) per epoch measured
        self.eta_s = float("nan")

    def __enter__(self) -> "SweepProgress":
        self.bar_stage.__enter__()
        self.t_last = time.perf_counter()
        return self

    def __call__(self, epoch: int, active: int, best: float) -> None:
        """After each epoch: ``active`` probes still training, ``best`` the best validation score so far."""
        if self.last is None:  # first report: one epoch just ran (a resumed sweep starts further on)
            self.n_probes = self.n_probes or active
            self.bar_stage.update(epoch - 1)
            self.epoch = epoch - 1
        ran = epoch - self.epoch
        if ran <= 0:
            return
        now = time.perf_counter()
        trained = self.last if self.last is not None else self.n_probes
        self.samples += [(trained, (now - self.t_last) / ran)] * ran
        self.last, self.epoch, self.t_last, self.best = active, epoch, now, best
        fixed, per_probe = epoch_model(self.samples)
        self.eta_s = (fixed + per_probe * active) * max(self.max_epochs - epoch, 0) if active else 0.0
        self.bar_stage.update(ran)
        self.bar_stage.set_postfix_str(f"active probes {active}/{self.n_probes}, best valid {best:.4f}, "
                                    f"ETA <= {fmt_seconds(self.eta_s)}")

    def _finish_epochs(self) -> None:
        if self.bar_stage.done < self.max_epochs and self.last == 0:
            self.bar_stage.set_postfix_str(f"early stopping: every probe stopped improving after {self.bar_stage.done} of "
                                           f"at most {self.max_epochs} epochs, best valid {self.best:.4f}")
        if self.bar_stage.done < self.max_epochs:
            self.bar_stage.total = self.bar_stage.done  # stopped early: every probe converged
            if self.bar_stage.bar is not None:
                self.bar_stage.bar.total = self.bar_stage.done
                self.bar_stage.bar.refresh()
        self.bar_stage.close()

    def stage(self, label: str, total: int, unit: str) -> Stage:
        """A stage after the epochs (the final scoring), shown like the sweep (the epochs' line ends first)."""
        enabled = self.bar_stage.enabled
        if enabled:
            self._finish_epochs()
        return Stage(label, total, unit, enabled=enabled, stream=self.bar_stage.stream, live=self.bar_stage.live)

    def __exit__(self, *exc) -> None:
        if self.bar_stage.enabled and exc[0] is None:
            self._finish_epochs()
        self.bar_stage.close()


def epoch_model(samples: list[tuple[int, float]]) -> tuple[float, float]:
    """``(fixed, per_probe)`` seconds of an epoch from ``(probes, seconds)`` samples: least squares, both >= 0;
    all fixed while the number of probes has not varied (the upper bound for fewer probes)."""
    if not samples:
        return float("nan"), 0.0
    n = [float(p) for p, _ in samples]
    t = [s for _, s in samples]
    mean_n, mean_t = sum(n) / len(n), sum(t) / len(t)
    var = sum((x - mean_n) ** 2 for x in n)
    if var == 0:
        return mean_t, 0.0
    per = sum((x - mean_n) * (y - mean_t) for x, y in zip(n, t)) / var
    fixed = mean_t - per * mean_n
    if per < 0:
        return mean_t, 0.0
    if fixed < 0:
        return 0.0, sum(t) / sum(n)
    return fixed, per
