"""One sample scored: a human mask (reference) against one model version's mask, as pixel counts.

Shared by `evaluate` (RefCOCO metrics) and `export-refcoco` (per-sentence IoU), so that both
count pixels the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlcdseg.errors import MaskFormatError
from mlcdseg.evaluation.samples import HumanSample, ModelPrediction, decode_regions
from mlcdseg.labelstudio.regions import Region
from mlcdseg.labelstudio.tasks import SkipCode, Unusable
from mlcdseg.masks.codecs import iou_from_counts, overlap


@dataclass(frozen=True)
class ScoredSample:
    """The pixel counts of one sample: human mask (reference) against model mask (predicted)."""

    task_id: Any
    expression: str | None
    split: str | None
    model_version: str
    annotator: str
    intersection: int
    union: int
    human_area: int
    model_area: int
    image: str | None = None
    #: Seconds the annotator spent on the human mask (Label Studio's `lead_time`); None when not recorded.
    lead_time: float | None = None
    #: The model's score in [0, 1] on its prediction (samples.prediction_score); None when it sent none.
    score: float | None = None

    @property
    def iou(self) -> float:
        """IoU of the sample; 1.0 when both masks are empty."""
        return iou_from_counts(self.intersection, self.union)

    def row(self) -> dict[str, Any]:
        """The sample as a samples.csv row (see report.SAMPLE_COLUMNS)."""
        return {**asdict(self), "iou": round(self.iou, 6)}


@dataclass(frozen=True)
class ComparedSample:
    """A scored sample with both masks kept encoded as regions (brush RLE or polygons), so the
    worst ones can be drawn later without holding every decoded mask."""

    sample: ScoredSample
    human_regions: tuple[Region, ...]
    model_regions: tuple[Region, ...]
    image_size: tuple[int, int] | None

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(human, model) bool (H, W) masks."""
        return decode_regions(self.human_regions, self.image_size), decode_regions(self.model_regions, self.image_size)


def compare(human: HumanSample, prediction: ModelPrediction) -> ComparedSample:
    """Decode both masks at the image's size and count pixels; Unusable when they can't be compared."""
    human_size, model_size = human.image_size, prediction.image_size
    if human_size and model_size and human_size != model_size:
        raise Unusable(
            SkipCode.SIZE_MISMATCH,
            f"the human mask is {human_size[1]}x{human_size[0]} but model version "
            f"{prediction.model_version} drew on {model_size[1]}x{model_size[0]}",
        )
    image_size = human_size or model_size
    try:
        human_mask = human.mask(image_size)
    except MaskFormatError as error:
        raise Unusable(SkipCode.CORRUPT_MASK, f"the human mask of {human.annotator}: {error}") from None
    try:
        model_mask = decode_regions(prediction.regions, image_size)
    except MaskFormatError as error:
        raise Unusable(SkipCode.CORRUPT_MASK, f"model version {prediction.model_version}: {error}") from None
    counts = overlap(model_mask, human_mask)
    sample = ScoredSample(
        task_id=human.task_id,
        expression=human.expression or prediction.expression,
        split=human.split,
        model_version=prediction.model_version,
        annotator=human.annotator,
        intersection=counts.intersection,
        union=counts.union,
        human_area=counts.reference_area,
        model_area=counts.predicted_area,
        image=human.image,
        lead_time=human.lead_time,
        score=prediction.score,
    )
    return ComparedSample(sample, human.regions, prediction.regions, image_size)
