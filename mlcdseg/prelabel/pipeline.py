"""The one path from Label Studio tasks to prediction items, shared by the backend's /predict,
its background job and `mlcdseg prelabel`.

`task_input` (task + labeling setup → image URL and expression, or a typed failure) →
`group_by_image` (expressions sharing an image together) → `prefetched` (each group's image
fetched and decoded once, in a background thread, while the model works on the groups before it)
→ `predict_group` (`predict_many` for its expressions, mask → regions → prediction item). A task that
cannot be served ends as a `TaskOutcome` with a `Skip` (code + reason) and no prediction: Label
Studio then stores nothing for it, so a failure never reads as the model answering "no target".
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from mlcdseg.errors import ExpressionError, ImageFetchError, TaskDataError
from mlcdseg.labelstudio.label_config import LabelingSetup, MaskControl, choose_label, parse_label_config
from mlcdseg.labelstudio.regions import regions_for_mask, textarea_text
from mlcdseg.labelstudio.tasks import Skip, SkipCode, data_text, task_data

if TYPE_CHECKING:
    from mlcdseg.model.segmenter import Prediction

logger = logging.getLogger(__name__)

Task = Mapping[str, Any]
PredictionItem = dict[str, Any]

#: Groups whose images are fetched ahead of the model, in one background thread.
PREFETCH_AHEAD = 2

#: parse_label_config, cached: every request and page of one project carries the same config text.
labeling_setup = functools.lru_cache(maxsize=32)(parse_label_config)


class MaskModel(Protocol):
    """What the pipeline needs of a model (mlcdseg.model.segmenter.Segmenter, or a test double)."""

    model_version: str
    is_stand_in: bool

    def predict_many(
        self, image: Image.Image, expressions: Sequence[str], *, force_seg: bool | None = None
    ) -> list[Prediction]:
        """One mask per expression, in order, for expressions that share `image`."""


class ImageProvider(Protocol):
    """Where task images come from (mlcdseg.labelstudio.image_fetch.ImageFetcher, or a test double)."""

    def fetch(self, url: str) -> Image.Image:
        """The decoded RGB image at a task URL; raises ImageFetchError."""

    def cache_info(self) -> dict[str, int]:
        """Counters of the image cache (hits, misses, …)."""


@dataclass(frozen=True)
class TaskInput:
    """What one task asks of the model: the image to fetch and the referring expression."""

    image_url: str
    expression: str


@dataclass(frozen=True)
class TaskOutcome:
    """One task's result: a prediction `item` to store, or the `failure` that leaves it without one."""

    task_id: Any
    item: PredictionItem | None = None
    failure: Skip | None = None


@dataclass
class PipelineTimes:
    """Seconds summed over groups: waiting for images (fetch and decode not hidden by the prefetch),
    in the model (`predict_many`), and turning its masks into prediction items (regions)."""

    fetch_s: float = 0.0
    model_s: float = 0.0
    regions_s: float = 0.0

    def add(self, other: PipelineTimes) -> None:
        """Add another tally into this one."""
        self.fetch_s += other.fetch_s
        self.model_s += other.model_s
        self.regions_s += other.regions_s

    def as_json(self) -> dict[str, float]:
        """The tally in a status or summary record, rounded to milliseconds."""
        return {
            "fetch_and_decode": round(self.fetch_s, 3),
            "model": round(self.model_s, 3),
            "regions": round(self.regions_s, 3),
        }


@dataclass
class ImageGroup:
    """Tasks whose expressions refer to one image URL, in the order they came."""

    image_url: str
    task_ids: list[Any] = field(default_factory=list)
    expressions: list[str] = field(default_factory=list)

    def chunks(self, size: int) -> list[ImageGroup]:
        """This group cut into groups of at most `size` tasks, in order (the same image each)."""
        return [
            ImageGroup(self.image_url, self.task_ids[start : start + size], self.expressions[start : start + size])
            for start in range(0, len(self.task_ids), size)
        ]


