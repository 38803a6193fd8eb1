"""The backend's background pre-labeling job: tasks a /predict could not reach within its budget are
computed here and written to Label Studio through its API, with the same model version.

One job per backend process: one thread runs the model, another stores the previous batch
meanwhile. The job queues a task only once it has claimed it (backend.task_claims, shared by all
workers of the backend), and keeps the claim while the task is queued, in flight or stored by it
(for the life of the process); /predict answers claimed tasks with [] so that each task has one
writer. Before uploading, the job asks Label Studio which tasks already hold a prediction of this
model version and leaves them out.

Tasks a /predict response answered are `settling` for a few minutes: Label Studio stores those
answers only after the whole response arrived, so a second retrieval in that window may send them
again. /predict then hands them to the job, which first asks Label Studio whether they are stored by
now and computes only those that are not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from backend.task_claims import TaskClaims
from mlcdseg.errors import LabelStudioError, MlcdsegError, one_line
from mlcdseg.labelstudio.client import LabelStudioClient
from mlcdseg.labelstudio.tasks import Skip, SkipCode
from mlcdseg.prelabel.pipeline import (
    ImageProvider,
    MaskModel,
    PipelineTimes,
    TaskOutcome,
    predict_tasks,
)
from mlcdseg.prelabel.store import ProjectPredictions

logger = logging.getLogger(__name__)

Task = Mapping[str, Any]
#: Failures kept for GET /jobs (the newest); the counts by reason cover all of them.
RECENT_FAILURES = 100


@dataclass(frozen=True)
class QueuedTask:
    """A task waiting for the job, with the project it belongs to and that project's labeling config."""

    project_id: int
    task: Task
    label_config: str


