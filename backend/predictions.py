"""Predictions for Label Studio tasks, apart from HTTP: a /predict body in, prediction items out.

Tasks go through the library's pipeline (mlcdseg.prelabel.pipeline: task → image URL and
expression → grouped by image → predict_many → regions → prediction item), the same path the
background job and `mlcdseg prelabel` take. A batch works within a time budget: tasks not reached
get [] (Label Studio stores nothing for them) and go to the background job, which stores their
predictions through Label Studio's API.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend.service_metrics import ServiceMetrics
from mlcdseg.errors import ExpressionError, InvalidRequestError, TaskDataError
from mlcdseg.prelabel.pipeline import (
    ImageProvider,
    MaskModel,
    PipelineTimes,
    PredictionItem,
    Task,
    TaskOutcome,
    group_by_image,
    item_for_prediction,
    labeling_setup,
    prediction_item,
    predict_group,
    prefetched,
    task_input,
)

if TYPE_CHECKING:
    from backend.prediction_job import PredictionJob

logger = logging.getLogger(__name__)

__all__ = [
    "ImageProvider",
    "MaskModel",
    "PredictRequest",
    "Predictor",
    "labeling_setup",
    "project_id_of",
]

#: The answer for a task the backend could not serve: a list of no predictions. Label Studio
#: accepts a list per task and stores nothing for an empty one, so the task stays without a
#: prediction of this model version (it is asked again on the next retrieval, and evaluation
#: never mistakes the failure for the model answering "no target").
TaskAnswer = PredictionItem | list[PredictionItem]


#: Expressions of one image computed between two looks at the budget.
BUDGET_CHUNK = 8


def project_id_of(body: Mapping[str, Any]) -> int | None:
    """The project id of a /predict body's `"project": "<id>.<timestamp>"`, None when absent or odd."""
    project = body.get("project")
    if isinstance(project, int) and not isinstance(project, bool):
        return project
    head = str(project).split(".", 1)[0] if isinstance(project, str) else ""
    return int(head) if head.isdigit() else None


@dataclass(frozen=True)
class PredictRequest:
    """A validated /predict body. `context_results` is None unless the request is interactive."""

    tasks: tuple[Task, ...]
    label_config: str
    context_results: tuple[Mapping[str, Any], ...] | None
    project_id: int | None = None

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
            task_id = task.get("id")
            if task_id is not None and (isinstance(task_id, bool) or not isinstance(task_id, (int, str))):
                raise InvalidRequestError(f'"tasks"[{index}].id is a {type(task_id).__name__}, not a task id')
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
        return cls(
            tasks=tuple(tasks),
            label_config=label_config,
            context_results=context_results,
            project_id=project_id_of(body),
        )


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


