"""What one task of a Label Studio export holds for evaluation: human samples and model predictions.

A human sample is one annotator's (image, expression) pair with the mask regions of one control,
kept encoded (brush RLE or polygons) until a caller decodes them at the image's size. An empty
region list is a no-target sample. Predictions are grouped by model version, latest first wins.
Only tasks that mlcdseg.labelstudio.tasks.malformed_task_skip accepts are read here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from mlcdseg.errors import ExportFormatError, LabelConfigError
from mlcdseg.labelstudio.label_config import DEFAULT_EXPRESSION_FIELD, parse_label_config
from mlcdseg.labelstudio.regions import (
    Region,
    mask_from_regions,
    mask_regions,
    region_image_size,
    textarea_text,
)
from mlcdseg.labelstudio.tasks import JsonObject, Skip, SkipCode, Unusable, data_text, task_data

ANNOTATION_MODES = ("latest", "ground-truth", "all")
NO_MODEL_VERSION = "(no model_version)"
#: Largest image a region may declare (original_width x original_height): a mask of it is
#: decoded into memory. The backend's MLCDSEG_MAX_IMAGE_PIXELS has the same default.
MAX_IMAGE_PIXELS = 64_000_000
#: What a user should do when an export holds predictions as ids only.
FULL_PREDICTIONS_HINT = (
    "export a snapshot with full predictions instead: POST /api/projects/<id>/exports with "
    '{"serialization_options": {"predictions": {"only_id": false}}} and download it, or let mlcdseg '
    "do it with --label-studio-url URL --api-key KEY --project ID"
)


@dataclass(frozen=True)
class SampleSettings:
    """How export tasks become samples: annotation mode, model version, control and data fields."""

    annotation: str = "latest"
    model_version: str | None = None
    control: str | None = None
    expression_field: str = DEFAULT_EXPRESSION_FIELD
    prompt_controls: tuple[str, ...] = ()
    image_field: str = "image"
    split_field: str = "split"
    max_image_pixels: int = MAX_IMAGE_PIXELS

    @classmethod
    def from_label_config(cls, label_config: str | None, **options: Any) -> SampleSettings:
        """Settings whose control and data fields come from a labeling config (None: defaults).

        LabelConfigError when the config has several mask controls and none is chosen, or the
        chosen one does not exist.
        """
        if label_config is None:
            return cls(**options)
        setup = parse_label_config(label_config)
        control = options.pop("control", None)
        if control is None and len(setup.mask_controls) > 1:
            names = ", ".join(mask_control.name for mask_control in setup.mask_controls)
            raise LabelConfigError(f"the labeling config has several mask controls ({names}); pick one with --control")
        return cls(
            control=setup.mask_control(control).name,
            expression_field=setup.expression_field,
            prompt_controls=setup.prompt_controls,
            image_field=setup.image_field,
            **options,
        )


def decode_regions(regions: tuple[Region, ...], image_size: tuple[int, int] | None) -> np.ndarray:
    """Union of mask regions as a bool (H, W) array; (1, 1) empty when there is no size.

    MaskFormatError for a corrupt encoding or a region drawn at another size.
    """
    height, width = image_size or (1, 1)
    return mask_from_regions(regions, None, height, width)


@dataclass(frozen=True)
class HumanSample:
    """One annotator's (image, expression) pair of a task; the mask stays encoded as regions."""

    task_id: Any
    expression: str | None
    split: str | None
    annotator: str
    image: str | None
    regions: tuple[Region, ...]
    #: Seconds the annotator spent on the annotation (Label Studio's `lead_time`); None when not recorded.
    lead_time: float | None = None

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(height, width) the regions were drawn at; None for a no-target sample (no region)."""
        return region_image_size(self.regions)

    def mask(self, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """The bool (H, W) mask at image_size (default: the regions' own size); MaskFormatError when corrupt.

        At the regions' own size it is decoded once and shared, read-only, by every caller (each
        model version compared, the RefCOCO export's RLE).
        """
        if image_size is None or image_size == self.image_size:
            return self._own_size_mask
        return decode_regions(self.regions, image_size)

    @functools.cached_property
    def _own_size_mask(self) -> np.ndarray:
        """The mask at the regions' own size, read-only (cached_property writes past the frozen dataclass)."""
        mask = decode_regions(self.regions, self.image_size)
        mask.flags.writeable = False
        return mask


@dataclass(frozen=True)
class ModelPrediction:
    """The latest prediction of one model version for a task, its mask encoded as regions."""

    model_version: str
    regions: tuple[Region, ...]
    expression: str | None
    #: The model's confidence in [0, 1] (see prediction_score); None when the prediction carries none.
    score: float | None = None

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(height, width) the regions were drawn at; None when the model found no target."""
        return region_image_size(self.regions)


def _recency(item: JsonObject) -> tuple[datetime, int]:
    """Sort key of an annotation or prediction: last update (else creation) time in UTC, then id."""
    stamp = str(item.get("updated_at") or item.get("created_at") or "")
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        moment = datetime.min
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    identifier = item.get("id")
    return moment, identifier if isinstance(identifier, int) else 0


def annotator_name(annotation: JsonObject) -> str:
    """The annotator of an annotation: user id, or e-mail when the export expands the user."""
    user = annotation.get("completed_by")
    if isinstance(user, dict):
        user = user.get("email") or user.get("id")
    return "unknown" if user is None else str(user)


def select_annotations(task: JsonObject, mode: str) -> list[JsonObject]:
    """The submitted (not cancelled) annotations that `mode` picks; Unusable when there is none.

    latest: the most recently updated one; ground-truth: the latest marked ground truth;
    all: the latest of each annotator.
    """
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    submitted = [a for a in annotations if not a.get("was_cancelled")]
    if not submitted:
        if annotations:
            raise Unusable(SkipCode.CANCELLED, "every annotation was cancelled")
        raise Unusable(SkipCode.NO_ANNOTATION, "no annotation")
    if mode == "ground-truth":
        submitted = [a for a in submitted if a.get("ground_truth")]
        if not submitted:
            raise Unusable(SkipCode.NO_GROUND_TRUTH, "no ground-truth annotation")
    if mode != "all":
        return [max(submitted, key=_recency)]
    latest: dict[str, JsonObject] = {}
    for annotation in sorted(submitted, key=_recency):
        latest[annotator_name(annotation)] = annotation
    return list(latest.values())


def _control_regions(results: Any, settings: SampleSettings) -> tuple[Region, ...]:
    """The mask regions of the control in a result list; Unusable when they cannot be used."""
    if not isinstance(results, list):
        raise Unusable(SkipCode.BAD_REGIONS, "its result is not a list of regions")
    control = settings.control
    regions = mask_regions((region for region in results if isinstance(region, dict)), control)
    for region in regions:
        width, height = region.get("original_width"), region.get("original_height")
        if isinstance(width, int) and isinstance(height, int) and width * height > settings.max_image_pixels:
            raise Unusable(
                SkipCode.IMAGE_TOO_LARGE,
                f"region {region.get('id')!r} declares a {width}x{height} image, more than "
                f"{settings.max_image_pixels} pixels (--max-image-pixels)",
            )
    controls = sorted({str(region.get("from_name")) for region in regions})
    if len(controls) > 1:
        raise Unusable(
            SkipCode.BAD_REGIONS,
            f"it has regions of several mask controls ({', '.join(controls)}); pick one with --control",
        )
    return tuple(regions)


def human_samples(task: JsonObject, settings: SampleSettings) -> tuple[list[HumanSample], list[Skip]]:
    """The human samples of a task that malformed_task_skip accepts, under settings.annotation, and their skips.

    The expression is the task data field (settings.expression_field), else the annotation's
    TextArea text, else None.
    """
    task_id = task.get("id")
    data = task_data(task)
    try:
        chosen = select_annotations(task, settings.annotation)
    except Unusable as unusable:
        return [], [unusable.skip(task_id)]
    split = data.get(settings.split_field)
    samples, skipped = [], []
    for annotation in chosen:
        annotator = annotator_name(annotation)
        try:
            regions = _control_regions(annotation.get("result"), settings)
        except Unusable as unusable:
            skipped.append(unusable.skip(task_id, f"the annotation by {annotator}: "))
            continue
        samples.append(
            HumanSample(
                task_id=task_id,
                expression=data_text(data, settings.expression_field)
                or textarea_text(annotation.get("result") or [], settings.prompt_controls),
                split=None if split is None else str(split),
                annotator=annotator,
                image=data_text(data, settings.image_field),
                regions=regions,
                lead_time=lead_time_seconds(annotation),
            )
        )
    return samples, skipped


def lead_time_seconds(annotation: JsonObject) -> float | None:
    """The annotation's `lead_time` (seconds spent on it) when it is a non-negative number, else None."""
    value = annotation.get("lead_time")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        return None
    return float(value)


def _unit_score(value: Any) -> float | None:
    """`value` when it is a finite number in [0, 1] (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        return None
    return float(value)


def prediction_score(prediction: JsonObject, regions: tuple[Region, ...]) -> float | None:
    """The prediction's `score` in [0, 1], else the mean `score` of its mask regions, else None.

    A score that is not a number in [0, 1] counts as absent (Label Studio stores whatever it is sent).
    """
    score = _unit_score(prediction.get("score"))
    if score is not None:
        return score
    region_scores = [s for s in (_unit_score(region.get("score")) for region in regions) if s is not None]
    return sum(region_scores) / len(region_scores) if region_scores else None


def model_predictions(task: JsonObject, settings: SampleSettings) -> tuple[dict[str, ModelPrediction], list[Skip]]:
    """The latest prediction of each model version (all, whatever the settings) in a task malformed_task_skip accepts.

    Ordered oldest to newest by each version's latest prediction: the last one is the task's newest.

    ExportFormatError when the export lists predictions as ids only (Label Studio's plain export).
    """
    task_id = task.get("id")
    predictions = task.get("predictions") or []
    if any(not isinstance(prediction, dict) for prediction in predictions):
        raise ExportFormatError(f"task {task_id} lists its predictions as ids only; {FULL_PREDICTIONS_HINT}")
    by_version: dict[str, ModelPrediction] = {}
    skipped = []
    for prediction in sorted(predictions, key=_recency):
        version = str(prediction.get("model_version") or NO_MODEL_VERSION)
        try:
            regions = _control_regions(prediction.get("result"), settings)
        except Unusable as unusable:
            skipped.append(unusable.skip(task_id, f"the prediction of model version {version}: "))
            continue
        text = textarea_text(prediction.get("result") or [], settings.prompt_controls)
        by_version.pop(version, None)  # re-inserted last: the dict stays in recency order
        by_version[version] = ModelPrediction(version, regions, text, prediction_score(prediction, regions))
    return by_version, skipped
