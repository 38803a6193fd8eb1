"""RefCOCO referring-segmentation metrics as streaming counters.

Conventions (as LISA, EVF-SAM, GLaMM and MLCD-Seg compute them):

- one sample is one (image, expression) pair, masks compared at the image's own size;
- cIoU = sum of intersections / sum of unions over all samples;
- gIoU = mean of per-sample IoU, where a sample whose masks are both empty scores 1.0;
- precision@k = share of samples with IoU >= k;
- a sample with an empty reference mask is a no-target sample (gRefCOCO): N-acc is the share
  of no-target samples the model left empty, T-acc the share of target samples it did not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from mlcdseg.masks.codecs import iou_from_counts, overlap

PRECISION_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
#: The metrics RefSegMeter.compute gives as fractions in [0, 1], in report order.
FRACTION_KEYS: tuple[str, ...] = (
    "cIoU",
    "gIoU",
    *(f"precision@{threshold}" for threshold in PRECISION_THRESHOLDS),
    "N-acc",
    "T-acc",
)
#: Every key of RefSegMeter.compute: the fractions, then the sample counts.
METRIC_KEYS: tuple[str, ...] = (*FRACTION_KEYS, "samples", "no_target_samples")


@dataclass
class RefSegMeter:
    """Accumulates the sufficient statistics of the RefCOCO metrics; memory is flat in samples."""

    intersection_sum: int = 0
    union_sum: int = 0
    iou_sum: float = 0.0
    samples: int = 0
    precision_hits: list[int] = field(default_factory=lambda: [0] * len(PRECISION_THRESHOLDS))
    no_target_samples: int = 0
    no_target_left_empty: int = 0
    target_found: int = 0

    def update(self, predicted: np.ndarray, reference: np.ndarray) -> None:
        """Add one sample from two masks (H, W) of the same size: bool, or integer with non-zero as foreground.

        MaskFormatError when they are not 2-D masks or differ in size.
        """
        self.update_counts(*overlap(predicted, reference))

    def update_counts(
        self, intersection: int, union: int, predicted_area: int, reference_area: int
    ) -> None:
        """Add one sample from its pixel counts (for callers that already measured the masks)."""
        if not 0 <= intersection <= min(predicted_area, reference_area) or union != (
            predicted_area + reference_area - intersection
        ):
            raise ValueError(
                f"inconsistent counts: intersection={intersection} union={union} "
                f"predicted_area={predicted_area} reference_area={reference_area}"
            )
        iou = iou_from_counts(intersection, union)
        self.intersection_sum += intersection
        self.union_sum += union
        self.iou_sum += iou
        self.samples += 1
        for index, threshold in enumerate(PRECISION_THRESHOLDS):
            if iou >= threshold:
                self.precision_hits[index] += 1
        if reference_area == 0:
            self.no_target_samples += 1
            if predicted_area == 0:
                self.no_target_left_empty += 1
        elif predicted_area > 0:
            self.target_found += 1

    def merge(self, other: RefSegMeter) -> None:
        """Fold another meter's samples into this one (for parallel workers)."""
        for counter in fields(self):
            mine, theirs = getattr(self, counter.name), getattr(other, counter.name)
            if isinstance(mine, list):
                setattr(self, counter.name, [a + b for a, b in zip(mine, theirs)])
            else:
                setattr(self, counter.name, mine + theirs)

    def reset(self) -> None:
        """Forget every sample."""
        self.__dict__.update(RefSegMeter().__dict__)

    def compute(self) -> dict[str, float | int | None]:
        """The metrics as fractions in [0, 1]; None where no sample defines them."""
        target_samples = self.samples - self.no_target_samples
        result: dict[str, float | int | None] = {
            "cIoU": _ratio(self.intersection_sum, self.union_sum),
            "gIoU": _ratio(self.iou_sum, self.samples),
        }
        for threshold, hits in zip(PRECISION_THRESHOLDS, self.precision_hits):
            result[f"precision@{threshold}"] = _ratio(hits, self.samples)
        result["N-acc"] = _ratio(self.no_target_left_empty, self.no_target_samples)
        result["T-acc"] = _ratio(self.target_found, target_samples)
        result["samples"] = self.samples
        result["no_target_samples"] = self.no_target_samples
        return result


def _ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None for an empty denominator."""
    return numerator / denominator if denominator else None
