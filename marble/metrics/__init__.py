"""Metrics, one function per metric in the style of mir_eval (``validate`` + compute).

Every metric has the signature ``fn(reference, estimate, *, labels=None) -> float`` where
``reference``/``estimate`` are per-file arrays (see each module), and ``labels`` is the task's
vocabulary (used where a metric needs a class name, e.g. keys or the R2 dimension).
``SCALE[name]`` is 100 for ratios (reported x100 in MARBLE tables) and 1 for dB.
"""

import math

from marble.metrics.classification import accuracy, ap_macro, roc_auc_macro
from marble.metrics.regression import r2_arousal, r2_mean, r2_valence
from marble.metrics.key import key_weighted_score
from marble.metrics.beat import beat_f_measure, beat_f_measure_pooled
from marble.metrics.separation import (
    museval_sdr_bass,
    museval_sdr_drums,
    museval_sdr_other,
    museval_sdr_vocals,
    sdr_bass,
    sdr_drums,
    sdr_mean,
    sdr_other,
    sdr_vocals,
)

METRICS = {
    f.__name__: f
    for f in (
        accuracy, roc_auc_macro, ap_macro, r2_mean, r2_valence, r2_arousal, key_weighted_score,
        beat_f_measure, beat_f_measure_pooled, sdr_mean, sdr_vocals, sdr_drums, sdr_bass, sdr_other,
        museval_sdr_vocals, museval_sdr_drums, museval_sdr_bass, museval_sdr_other,
    )
}

#: metrics that import an optional package: name -> module (marble.needs checks it before any work)
NEEDS = {name: "museval" for name in METRICS if name.startswith("museval_")}

SCALE = {name: (1.0 if "sdr" in name else 100.0) for name in METRICS}
#: the values a metric can take: ratios in [0, 1], R² at most 1, SDR in dB unbounded. A result outside
#: its metric's range is refused by the consistency check; confidence intervals are clipped to it.
RANGE = {name: ((-math.inf, math.inf) if "sdr" in name else (-math.inf, 1.0) if name.startswith("r2_") else (0.0, 1.0))
         for name in METRICS}
