"""Does the prediction score find the masks that need fixing? Ranking figures of (score, IoU) pairs.

A sample's score is the model's `score` in [0, 1] on its prediction (low: check this one first);
its IoU is that of the model mask against the human mask. Per model version:

- `auroc`: the area under the ROC curve of (1 - score) as a detector of the masks that were
  redrawn (IoU < REDRAWN_IOU_BELOW): the probability that a redrawn mask scored lower than a kept
  one, a tie counting 1/2 (the Mann-Whitney U statistic over positives x negatives). 0.5 is
  chance, 1.0 a perfect ranking. Undefined (None) without both kinds of mask.
- `spearman`: Spearman's rank correlation of score and IoU (Pearson's correlation of the
  average ranks, so ties share their mean rank). Undefined with fewer than two samples or when
  either side is constant.
- `review_curve`: the share of the masks that needed fixing (IoU < NEEDS_FIXING_IOU_BELOW)
  that a reviewer finds by checking the lowest-scored REVIEW_PERCENTS % of samples first
  (ceil(percent x samples / 100) of them), against random order, which finds on average the
  share reviewed. Samples tied on the score at the cut count in proportion (the mean over every
  order of the tie), so the figure never depends on the order of equal scores. Undefined when
  no mask needed fixing.
- `iou_by_score_bin`: samples and mean IoU per score bin (SCORE_BINS equal bins over [0, 1]),
  for the page's plot of IoU against score.

Every undefined figure is None, with its reason beside it. The statistics are pure functions of
two float arrays; `ScoreRankingMeter` collects the pairs while an export streams, 16 bytes per
scored sample (two float64 per model version), which the ranks need: no bounded-memory sketch
gives exact ranks.
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A mask with an IoU below this against the human mask was redrawn (as review.OUTCOMES counts it).
REDRAWN_IOU_BELOW = 0.5
#: A mask with an IoU below this against the human mask needed fixing.
NEEDS_FIXING_IOU_BELOW = 0.9
#: The shares of samples, lowest score first, at which the review curve is read.
REVIEW_PERCENTS: tuple[int, ...] = (10, 20, 50)
SCORE_BINS = 10
NO_SCORED_SAMPLE = "no sample's prediction carries a score"


@dataclass(frozen=True)
class Figure:
    """A figure and, when it is undefined (None), the reason why."""

    value: float | None
    reason: str | None = None

    def record(self) -> dict[str, Any]:
        """The figure as report.json writes it: {"value", "reason"}."""
        return {"value": self.value, "reason": self.reason}


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, equal values sharing the mean of their ranks (float64, shape (n,))."""
    distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)  # the highest rank each distinct value takes
    mean_rank = last_rank - (counts - 1) / 2.0
    return mean_rank[inverse.reshape(-1)].astype(np.float64)


def auroc_of_low_score(scores: np.ndarray, positives: np.ndarray) -> Figure:
    """AUROC of (1 - score) for the bool `positives` (shape (n,)): P(score of a positive < a negative's), ties 1/2."""
    positive_count = int(np.count_nonzero(positives))
    negative_count = len(positives) - positive_count
    if len(positives) == 0:
        return Figure(None, NO_SCORED_SAMPLE)
    if positive_count == 0 or negative_count == 0:
        kind = "no sample is" if positive_count == 0 else "every sample is"
        return Figure(None, f"{kind} a positive; the AUROC needs both kinds")
    ranks = average_ranks(-np.asarray(scores, dtype=np.float64))  # high rank: low score
    u_statistic = ranks[positives].sum() - positive_count * (positive_count + 1) / 2.0
    return Figure(float(u_statistic / (positive_count * negative_count)))


def spearman(first: np.ndarray, second: np.ndarray) -> Figure:
    """Spearman's rank correlation of two arrays of shape (n,), average ranks for ties."""
    if len(first) < 2:
        return Figure(None, "fewer than two scored samples" if len(first) else NO_SCORED_SAMPLE)
    first_ranks, second_ranks = average_ranks(first), average_ranks(second)
    first_ranks -= first_ranks.mean()
    second_ranks -= second_ranks.mean()
    spread = math.sqrt(float(np.dot(first_ranks, first_ranks)) * float(np.dot(second_ranks, second_ranks)))
    if spread == 0.0:
        return Figure(None, "every score or every IoU is the same; a rank correlation needs both to vary")
    return Figure(float(np.clip(np.dot(first_ranks, second_ranks) / spread, -1.0, 1.0)))


