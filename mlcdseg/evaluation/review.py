"""What the pre-annotations saved: how reviewers treated them, and how long they took.

Each sample falls in one review outcome by the IoU of the submitted (human) mask against the
model's pre-annotation: accepted as it was (IoU >= 0.95), lightly corrected (0.5 <= IoU < 0.95)
or redrawn (IoU < 0.5). Per model version and per annotator, `ReviewMeter` counts the outcomes
and the annotators' lead times (Label Studio's `lead_time`, seconds per annotation).

Memory stays flat in the number of samples: a group keeps three counters and, per outcome, a
histogram of lead times over fixed log-spaced bins (at most `LeadTimeHistogram.BINS` counts, kept
sparse). The median is read from that histogram, so it is approximate: the geometric centre of
the bin that holds the median, within 1 % of the exact median for lead times between 0.1 s and
~4 days (shorter ones count in the first bin, longer ones in the last).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

#: Review outcomes, each with the lowest IoU that falls in it, best first.
OUTCOMES: tuple[tuple[str, float], ...] = (("accepted", 0.95), ("corrected", 0.5), ("redrawn", 0.0))


def review_outcome(iou: float) -> str:
    """The outcome of a sample: accepted (IoU >= 0.95), corrected (>= 0.5) or redrawn (< 0.5)."""
    for outcome, lowest in OUTCOMES:
        if iou >= lowest:
            return outcome
    return OUTCOMES[-1][0]


class LeadTimeHistogram:
    """Lead times in seconds counted in fixed log-spaced bins; an approximate median in bounded memory."""

    SMALLEST_S = 0.1
    RATIO = 1.02  # bin width: the median is within sqrt(1.02) - 1 < 1 % of the exact one
    BINS = 1000  # 0.1 s * 1.02**1000 ≈ 4 days

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self.count = 0

    def add(self, seconds: float) -> None:
        """Count one lead time (seconds >= 0)."""
        if seconds <= self.SMALLEST_S:
            index = 0
        else:
            index = min(int(math.log(seconds / self.SMALLEST_S) / math.log(self.RATIO)), self.BINS - 1)
        self._counts[index] += 1
        self.count += 1

    def median(self) -> float | None:
        """The approximate median in seconds (centre of the median's bin), None when empty."""
        if not self.count:
            return None
        middle = (self.count + 1) / 2  # the lower middle for an even count
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            if seen >= middle:
                return self.SMALLEST_S * self.RATIO ** (index + 0.5)
        raise AssertionError("unreachable: the counts add up to self.count")


class _ReviewGroup:
    """One group's outcome counts and lead-time histograms."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.lead_times: defaultdict[str, LeadTimeHistogram] = defaultdict(LeadTimeHistogram)

    def update(self, iou: float, lead_time: float | None) -> None:
        outcome = review_outcome(iou)
        self.outcomes[outcome] += 1
        if lead_time is not None:
            self.lead_times[outcome].add(lead_time)

    def compute(self) -> dict[str, Any]:
        samples = sum(self.outcomes.values())
        result: dict[str, Any] = {"samples": samples}
        for outcome, _ in OUTCOMES:
            count = self.outcomes[outcome]
            histogram = self.lead_times.get(outcome)
            median = histogram.median() if histogram else None
            result[outcome] = {
                "count": count,
                "share": count / samples if samples else None,
                "median_lead_time_s": None if median is None else round(median, 2),
                "lead_times": histogram.count if histogram else 0,
            }
        return result


class ReviewMeter:
    """Review outcomes and lead times per model version and per annotator, streamed sample by sample."""

    GROUPINGS = ("model_version", "annotator")

    def __init__(self) -> None:
        self._groups: dict[str, defaultdict[str, _ReviewGroup]] = {
            grouping: defaultdict(_ReviewGroup) for grouping in self.GROUPINGS
        }

    def update(self, model_version: str, annotator: str, iou: float, lead_time: float | None) -> None:
        """Count one sample: its IoU against the pre-annotation, the annotator's lead time in seconds (or None)."""
        self._groups["model_version"][model_version].update(iou, lead_time)
        self._groups["annotator"][annotator].update(iou, lead_time)

    def compute(self) -> dict[str, Any]:
        """report.json's "review": thresholds, then per model version and per annotator each outcome's
        count, share and median lead time (approximate, see the module docstring)."""
        return {
            "thresholds": {outcome: lowest for outcome, lowest in OUTCOMES},
            "median_lead_time": "approximate: log-spaced histogram, within 1 %",
            **{
                f"by_{grouping}": {name: group.compute() for name, group in sorted(groups.items())}
                for grouping, groups in self._groups.items()
            },
        }
