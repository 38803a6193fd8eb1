"""A project's predictions in Label Studio as pre-labeling reads and writes them: task pages with the
model versions they hold, the tasks already predicted by a version, batched uploads, deletions.

Every write is one `POST /api/projects/{id}/import/predictions` of a batch, which Label Studio
stores in one bulk insert: a batch is stored or not, and whoever runs again finds the stored
tasks by their model version (`holds_version`) and leaves them alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from mlcdseg.labelstudio.client import LabelStudioClient
from mlcdseg.prelabel.pipeline import TaskOutcome

logger = logging.getLogger(__name__)

Task = Mapping[str, Any]
#: Task ids per `task_page` request when checking given tasks (keeps the query string short).
CHECK_CHUNK = 200


def versions_of(task: Task, model_version: str) -> list[int]:
    """Ids of the task's stored predictions made by `model_version` (from a `fields=all` task)."""
    found = []
    for prediction in task.get("predictions") or []:
        if isinstance(prediction, Mapping) and prediction.get("model_version") == model_version:
            found.append(prediction.get("id"))
    return found


def holds_version(task: Task, model_version: str) -> bool:
    """True when the task already holds a prediction of `model_version`."""
    return bool(versions_of(task, model_version))


class ProjectPredictions:
    """Reads a project's tasks and writes predictions of one model version into it."""

    def __init__(self, client: LabelStudioClient, project_id: int, model_version: str) -> None:
        self.client = client
        self.project_id = project_id
        self.model_version = model_version

    def tasks(self, page_size: int = 1000, task_ids: Sequence[int] | None = None) -> Iterator[Task]:
        """Every task of the project (or of `task_ids`), oldest first, streamed page by page."""
        page = 1
        seen = 0
        while True:
            tasks, total = self.client.task_page(self.project_id, page, page_size, task_ids)
            yield from tasks
            seen += len(tasks)
            if not tasks or seen >= total:
                return
            page += 1

    def holders(self, task_ids: Iterable[int]) -> set[int]:
        """Those of `task_ids` that already hold a prediction of this model version (asked now)."""
        wanted = list(dict.fromkeys(task_ids))
        found: set[int] = set()
        for start in range(0, len(wanted), CHECK_CHUNK):
            chunk = wanted[start : start + CHECK_CHUNK]
            for task in self.tasks(page_size=len(chunk), task_ids=chunk):
                if holds_version(task, self.model_version):
                    found.add(task["id"])
        return found

    def upload(self, outcomes: Sequence[TaskOutcome]) -> int:
        """Store the predictions of `outcomes` (those with an item) in one request; how many were created."""
        batch = [{"task": outcome.task_id, **outcome.item} for outcome in outcomes if outcome.item is not None]
        if not batch:
            return 0
        return self.client.import_predictions(self.project_id, batch)

    def delete_own(self, task: Task) -> int:
        """Delete the task's predictions of this model version (for --overwrite); how many."""
        prediction_ids = versions_of(task, self.model_version)
        for prediction_id in prediction_ids:
            self.client.delete_prediction(prediction_id)
        return len(prediction_ids)
