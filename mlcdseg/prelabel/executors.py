"""Where `mlcdseg prelabel` runs the model: in this process, or one replica per Ray actor.

Both take batches of tasks and hand back (batch, outcomes, times) when done, through the same
small interface the driver uses (`submit`, `has_free`, `has_pending`, `next_done`). The Ray one is
`ray.util.ActorPool` over actors that each load the model once (`num_gpus` per actor); Ray
schedules them on this machine or on a cluster.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from mlcdseg.errors import MlcdsegError, RayUnavailableError
from mlcdseg.labelstudio.image_fetch import ImageFetcher
from mlcdseg.model.settings import ModelSettings
from mlcdseg.prelabel.pipeline import PipelineTimes, Task, TaskOutcome, predict_tasks

logger = logging.getLogger(__name__)

#: Decoded images a worker keeps: batches of tasks that share images fetch each image once.
WORKER_IMAGE_CACHE = 32
#: Batches handed to each Ray worker at once: the second waits in the actor's own queue and starts
#: the moment the first ends, instead of a round trip to the driver later.
BATCHES_PER_WORKER = 2
RAY_INSTALL_HINT = "--ray needs Ray: pip install 'mlcdseg[ray]' (or pip install ray)"
Done = tuple[list[Task], list[TaskOutcome], PipelineTimes]


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to build its model and image source: picklable, sent to Ray actors."""

    model: ModelSettings
    label_studio_url: str
    api_key: str
    label_config: str


class Worker:
    """One model replica and image fetcher: a batch of tasks in, outcomes and times out."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.segmenter = setup.model.load_segmenter()
        self.images = ImageFetcher(setup.label_studio_url, setup.api_key, cache_size=WORKER_IMAGE_CACHE)

    def model_version(self) -> str:
        """The loaded model's version (what the driver's skip check compares)."""
        return self.segmenter.model_version

    def predict(self, tasks: list[Task]) -> Done:
        """The outcome of every task of the batch, and the seconds spent fetching and in the model."""
        times = PipelineTimes()
        outcomes = predict_tasks(self.segmenter, self.images, self.setup.label_config, tasks, times)
        return tasks, outcomes, times


class Executor(Protocol):
    """Runs batches of tasks somewhere and hands them back when done."""

    model_version: str

    def has_free(self) -> bool:
        """True when another batch may be submitted now."""

    def submit(self, tasks: list[Task]) -> None:
        """Start (or do) the work of one batch."""

    def has_pending(self) -> bool:
        """True while a submitted batch has not been handed back."""

    def next_done(self) -> Done:
        """The next finished batch (blocking)."""

    def close(self) -> None:
        """Release the workers."""


class LocalExecutor:
    """One worker in this process: a batch is computed when it is submitted."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.worker = Worker(setup)
        self.model_version = self.worker.model_version()
        self._done: deque[Done] = deque()

    def has_free(self) -> bool:
        return not self._done

    def submit(self, tasks: list[Task]) -> None:
        self._done.append(self.worker.predict(tasks))

    def has_pending(self) -> bool:
        return bool(self._done)

    def next_done(self) -> Done:
        return self._done.popleft()

    def close(self) -> None:
        self.worker.images.close()


class RayExecutor:
    """`workers` Ray actors with `gpus_per_worker` GPUs each, fed through a ray.util.ActorPool.

    `address` "auto" joins the Ray that $RAY_ADDRESS or `ray start` on this machine names, and
    starts a local one (no dashboard) when there is none; any other value is a cluster address
    (ray://host:10001, or host:6379 from a cluster node). Workers import mlcdseg: install it on
    every node.
    """

    def __init__(
        self,
        setup: WorkerSetup,
        address: str,
        workers: int,
        gpus_per_worker: float,
    ) -> None:
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise RayUnavailableError(RAY_INSTALL_HINT) from None
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=None if address == "auto" else address, include_dashboard=False, log_to_driver=False)
        actor_class = ray.remote(num_gpus=gpus_per_worker, num_cpus=1)(Worker)
        self._actors = [actor_class.remote(setup) for _ in range(workers)]
        versions = ray.get([actor.model_version.remote() for actor in self._actors])
        if len(set(versions)) != 1:
            raise MlcdsegError(f"the Ray workers loaded different model versions: {sorted(set(versions))}")
        self.model_version = versions[0]
        self._pool = ActorPool(self._actors * BATCHES_PER_WORKER)  # each actor once per batch slot
        logger.info("Ray: %d worker(s) with %g GPU(s) each, model %s", workers, gpus_per_worker, self.model_version)

    def has_free(self) -> bool:
        return self._pool.has_free()

    def submit(self, tasks: list[Task]) -> None:
        self._pool.submit(lambda actor, batch: actor.predict.remote(batch), tasks)

    def has_pending(self) -> bool:
        return self._pool.has_next()

    def next_done(self) -> Done:
        return self._pool.get_next_unordered()

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)

