"""Predictions for Label Studio tasks, apart from HTTP: a /predict body in, prediction items out.

Per task, as a pipeline: `task_input` (task + labeling setup + context → image URL and expression),
`Predictor._timed_predict` (image + expression → the model's Prediction), `prediction_item` (mask → regions of
the config's mask control → one Label Studio prediction item).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from backend.service_metrics import ServiceMetrics
from mlcdseg.errors import ExpressionError, ImageFetchError, MlcdsegError
from mlcdseg.labelstudio.tasks import data_text, task_data
from mlcdseg.labelstudio.label_config import LabelingSetup, MaskControl, choose_label, parse_label_config
from mlcdseg.labelstudio.regions import regions_for_mask, textarea_text

if TYPE_CHECKING:
    from mlcdseg.model.segmenter import Prediction

logger = logging.getLogger(__name__)

Task = Mapping[str, Any]
PredictionItem = dict[str, Any]
#: The answer for a task the backend could not serve: a list of no predictions. Label Studio
#: accepts a list per task and stores nothing for an empty one, so the task stays without a
#: prediction of this model version (it is asked again on the next retrieval, and evaluation
#: never mistakes the failure for the model answering "no target").
TaskAnswer = PredictionItem | list[PredictionItem]


class InvalidRequestError(MlcdsegError):
    """A request body that is malformed or does not fit the labeling config."""


class TaskDataError(InvalidRequestError):
    """One task's data lacks what a prediction needs (e.g. its image field)."""


class MaskModel(Protocol):
    """What the backend needs of a model (mlcdseg.model.segmenter.Segmenter, or a test double)."""

    model_version: str
    is_stand_in: bool

    def predict(
        self, image: Image.Image, expression: str, *, force_seg: bool | None = None
    ) -> Prediction:
        """The mask of what `expression` refers to in `image`."""


class ImageProvider(Protocol):
    """Where task images come from (mlcdseg.labelstudio.image_fetch.ImageFetcher, or a test double)."""

    def fetch(self, url: str) -> Image.Image:
        """The decoded RGB image at a task URL; raises ImageFetchError."""

    def cache_info(self) -> dict[str, int]:
        """Counters of the image cache (hits, misses, …)."""


@dataclass(frozen=True)
class PredictRequest:
    """A validated /predict body. `context_results` is None unless the request is interactive."""

    tasks: tuple[Task, ...]
    label_config: str
    context_results: tuple[Mapping[str, Any], ...] | None

    @property
    def interactive(self) -> bool:
        """True for an interactive (annotator-prompted) request, which holds a single task."""
        return self.context_results is not None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PredictRequest:
        """Validate a parsed /predict body; InvalidRequestError naming what is wrong."""
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise InvalidRequestError('"tasks" must be a non-empty list of tasks')
        for index, task in enumerate(tasks):
            if not isinstance(task, dict):
                raise InvalidRequestError(
                    f'"tasks"[{index}] is a {type(task).__name__}, not a task object'
                )
        label_config = body.get("label_config")
        if not isinstance(label_config, str) or not label_config.strip():
            raise InvalidRequestError(
                '"label_config" (the project\'s labeling config XML) is missing'
            )
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise InvalidRequestError('"params" must be an object')
        context_results = _context_results(params.get("context"))
        if context_results is not None and len(tasks) != 1:
            raise InvalidRequestError(
                f"an interactive request (with a context) takes one task, not {len(tasks)}"
            )
        return cls(tasks=tuple(tasks), label_config=label_config, context_results=context_results)


@dataclass(frozen=True)
class TaskInput:
    """What one task asks of the model: the image to fetch and the referring expression."""

    image_url: str
    expression: str


def _context_results(context: object) -> tuple[Mapping[str, Any], ...] | None:
    """The regions of an interactive context, or None when there is no context."""
    if context is None:
        return None
    if not isinstance(context, dict):
        raise InvalidRequestError('"params.context" must be an object or null')
    results = context.get("result") or []
    if not isinstance(results, list) or not all(isinstance(region, dict) for region in results):
        raise InvalidRequestError('"params.context.result" must be a list of region objects')
    return tuple(results)