def task_input(
    task: Task, setup: LabelingSetup, context_results: Sequence[Mapping[str, Any]] | None = None
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


def group_by_image(tasks: Iterable[Task], setup: LabelingSetup) -> tuple[list[ImageGroup], list[TaskOutcome]]:
    """The tasks' expressions grouped by image URL (first-seen order), and the tasks that cannot be read.

    A task without an expression fails with SkipCode.NO_EXPRESSION, one without an image URL with
    SkipCode.NO_IMAGE.
    """
    groups: dict[str, ImageGroup] = {}
    failed = []
    for task in tasks:
        task_id = task.get("id")
        try:
            wanted = task_input(task, setup)
        except TaskDataError as error:
            failed.append(TaskOutcome(task_id, failure=Skip(task_id, str(error), SkipCode.NO_IMAGE)))
            continue
        if wanted is None:
            reason = f"task {task_id}: no expression in data[{setup.expression_field!r}]"
            failed.append(TaskOutcome(task_id, failure=Skip(task_id, reason, SkipCode.NO_EXPRESSION)))
            continue
        group = groups.setdefault(wanted.image_url, ImageGroup(wanted.image_url))
        group.task_ids.append(task_id)
        group.expressions.append(wanted.expression)
    return list(groups.values()), failed


def item_for_prediction(
    prediction: Prediction, control: MaskControl, expression: str, model_version: str
) -> PredictionItem:
    """The prediction item of one model answer: a region of `control`, none for "no target"."""
    if not prediction.has_target:
        return prediction_item([], model_version)
    label = choose_label(control, expression)
    return prediction_item(regions_for_mask(prediction.mask, control, label), model_version)


def prefetched(
    images: ImageProvider, groups: Iterable[ImageGroup], ahead: int = PREFETCH_AHEAD
) -> Iterator[tuple[ImageGroup, Future[Image.Image]]]:
    """Each group with the fetch of its image, started up to `ahead` groups before it is handed out.

    One background thread fetches in group order, so the next images download and decode while the
    model works on this one; consecutive groups with one URL (chunks of a group) share one fetch.
    Closing the iterator early cancels the fetches not yet started. Use it in `contextlib.closing`.
    """
    pending: deque[tuple[ImageGroup, Future[Image.Image]]] = deque()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlcdseg-prefetch")
    try:
        for group in groups:
            last = pending[-1] if pending else None
            if last is not None and last[0].image_url == group.image_url:
                pending.append((group, last[1]))
            else:
                pending.append((group, pool.submit(images.fetch, group.image_url)))
            if len(pending) > ahead:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def predict_group(
    segmenter: MaskModel,
    control: MaskControl,
    group: ImageGroup,
    image: Callable[[], Image.Image],
    times: PipelineTimes | None = None,
) -> list[TaskOutcome]:
    """One outcome per task of `group`, in order: one predict_many on the group's `image()`.

    `image()` gives the decoded image (e.g. a prefetch's `Future.result`) or raises ImageFetchError,
    which fails every task of the group (SkipCode.IMAGE_UNREACHABLE). An expression the model
    cannot take ("...") gets an empty prediction, the others theirs. Model errors
    (GpuOutOfMemoryError, …) propagate. `times` gets the seconds spent waiting for the image, in
    the model and building regions.
    """
    times = times if times is not None else PipelineTimes()
    started = time.perf_counter()
    try:
        decoded = image()
    except ImageFetchError as error:
        return [
            TaskOutcome(task_id, failure=Skip(task_id, str(error), SkipCode.IMAGE_UNREACHABLE))
            for task_id in group.task_ids
        ]
    finally:
        fetched = time.perf_counter()
        times.fetch_s += fetched - started
    try:
        predictions: list[Prediction | None] = list(segmenter.predict_many(decoded, group.expressions))
    except ExpressionError:
        predictions = [_predict_one(segmenter, decoded, expression) for expression in group.expressions]
    predicted = time.perf_counter()
    times.model_s += predicted - fetched
    outcomes = [
        TaskOutcome(
            task_id,
            item=(
                prediction_item([], segmenter.model_version)
                if prediction is None
                else item_for_prediction(prediction, control, expression, segmenter.model_version)
            ),
        )
        for task_id, expression, prediction in zip(group.task_ids, group.expressions, predictions)
    ]
    times.regions_s += time.perf_counter() - predicted
    return outcomes


def predict_tasks(
    segmenter: MaskModel,
    images: ImageProvider,
    label_config: str,
    tasks: Sequence[Task],
    times: PipelineTimes | None = None,
) -> list[TaskOutcome]:
    """One outcome per task of a batch from one project: read, grouped by image, predicted, with
    each next image prefetched while the model works.

    Outcomes of unreadable tasks come first, then the groups' in first-seen image order.
    """
    setup = labeling_setup(label_config)
    control = setup.mask_control()
    groups, outcomes = group_by_image(tasks, setup)
    with closing(prefetched(images, groups)) as fetches:
        for group, image in fetches:
            outcomes.extend(predict_group(segmenter, control, group, image.result, times))
    return outcomes


def _predict_one(segmenter: MaskModel, image: Image.Image, expression: str) -> Prediction | None:
    """The prediction of one expression, or None for one the model cannot take (logged)."""
    try:
        return segmenter.predict_many(image, [expression])[0]
    except ExpressionError as error:  # e.g. "...": nothing is left to put in the prompt
        logger.info("expression %r gets an empty prediction: %s", expression, error)
        return None
