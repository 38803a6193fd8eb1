"""`mlcdseg prelabel`'s driver: stream a project's tasks, skip the ones already predicted by this
model version, run batches on an executor (this process or Ray), upload each batch's predictions.

Resuming is the skip check: every uploaded batch is stored whole or not at all, so a run killed at
any point and started again finds the stored tasks by their model version and does the rest,
with no duplicate and nothing lost. With `overwrite` a task's older predictions of this version
are deleted just before its new one is uploaded.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mlcdseg.prelabel.executors import Executor
from mlcdseg.prelabel.pipeline import PipelineTimes, Task, TaskOutcome
from mlcdseg.prelabel.store import ProjectPredictions, holds_version

logger = logging.getLogger(__name__)

#: Failures listed one by one in the summary (all are counted by reason).
LISTED_FAILURES = 1000


@dataclass
class PrelabelSummary:
    """What a run did: tasks done, skipped (already predicted), failed by reason; seconds by stage."""

    project_id: int
    model_version: str
    done: int = 0
    skipped: int = 0
    replaced: int = 0
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    times: PipelineTimes = field(default_factory=PipelineTimes)
    upload_s: float = 0.0
    total_s: float = 0.0

    @property
    def failed(self) -> int:
        """Tasks that got no prediction in this run."""
        return sum(self.failed_by_reason.values())

    def record(self, outcomes: Sequence[TaskOutcome]) -> None:
        """Count a batch's outcomes."""
        for outcome in outcomes:
            if outcome.failure is None:
                self.done += 1
                continue
            self.failed_by_reason[outcome.failure.code.value] += 1
            if len(self.failures) < LISTED_FAILURES:
                self.failures.append({**outcome.failure.record(), "code": outcome.failure.code.value})

    def as_json(self) -> dict[str, Any]:
        """The summary as the -o file holds it."""
        return {
            "project": self.project_id,
            "model_version": self.model_version,
            "done": self.done,
            "skipped": self.skipped,
            "replaced": self.replaced,
            "failed": self.failed,
            "failed_by_reason": dict(self.failed_by_reason),
            "failures": self.failures,
            "seconds": {
                "total": round(self.total_s, 3),
                **self.times.as_json(),
                "upload": round(self.upload_s, 3),
            },
        }

    def lines(self) -> list[str]:
        """The summary for people: one line of counts, one per failure reason."""
        rate = (self.done + self.failed) / self.total_s if self.total_s > 0 else 0.0
        lines = [
            f"project {self.project_id}, {self.model_version}: done {self.done}, skipped {self.skipped} "
            f"(already predicted), failed {self.failed}; {rate:.1f} tasks/s"
        ]
        lines += [f"  failed, {code}: {count}" for code, count in self.failed_by_reason.most_common()]
        return lines


@dataclass(frozen=True)
class PrelabelOptions:
    """How to walk the project: which tasks, batch and page sizes, whether to replace predictions."""

    task_ids: Sequence[int] | None = None
    overwrite: bool = False
    batch_size: int = 64
    page_size: int = 1000


#: Uploads that may wait behind the one in progress while the model goes on.
PENDING_UPLOADS = 2


def prelabel(
    store: ProjectPredictions,
    executor: Executor,
    options: PrelabelOptions,
    progress: Callable[[int], None] = lambda count: None,
) -> PrelabelSummary:
    """Predict every task of the project not yet predicted by the store's model version, and upload.

    Uploads run in one background thread, in order, so the model does not wait for Label Studio;
    a batch counts as done once it is stored. `progress(n)` is called as n more tasks are settled
    (skipped, stored or failed).
    """
    started = time.monotonic()
    summary = PrelabelSummary(store.project_id, store.model_version)
    batch: list[Task] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlcdseg-upload") as uploader:
        uploads: deque[Future[tuple[Sequence[TaskOutcome], int, float]]] = deque()

        def finish_upload() -> None:
            outcomes, replaced, seconds = uploads.popleft().result()
            summary.replaced += replaced
            summary.upload_s += seconds
            summary.record(outcomes)
            progress(len(outcomes))

        def settle_batch() -> None:
            tasks, outcomes, times = executor.next_done()
            summary.times.add(times)
            uploads.append(uploader.submit(_upload, store, tasks, outcomes, options.overwrite))
            while len(uploads) > PENDING_UPLOADS:
                finish_upload()

        def submit(tasks: list[Task]) -> None:
            while not executor.has_free():
                settle_batch()
            executor.submit(tasks)

        for task in store.tasks(options.page_size, options.task_ids):
            if not options.overwrite and holds_version(task, store.model_version):
                summary.skipped += 1
                progress(1)
                continue
            batch.append(task)
            if len(batch) == options.batch_size:
                submit(batch)
                batch = []
        if batch:
            submit(batch)
        while executor.has_pending():
            settle_batch()
        while uploads:
            finish_upload()
    summary.total_s = time.monotonic() - started
    return summary


def _upload(
    store: ProjectPredictions, tasks: Sequence[Task], outcomes: Sequence[TaskOutcome], overwrite: bool
) -> tuple[Sequence[TaskOutcome], int, float]:
    """Upload a batch's predictions (after deleting what they replace): (outcomes, replaced, seconds)."""
    started = time.monotonic()
    replaced = 0
    if overwrite:
        predicted = {outcome.task_id for outcome in outcomes if outcome.item is not None}
        replaced = sum(store.delete_own(task) for task in tasks if task.get("id") in predicted)
    store.upload(outcomes)
    return outcomes, replaced, time.monotonic() - started