#: parse_label_config, cached: Label Studio sends the same config text with every request.
labeling_setup = functools.lru_cache(maxsize=32)(parse_label_config)


def task_input(
    task: Task, setup: LabelingSetup, context_results: Sequence[Mapping[str, Any]] | None
) -> TaskInput | None:
    """The image URL and expression of a task, or None when it has no expression.

    The expression is the annotator's TextArea text in an interactive context, else the task data
    field shown by the config's <Text> tag (or "expression"). Raises TaskDataError when a task with
    an expression lacks its image URL.
    """
    data = task_data(task)
    expression = textarea_text(context_results or [], setup.prompt_controls) or data_text(
        data, setup.expression_field
    )
    if expression is None:
        return None
    image_url = data_text(data, setup.image_field)
    if image_url is None:
        raise TaskDataError(
            f"task {task.get('id')}: no image URL in data[{setup.image_field!r}] (the field the "
            f"<Image name={setup.image_name!r}> tag shows)"
        )
    return TaskInput(image_url=image_url, expression=expression)


def prediction_item(regions: list[dict[str, Any]], model_version: str) -> PredictionItem:
    """One Label Studio prediction: its regions and the model version (no invented score)."""
    return {"result": regions, "model_version": model_version}


class Predictor:
    """Answers /predict requests with a segmenter and an image source; thread-safe."""

    def __init__(self, segmenter: MaskModel, images: ImageProvider, metrics: ServiceMetrics) -> None:
        self.segmenter = segmenter
        self.images = images
        self.metrics = metrics

    def predict(self, request: PredictRequest) -> list[TaskAnswer]:
        """Exactly one answer per task, in order: a prediction item, or [] for a failed task.

        In a batch, a task whose image cannot be had, or whose data lacks the image URL, gets an
        empty list (no prediction, see TaskAnswer) and a logged warning; in an interactive request
        that is an error instead
        (TaskDataError, ImageFetchError), so the annotator sees why. An expression the model
        cannot take ("...", a lone surrogate) is likewise an empty prediction, or a 400
        interactively. Other model errors always propagate.
        """
        setup = labeling_setup(request.label_config)
        unknown = sorted(
            {str(region.get("from_name")) for region in request.context_results or []}
            - setup.control_names
        )
        if unknown:
            raise InvalidRequestError(
                f"the context names controls the labeling config lacks: {', '.join(unknown)}"
            )
        control = setup.mask_control()
        items = [self._predict_task(task, setup, control, request) for task in request.tasks]
        self.metrics.count_predictions(len(items))
        return items

    def _predict_task(
        self, task: Task, setup: LabelingSetup, control: MaskControl, request: PredictRequest
    ) -> TaskAnswer:
        try:
            wanted = task_input(task, setup, request.context_results)
            if wanted is None:
                return prediction_item([], self.segmenter.model_version)
            image = self.images.fetch(wanted.image_url)
        except (TaskDataError, ImageFetchError) as error:
            if request.interactive:
                raise
            logger.warning("task %s gets no prediction: %s", task.get("id"), error)
            self.metrics.count_failed_task()
            return []
        try:
            prediction = self._timed_predict(image, wanted.expression)
        except ExpressionError as error:  # e.g. "...": nothing is left to put in the prompt
            if request.interactive:
                raise InvalidRequestError(str(error)) from None
            logger.info("task %s gets an empty prediction: %s", task.get("id"), error)
            return prediction_item([], self.segmenter.model_version)
        if not prediction.has_target:
            return prediction_item([], self.segmenter.model_version)
        label = choose_label(control, wanted.expression)
        return prediction_item(
            regions_for_mask(prediction.mask, control, label), self.segmenter.model_version
        )

    def _timed_predict(self, image: Image.Image, expression: str) -> Prediction:
        """The segmenter's call, timed for /metrics."""
        started = time.perf_counter()
        try:
            return self.segmenter.predict(image, expression)
        finally:
            self.metrics.record_model_call(time.perf_counter() - started)