def found_in_lowest(scores: np.ndarray, targets: np.ndarray, reviewed: int) -> float:
    """How many of the bool `targets` the `reviewed` lowest-scored samples hold, ties at the cut in proportion."""
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_targets = scores[order], targets[order]
    if reviewed <= 0:
        return 0.0
    cut_score = sorted_scores[reviewed - 1]
    below = sorted_scores < cut_score
    tied = sorted_scores == cut_score
    taken_of_tie = reviewed - int(np.count_nonzero(below))
    found_below = float(np.count_nonzero(sorted_targets & below))
    return found_below + taken_of_tie * np.count_nonzero(sorted_targets & tied) / np.count_nonzero(tied)


def review_curve(scores: np.ndarray, targets: np.ndarray, percents: Sequence[int] = REVIEW_PERCENTS) -> dict[str, Any]:
    """Share of the bool `targets` found by reviewing the lowest-scored `percents` % first, against random order."""
    samples, target_count = len(targets), int(np.count_nonzero(targets))
    reason = None if target_count else "no mask needed fixing" if samples else NO_SCORED_SAMPLE
    points = []
    for percent in percents:
        reviewed = -(-percent * samples // 100)  # ceil without floating point
        found = found_in_lowest(scores, targets, reviewed) / target_count if target_count else None
        points.append({
            "percent": percent,
            "reviewed": reviewed,
            "found": Figure(found, reason).record(),
            "random": reviewed / samples if samples else None,
        })
    return {"needs_fixing": target_count, "points": points}


def iou_by_score_bin(scores: np.ndarray, ious: np.ndarray, bins: int = SCORE_BINS) -> list[dict[str, Any]]:
    """Per equal score bin over [0, 1] (a score of 1 in the last): its edges, samples and mean IoU (None if empty)."""
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=ious, minlength=bins)
    return [
        {"from": bin_index / bins, "to": (bin_index + 1) / bins, "samples": int(count),
         "mean_iou": float(total / count) if count else None}
        for bin_index, (count, total) in enumerate(zip(counts, sums))
    ]


def ranking_figures(scores: np.ndarray, ious: np.ndarray) -> dict[str, Any]:
    """Every figure of the module docstring for float arrays of scores in [0, 1] and IoUs, shape (n,)."""
    scores, ious = np.asarray(scores, dtype=np.float64), np.asarray(ious, dtype=np.float64)
    return {
        "scored_samples": len(scores),
        "auroc": auroc_of_low_score(scores, ious < REDRAWN_IOU_BELOW).record(),
        "spearman": spearman(scores, ious).record(),
        "review_curve": review_curve(scores, ious < NEEDS_FIXING_IOU_BELOW),
        "iou_by_score_bin": iou_by_score_bin(scores, ious),
    }


class _VersionPairs:
    """The (score, IoU) pairs of one model version as float64 arrays, and its unscored samples."""

    def __init__(self) -> None:
        self.scores = array("d")
        self.ious = array("d")
        self.unscored = 0


class ScoreRankingMeter:
    """Collects (score, IoU) per model version while samples stream; compute() gives the figures."""

    def __init__(self) -> None:
        self._versions: defaultdict[str, _VersionPairs] = defaultdict(_VersionPairs)

    def update(self, model_version: str, score: float | None, iou: float) -> None:
        """Count one sample; a sample whose prediction has no score is only counted as unscored."""
        pairs = self._versions[model_version]
        if score is None:
            pairs.unscored += 1
            return
        pairs.scores.append(score)
        pairs.ious.append(iou)

    def compute(self) -> dict[str, Any]:
        """report.json's "score_ranking": thresholds, then per model version its figures (see the module docstring)."""
        by_version = {}
        for version, pairs in sorted(self._versions.items()):
            scores, ious = (np.frombuffer(values, dtype=np.float64).copy() for values in (pairs.scores, pairs.ious))
            figures = ranking_figures(scores, ious)
            by_version[version] = {"unscored_samples": pairs.unscored, **figures}
        return {
            "thresholds": {"redrawn_iou_below": REDRAWN_IOU_BELOW, "needs_fixing_iou_below": NEEDS_FIXING_IOU_BELOW},
            "by_model_version": by_version,
        }