class PredictionJob:
    """Computes deferred tasks in a background thread and stores their predictions in Label Studio."""

    def __init__(
        self,
        segmenter: MaskModel,
        images: ImageProvider,
        client: LabelStudioClient,
        *,
        queue_limit: int,
        claims: TaskClaims | None = None,
        batch_size: int = 100,
    ) -> None:
        self.segmenter = segmenter
        self.images = images
        self.client = client
        self.queue_limit = queue_limit
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[QueuedTask] = deque()
        self.claims = claims if claims is not None else TaskClaims()
        self._computing = 0  # tasks of the batch the model is on
        self._uploading = 0  # tasks of the batch being stored (one at a time, beside the model)
        self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlcdseg-job-upload")
        self._pending_upload: Future[None] | None = None
        self._counts: Counter[str] = Counter()
        self._failures_by_reason: Counter[str] = Counter()
        self._recent_failures: deque[dict[str, Any]] = deque(maxlen=RECENT_FAILURES)
        self._times = PipelineTimes()
        self._upload_s = 0.0
        self._thread: threading.Thread | None = None

    def submit(self, project_id: int, tasks: Sequence[Task], label_config: str) -> tuple[int, int]:
        """Claim and queue the tasks no one owns yet; (accepted, refused). Refuses what exceeds the
        queue limit."""
        with self._lock:
            room = self.queue_limit - len(self._queue)
            claimed, refused = self.claims.claim(project_id, [task.get("id") for task in tasks], room)
            first_of = {}
            for task in tasks:
                first_of.setdefault(task.get("id"), task)
            for task_id in claimed:
                self._queue.append(QueuedTask(project_id, first_of[task_id], label_config))
            self._counts["queued_total"] += len(claimed)
            self._counts["refused"] += refused
            if claimed:
                self._ensure_worker()
                self._wake.notify()
        if refused:
            logger.warning(
                "prediction job refused %d task(s) of project %d: its queue holds %d, the limit "
                "(MLCDSEG_JOB_QUEUE_LIMIT) is %d; retrieve predictions again once it has drained",
                refused, project_id, len(self._queue), self.queue_limit,
            )
        return len(claimed), refused

    def snapshot(self) -> dict[str, Any]:
        """Progress for GET /jobs and /metrics: queue, counts, failures by reason and the latest ones."""
        with self._lock:
            return {
                "model_version": self.segmenter.model_version,
                "queued": len(self._queue),
                "in_flight": self._computing + self._uploading,
                "queue_limit": self.queue_limit,
                "accepted": self._counts["queued_total"],
                "stored": self._counts["stored"],
                "already_stored": self._counts["already_stored"],
                "failed": sum(self._failures_by_reason.values()),
                "refused": self._counts["refused"],
                "failures_by_reason": dict(self._failures_by_reason),
                "recent_failures": list(self._recent_failures),
                "seconds": {**self._times.as_json(), "upload": round(self._upload_s, 3)},
            }

    def _ensure_worker(self) -> None:
        """Start the worker thread on first use (called with the lock held)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="mlcdseg-prediction-job", daemon=True)
            self._thread.start()

    def _next_batch(self) -> list[QueuedTask]:
        """Wait for work; up to batch_size queued tasks of one project and config."""
        with self._wake:
            while not self._queue:
                self._wake.wait()
            first = self._queue.popleft()
            batch = [first]
            while (
                self._queue
                and len(batch) < self.batch_size
                and (self._queue[0].project_id, self._queue[0].label_config) == (first.project_id, first.label_config)
            ):
                batch.append(self._queue.popleft())
            self._computing = len(batch)
            return batch

    def _work(self) -> None:
        """The worker thread: batches forever; an error fails the batch's tasks, never the thread.

        A batch's upload runs in the uploader thread while the model takes the next batch; at most
        one upload is pending, so the model never runs more than one batch ahead of Label Studio.
        """
        while True:
            batch = self._next_batch()
            try:
                batch = self._without_stored_answers(batch)
                times = PipelineTimes()
                tasks = [queued.task for queued in batch]
                outcomes = predict_tasks(self.segmenter, self.images, batch[0].label_config, tasks, times) if tasks else []
            except Exception as error:  # noqa: BLE001 - one failed batch must not end the job
                self._fail_batch(batch, error)
                outcomes = None
            if self._pending_upload is not None:
                self._pending_upload.result()
            with self._lock:
                self._computing = 0
                if outcomes is not None:
                    self._times.add(times)
                    self._uploading = len(batch)
            if outcomes:
                self._pending_upload = self._uploader.submit(self._upload, batch, outcomes)

    def _without_stored_answers(self, batch: list[QueuedTask]) -> list[QueuedTask]:
        """The batch less its settling tasks that Label Studio holds by now (counted already stored)."""
        project_id = batch[0].project_id
        settling = self.claims.settling(project_id, [queued.task.get("id") for queued in batch])
        if not settling:
            return batch
        held = ProjectPredictions(self.client, project_id, self.segmenter.model_version).holders(settling)
        with self._lock:
            self._counts["already_stored"] += len(held)
            self._computing -= len(held)
        return [queued for queued in batch if queued.task.get("id") not in held]

    def _upload(self, batch: list[QueuedTask], outcomes: list[TaskOutcome]) -> None:
        """Store one computed batch (in the uploader thread); a failure fails the batch's tasks."""
        started = time.perf_counter()
        try:
            self._store(batch[0].project_id, outcomes)
        except Exception as error:  # noqa: BLE001 - one failed upload must not end the job
            self._fail_batch(batch, error)
        finally:
            with self._lock:
                self._upload_s += time.perf_counter() - started
                self._uploading = 0

    def _fail_batch(self, batch: list[QueuedTask], error: Exception) -> None:
        """Record every task of `batch` as failed by `error` and release them for a later retrieval."""
        if not isinstance(error, MlcdsegError):
            logger.exception("prediction job: unexpected error")
        reason = f"the job failed on this batch: {one_line(error)}"
        code = SkipCode.UPLOAD_FAILED if isinstance(error, LabelStudioError) else SkipCode.OTHER
        self._record(
            batch[0].project_id,
            [TaskOutcome(q.task.get("id"), failure=Skip(q.task.get("id"), reason, code)) for q in batch],
        )

    def _store(self, project_id: int, outcomes: list[TaskOutcome]) -> None:
        """Upload the predicted outcomes that Label Studio does not hold yet; record every outcome."""
        store = ProjectPredictions(self.client, project_id, self.segmenter.model_version)
        predicted = [outcome for outcome in outcomes if outcome.item is not None]
        held = store.holders([outcome.task_id for outcome in predicted])
        store.upload([outcome for outcome in predicted if outcome.task_id not in held])
        failed = [outcome for outcome in outcomes if outcome.failure is not None]
        with self._lock:
            self._counts["stored"] += len(predicted) - len(held)
            self._counts["already_stored"] += len(held)
        self._record(project_id, failed)
        logger.info(
            "prediction job: project %d, stored %d, already stored %d, failed %d%s; %d queued",
            project_id, len(predicted) - len(held), len(held), len(failed),
            _by_reason(failed), len(self._queue),
        )

    def _record(self, project_id: int, failed: Sequence[TaskOutcome]) -> None:
        """Count failures by reason, keep the latest, and release the tasks' claims so that a later
        retrieval may try them again."""
        with self._lock:
            for outcome in failed:
                assert outcome.failure is not None
                self._failures_by_reason[outcome.failure.code.value] += 1
                self._recent_failures.append(
                    {**outcome.failure.record(), "code": outcome.failure.code.value}
                )
        self.claims.release(project_id, [outcome.task_id for outcome in failed])


def _by_reason(failed: Sequence[TaskOutcome]) -> str:
    """" (image-unreachable: 2, no-expression: 1)" for a log line; "" when nothing failed."""
    counts = Counter(outcome.failure.code.value for outcome in failed if outcome.failure is not None)
    return f" ({', '.join(f'{code}: {count}' for code, count in counts.most_common())})" if counts else ""
