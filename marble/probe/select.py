"""From window outputs to per-file (or per-song) scores, and the validation choice of a configuration.

PROTOCOL §2: every window is a training example; at validation/test the window **logits** of a file
are averaged, then softmax (multiclass) / sigmoid (multilabel) / identity (regression) is applied and
the file is scored. GS scores per **song**: the clips' (files') logits are aggregated with one of four
rules, chosen on validation; its training monitor is the best of the four rules each epoch (§4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

GROUP_RULES = ("vote", "max-logit", "mean-logit", "mean-prob")


@dataclass
class FileIndex:
    """Windows -> files: ``inverse[w]`` is the file row of window ``w``; files in first-appearance order."""

    keys: np.ndarray  # [F] uid (or group)
    inverse: np.ndarray  # [W]
    counts: np.ndarray  # [F]

    @classmethod
    def build(cls, ids: np.ndarray) -> "FileIndex":
        ids = np.asarray(ids)
        uniq, first, inverse, counts = np.unique(ids, return_index=True, return_inverse=True, return_counts=True)
        order = np.argsort(first, kind="stable")  # first-appearance order
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return cls(uniq[order], rank[inverse.reshape(-1)], counts[order])

    def __len__(self) -> int:
        return len(self.keys)


def file_labels(labels: np.ndarray, index: FileIndex, where: str = "split") -> np.ndarray:
    """One label per file (the windows of a file must agree)."""
    labels = np.asarray(labels)
    first = np.full(len(index), -1)
    first[index.inverse[::-1]] = np.arange(len(index.inverse))[::-1]
    out = labels[first]
    if not np.array_equal(out[index.inverse], labels):
        raise ValueError(f"{where}: windows of one file carry different labels; re-extract the cache")
    return out


def mean_per_file(outputs: torch.Tensor, index: FileIndex) -> torch.Tensor:
    """Average window outputs [P, W, C] per file -> [P, F, C] (float32 sums on the outputs' device)."""
    inv = torch.as_tensor(index.inverse, device=outputs.device)
    P, W, C = outputs.shape
    sums = torch.zeros(P, len(index), C, dtype=outputs.dtype, device=outputs.device)
    sums.index_add_(1, inv, outputs)
    return sums / torch.as_tensor(index.counts, dtype=outputs.dtype, device=outputs.device)[None, :, None]


def activate(logits: torch.Tensor, prediction: str) -> torch.Tensor:
    if prediction == "multiclass":
        return torch.softmax(logits, -1)
    if prediction == "multilabel":
        return torch.sigmoid(logits)
    if prediction == "regression":
        return logits
    raise ValueError(f"clip probes handle multiclass, multilabel or regression, not {prediction!r}")


def group_scores(outputs: torch.Tensor, index: FileIndex, rule: str) -> torch.Tensor:
    """Song scores [P, G, C] from clip logits [P, F, C] (multiclass) with one GS rule; the argmax of a
    song's scores is its predicted key, as in the reference's ensemble.

    vote: fraction of clips voting each class, ties to the **lowest class index** (``scipy.stats.mode``);
    max-logit: per class, the largest clip logit; mean-logit: softmax of the mean logits;
    mean-prob: mean of the clip softmax probabilities."""
    if rule == "mean-logit":
        return torch.softmax(mean_per_file(outputs, index), -1)
    if rule == "mean-prob":
        return mean_per_file(torch.softmax(outputs, -1), index)
    if rule == "max-logit":
        P, W, C = outputs.shape
        inv = torch.as_tensor(index.inverse, device=outputs.device)
        out = torch.full((P, len(index), C), -math.inf, dtype=outputs.dtype, device=outputs.device)
        return out.scatter_reduce_(1, inv.view(1, -1, 1).expand(P, W, C), outputs, "amax")
    if rule == "vote":
        C = outputs.shape[-1]
        frac = mean_per_file(torch.nn.functional.one_hot(outputs.argmax(-1), C).to(outputs.dtype), index)
        # vote fractions of one song differ by at least 1/count: a bias below that, falling with the
        # class index, makes the lowest index win a tie and nothing else
        bias = torch.arange(C, dtype=outputs.dtype, device=outputs.device) * (0.5 / (C * (index.counts.max() + 1)))
        return frac - bias
    raise ValueError(f"unknown group rule {rule!r} (known: {', '.join(GROUP_RULES)})")


def file_means(outputs: torch.Tensor, files: FileIndex) -> torch.Tensor:
    """The mean window logits of each file [P, F, C]: float64 outputs stay float64 (the shipped probe's path,
    :mod:`marble.probe.shipped`); others run in float32."""
    with torch.no_grad():
        return mean_per_file(outputs if outputs.dtype == torch.float64 else outputs.float(), files)


def estimates_of_means(per_file: torch.Tensor, groups: FileIndex | None, prediction: str,
                       rule: str | None = None) -> np.ndarray:
    """What the metrics consume, from the files' mean logits [P, F, C] (:func:`file_means`): per file their
    activation, or per song (``groups`` indexes the files) the scores of group ``rule`` -> numpy [P, F|G, C]."""
    with torch.no_grad():
        if rule is None:
            est = activate(per_file, prediction)
        else:
            if prediction != "multiclass":
                raise ValueError("group rules apply to multiclass tasks only")
            est = group_scores(per_file, groups, rule)
    return est.cpu().numpy()


def estimates(outputs: torch.Tensor, files: FileIndex, groups: FileIndex | None, prediction: str,
              rule: str | None = None) -> np.ndarray:
    """What the metrics consume, from window outputs [P, W, C]: per file the activated mean of its windows'
    logits, or per song the scores of group ``rule`` -> numpy [P, F|G, C] (:func:`estimates_of_means`)."""
    return estimates_of_means(file_means(outputs, files), groups, prediction, rule)


MetricFn = Callable[..., float]


def score(metric: MetricFn, reference: np.ndarray, estimate: np.ndarray, vocabulary: Sequence[str]) -> float:
    return float(metric(reference, estimate, labels=list(vocabulary)))


class Scorer:
    """Scores window outputs of one split: per file, or per song under a group rule."""

    def __init__(self, prediction: str, uids: np.ndarray, groups: np.ndarray, labels: np.ndarray,
                 metrics: Mapping[str, MetricFn], vocabulary: Sequence[str], where: str = "split"):
        self.prediction = prediction
        self.files = FileIndex.build(uids)
        self.ref_file = file_labels(labels, self.files, where)
        # songs over files (a file's windows must share its song), so group rules see clip logits
        self.groups = FileIndex.build(file_labels(groups, self.files, where + " (groups)"))
        self.ref_group = file_labels(self.ref_file, self.groups, where + " (groups)")
        self.metrics = dict(metrics)
        self.vocabulary = list(vocabulary)

    def estimates(self, outputs: torch.Tensor, rule: str | None = None) -> np.ndarray:
        """[P, F, C] numpy estimates (per file, or per song with ``rule``)."""
        return estimates(outputs, self.files, self.groups, self.prediction, rule)

    def reference(self, rule: str | None) -> np.ndarray:
        return self.ref_file if rule is None else self.ref_group

    def __call__(self, outputs: torch.Tensor, names: Sequence[str], rule: str | None = None) -> list[dict[str, float]]:
        return self.scores(self.estimates(outputs, rule), names, rule)

    def by_rule(self, outputs: torch.Tensor, names: Sequence[str],
                rules: Sequence[str]) -> dict[str, list[dict[str, float]]]:
        """``{rule: self(outputs, names, rule)}``, the files' mean logits computed once for all the rules."""
        per_file = file_means(outputs, self.files)
        return {r: self.scores(estimates_of_means(per_file, self.groups, self.prediction, r), names, r) for r in rules}

    def scores(self, est: np.ndarray, names: Sequence[str], rule: str | None = None) -> list[dict[str, float]]:
        """Metrics ``names`` of each probe's estimates ``est`` [P, F|G, C]."""
        ref = self.reference(rule)
        return [{n: score(self.metrics[n], ref, est[p], self.vocabulary) for n in names} for p in range(est.shape[0])]

    def main(self, name: str) -> Callable[[torch.Tensor], np.ndarray]:
        """``valid_score`` callback for the training loop: the main metric per file."""
        return lambda outputs: np.array([d[name] for d in self(outputs, [name])])

    def monitor(self, name: str, rules: Sequence[str] = (), direction: str = "max") -> Callable[[torch.Tensor], np.ndarray]:
        """The training monitor: the main metric per file, or with group ``rules`` (GS) the best of the
        rules' song-level scores, recomputed every epoch (the reference's ``valid_best_ensemble_score``)."""
        if not rules:
            return self.main(name)

        def best_rule(outputs: torch.Tensor) -> np.ndarray:
            by_rule = self.by_rule(outputs, [name], rules)
            per_rule = np.array([[d[name] for d in by_rule[r]] for r in rules])  # [rules, P]
            return np.array([per_rule[pick_best(per_rule[:, p], direction), p] for p in range(per_rule.shape[1])])
        return best_rule


def better(a: float, b: float, direction: str) -> bool:
    """Is ``a`` strictly better than ``b``? NaN is never better."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if direction == "max" else a < b


def pick_best(values: Sequence[float], direction: str) -> int:
    """Index of the best value (first one on ties, NaN never chosen unless all are NaN)."""
    best = 0
    for i, v in enumerate(values):
        if better(float(v), float(values[best]), direction):
            best = i
    return best