class Predictor:
    """Answers /predict requests with a segmenter and an image source; thread-safe.

    A batch is served within `budget_s` seconds: images are taken in turn until the budget is
    spent, and the tasks not reached go to `job` (when there is one) and are answered [].
    """

    def __init__(
        self,
        segmenter: MaskModel,
        images: ImageProvider,
        metrics: ServiceMetrics,
        *,
        budget_s: float = float("inf"),
        job: PredictionJob | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.images = images
        self.metrics = metrics
        self.budget_s = budget_s
        self.job = job

    def predict(self, request: PredictRequest) -> list[TaskAnswer]:
        """Exactly one answer per task, in order: a prediction item, or [] for a task not served.

        In a batch, a task whose image cannot be had, whose data lacks the image URL or the
        expression, that the budget did not reach, that the background job owns or that a response
        answered moments ago (Label Studio may not hold it yet; the job checks) gets an empty
        list (no prediction, see TaskAnswer); one summary line is logged. In an interactive request
        a task that cannot be served is an error instead (TaskDataError, ImageFetchError, or
        InvalidRequestError for an expression the model cannot take), so the annotator sees why.
        Model errors always propagate.
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
        if request.interactive:
            items: list[TaskAnswer] = [self._predict_interactive(request)]
        else:
            items = self._predict_batch(request)
        self.metrics.count_predictions(len(items))
        return items

    def _predict_interactive(self, request: PredictRequest) -> PredictionItem:
        """The one task of an interactive request; errors propagate to the annotator."""
        setup = labeling_setup(request.label_config)
        control = setup.mask_control()
        (task,) = request.tasks
        wanted = task_input(task, setup, request.context_results)
        if wanted is None:
            return prediction_item([], self.segmenter.model_version)
        image = self.images.fetch(wanted.image_url)
        started = time.perf_counter()
        try:
            (prediction,) = self.segmenter.predict_many(image, [wanted.expression])
        except ExpressionError as error:  # e.g. "...": nothing is left to put in the prompt
            raise InvalidRequestError(str(error)) from None
        finally:
            self.metrics.record_model_call(time.perf_counter() - started)
        return item_for_prediction(prediction, control, wanted.expression, self.segmenter.model_version)

    def _predict_batch(self, request: PredictRequest) -> list[TaskAnswer]:
        """Every task of a batch through the shared pipeline, within the budget."""
        started = time.monotonic()
        setup = labeling_setup(request.label_config)
        control = setup.mask_control()
        project_id = request.project_id
        task_ids = [task.get("id") for task in request.tasks]
        owned: set[Any] = set()
        settling: set[Any] = set()
        if self.job is not None and project_id is not None:
            owned = self.job.claims.owned(project_id, task_ids)
            settling = self.job.claims.settling(project_id, task_ids) - owned
        left_to_the_job = owned | settling
        groups, outcomes = group_by_image(
            [task for task in request.tasks if task.get("id") not in left_to_the_job], setup
        )
        # Many expressions on one image are taken a few at a time, so that the budget holds.
        chunks = [chunk for whole in groups for chunk in whole.chunks(BUDGET_CHUNK)]
        reached = 0
        with closing(prefetched(self.images, chunks)) as fetches:
            for group, image in fetches:
                if time.monotonic() - started >= self.budget_s:
                    break
                times = PipelineTimes()
                outcomes.extend(predict_group(self.segmenter, control, group, image.result, times))
                self.metrics.record_model_call(times.model_s, calls=len(group.task_ids))
                reached += 1
        not_reached = [task_id for group in chunks[reached:] for task_id in group.task_ids]
        if self.job is not None and project_id is not None:
            self.job.claims.note_answered(project_id, [outcome.task_id for outcome in outcomes if outcome.item is not None])
        # Answered moments ago and maybe not stored yet: the job checks Label Studio first.
        deferred, refused = self._defer(request, [*not_reached, *settling])
        answers = _answers_in_order(request.tasks, outcomes)
        failed = [outcome.failure for outcome in outcomes if outcome.failure is not None]
        for failure in failed:
            logger.warning("task %s gets no prediction: %s", failure.task_id, failure.reason)
            self.metrics.count_failed_task(failure.code.value)
        reasons = Counter(failure.code.value for failure in failed)
        logger.info(
            "predict batch of %d task(s), project %s: served %d, deferred %d to the job, left %d "
            "for a later retrieval, %d owned by the job, failed %d%s, in %.1f s",
            len(request.tasks), project_id, len(outcomes) - len(failed), deferred, refused,
            len(owned), len(failed),
            f" ({', '.join(f'{code}: {count}' for code, count in reasons.most_common())})" if reasons else "",
            time.monotonic() - started,
        )
        return answers

    def _defer(self, request: PredictRequest, task_ids: Sequence[Any]) -> tuple[int, int]:
        """Hand the tasks the budget did not reach to the job; (deferred, left without a job)."""
        if not task_ids:
            return 0, 0
        if self.job is None or request.project_id is None:
            logger.warning(
                "%d task(s) not reached within MLCDSEG_PREDICT_BUDGET=%g s get no prediction now: %s; "
                "retrieve predictions again for them",
                len(task_ids), self.budget_s,
                "no background job (set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)"
                if self.job is None
                else "the request names no project",
            )
            return 0, len(task_ids)
        wanted = set(task_ids)
        return self.job.submit(
            request.project_id,
            [task for task in request.tasks if task.get("id") in wanted],
            request.label_config,
        )


def _answers_in_order(tasks: Sequence[Task], outcomes: Sequence[TaskOutcome]) -> list[TaskAnswer]:
    """One answer per task, in request order: its prediction item, or [] when it has none."""
    items: dict[Any, list[PredictionItem]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.item is not None:
            items[outcome.task_id].append(outcome.item)
    return [items[task.get("id")].pop(0) if items[task.get("id")] else [] for task in tasks]
