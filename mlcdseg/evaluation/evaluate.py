"""`mlcdseg evaluate`: score human-corrected masks against the model's pre-annotation masks.

One sample is one (task, annotator, model version): the human mask of a selected annotation
(reference) against that model version's prediction mask, compared at the image's own size.
Tasks stream from the export and are scored in chunks (in worker processes when workers > 1);
only pixel counts come back, plus the encoded regions of each chunk's few worst samples, so
memory stays flat in the number of tasks, but for the (score, IoU) pairs that rank the scores
(16 bytes per scored sample, see score_ranking) and, when asked for, the review queue (one entry
per scored prediction, see review_queue). Outputs appear only when the run succeeds.
The command line (options, printed summary) is mlcdseg.cli.evaluate.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import multiprocessing
import os
import sys
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mlcdseg.evaluation import report
from mlcdseg.atomic_files import AtomicFiles
from mlcdseg.errors import ExportFormatError
from mlcdseg.labelstudio.export_source import ExportSource
from mlcdseg.evaluation.samples import SampleSettings, human_samples, model_predictions
from mlcdseg.labelstudio.tasks import Skip, SkipCode, Unusable, malformed_task_skip
from mlcdseg.evaluation.metrics import RefSegMeter
from mlcdseg.evaluation.review import ReviewMeter
from mlcdseg.evaluation.review_queue import QueueEntry, ReviewQueue, queue_entries
from mlcdseg.evaluation.score_ranking import ScoreRankingMeter
from mlcdseg.evaluation.scoring import ScoredSample, ComparedSample, compare

logger = logging.getLogger(__name__)

HISTOGRAM_BINS = 10
#: The files every run writes into its output folder.
OUTPUT_NAMES = ("report.json", "samples.csv", "report.html")


@dataclass
class ChunkResult:
    """Scores of a chunk of tasks: every sample's counts, skips, versions, the worst few and the queue entries."""

    tasks: int = 0
    samples: list[ScoredSample] = field(default_factory=list)
    queue: list[QueueEntry] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    worst: list[tuple[int, ComparedSample]] = field(default_factory=list)
    versions_seen: set[str] = field(default_factory=set)


def score_chunk(
    tasks: Sequence[Any], settings: SampleSettings, first_position: int, keep_worst: int, worst_bound: float = math.inf
) -> ChunkResult:
    """Score a chunk of export items.

    Keeps the regions of at most keep_worst of its lowest-IoU samples, and only of those whose
    IoU is <= worst_bound (the caller's current K-th worst IoU: nothing above it can enter).
    """
    result = ChunkResult(tasks=len(tasks))
    cases: list[ComparedSample] = []
    for position, task in enumerate(tasks, start=first_position):
        malformed = malformed_task_skip(task, position)
        if malformed is not None:
            result.skipped.append(malformed)
            continue
        predictions, prediction_skips = model_predictions(task, settings)
        result.skipped.extend(prediction_skips)
        result.versions_seen.update(predictions)
        if settings.model_version is not None:
            predictions = {version: p for version, p in predictions.items() if version == settings.model_version}
        if not predictions:
            wanted = f" of model version {settings.model_version}" if settings.model_version else ""
            result.skipped.append(Skip(task.get("id"), f"no prediction{wanted}", SkipCode.NO_PREDICTION))
            continue
        humans, human_skips = human_samples(task, settings)
        result.skipped.extend(human_skips)
        task_samples = []
        for human, prediction in itertools.product(humans, predictions.values()):
            try:
                compared = compare(human, prediction)
            except Unusable as unusable:
                result.skipped.append(unusable.skip(human.task_id))
                continue
            task_samples.append(compared.sample)
            cases.append(compared)
        result.samples.extend(task_samples)
        result.queue.extend(queue_entries(task, predictions, task_samples, settings))
    order = sorted(range(len(cases)), key=lambda index: (cases[index].sample.iou, index))
    result.worst = [(index, cases[index]) for index in order[:keep_worst] if cases[index].sample.iou <= worst_bound]
    return result


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of up to `size` items."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def scored_chunks(
    tasks: Iterable[Any],
    settings: SampleSettings,
    *,
    workers: int = 1,
    chunk_size: int = 32,
    keep_worst: int = 12,
    worst_bound: Callable[[], float] = lambda: math.inf,
) -> Iterator[ChunkResult]:
    """ChunkResults in task order; with workers > 1 a process pool scores the chunks.

    At most 2 * workers chunks are in flight, so a long export is never read far ahead
    (Pool.imap would queue the whole input). worst_bound() is read as each chunk is sent.
    """
    positions = itertools.count(0, chunk_size)
    if workers <= 1:
        for chunk in _chunks(tasks, chunk_size):
            yield score_chunk(chunk, settings, next(positions), keep_worst, worst_bound())
        return
    with multiprocessing.Pool(workers) as pool:
        pending: deque[Any] = deque()
        for chunk in _chunks(tasks, chunk_size):
            arguments = (chunk, settings, next(positions), keep_worst, worst_bound())
            pending.append(pool.apply_async(score_chunk, arguments))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class WorstSamples:
    """The K lowest-IoU samples seen so far (equal IoUs: earliest first) in a bounded heap."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._heap: list[tuple[float, int, ComparedSample]] = []

    def offer(self, sequence: int, case: ComparedSample) -> None:
        """Keep `case` if it is among the K worst; `sequence` is its position among all samples."""
        entry = (-case.sample.iou, -sequence, case)
        if len(self._heap) < self.capacity:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def bound(self) -> float:
        """The highest IoU that can still enter: the K-th worst so far, or infinity until K are kept."""
        return -self._heap[0][0] if len(self._heap) >= self.capacity else math.inf

    def cases(self) -> list[ComparedSample]:
        """The kept cases, lowest IoU first."""
        return [entry[2] for entry in sorted(self._heap, key=lambda entry: (-entry[0], -entry[1]))]


class EvaluationTotals:
    """Meters per group, IoU histograms, score ranking, the worst samples, skips and (when kept) the review queue of a run."""

    def __init__(self, worst_count: int, keep_review_queue: bool = False) -> None:
        self.tasks = 0
        self.samples = 0
        self.overall = RefSegMeter()
        self.groups: dict[str, defaultdict[Any, RefSegMeter]] = {
            name: defaultdict(RefSegMeter) for name in ("split", "model_version", "annotator", "version_split")
        }
        self.histograms: defaultdict[str, list[int]] = defaultdict(lambda: [0] * HISTOGRAM_BINS)
        self.worst = WorstSamples(worst_count)
        self.review = ReviewMeter()
        self.score_ranking = ScoreRankingMeter()
        self.keep_review_queue = keep_review_queue
        self.review_queue = ReviewQueue()
        self.skipped: list[Skip] = []
        self.skip_counts: Counter[SkipCode] = Counter()
        self.skip_examples: dict[SkipCode, Skip] = {}
        self.versions_seen: set[str] = set()

    def add(self, chunk: ChunkResult) -> None:
        """Fold one chunk's results in."""
        for index, case in chunk.worst:
            self.worst.offer(self.samples + index, case)
        for sample in chunk.samples:
            counts = (sample.intersection, sample.union, sample.model_area, sample.human_area)
            meters = [self.overall, self.groups["model_version"][sample.model_version]]
            meters.append(self.groups["annotator"][sample.annotator])
            if sample.split is not None:
                meters.append(self.groups["split"][sample.split])
                meters.append(self.groups["version_split"][(sample.model_version, sample.split)])
            for meter in meters:
                meter.update_counts(*counts)
            self.histograms[sample.model_version][min(int(sample.iou * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
            self.review.update(sample.model_version, sample.annotator, sample.iou, sample.lead_time)
            self.score_ranking.update(sample.model_version, sample.score, sample.iou)
        if self.keep_review_queue:
            self.review_queue.extend(chunk.queue)
        self.tasks += chunk.tasks
        self.samples += len(chunk.samples)
        self.skipped.extend(chunk.skipped)
        for skip in chunk.skipped:
            self.skip_counts[skip.code] += 1
            self.skip_examples.setdefault(skip.code, skip)
        self.versions_seen |= chunk.versions_seen

    def report(self, source: dict[str, Any]) -> dict[str, Any]:
        """The report.json content."""
        table = {version: {"all": meter.compute()} for version, meter in sorted(self.groups["model_version"].items())}
        for (version, split), meter in sorted(self.groups["version_split"].items()):
            table[version][split] = meter.compute()
        return {
            "overall": self.overall.compute(),
            **{f"by_{name}": {str(k): m.compute() for k, m in sorted(self.groups[name].items())}
               for name in ("split", "model_version", "annotator")},
            "by_model_version_and_split": table,
            "review": self.review.compute(),
            "score_ranking": self.score_ranking.compute(),
            "iou_histogram": {"bins": HISTOGRAM_BINS, "counts": dict(sorted(self.histograms.items()))},
            "skipped": [skip.record() for skip in self.skipped],
            "skipped_by_code": {
                code.value: {"count": count, "example": self.skip_examples[code].record()}
                for code, count in self.skip_counts.most_common()
            },
            "source": {**source, "tasks": self.tasks, "samples": self.samples, "skipped": len(self.skipped),
                       "model_versions_seen": sorted(self.versions_seen)},
        }


def evaluate_export(
    source: ExportSource,
    outdir: str | os.PathLike[str],
    settings: SampleSettings,
    *,
    workers: int = 1,
    worst_count: int = 12,
    quiet: bool = True,
    load_image: report.ImageLoader | None = None,
    chunk_size: int = 32,
    review_queue: str | os.PathLike[str] | None = None,
    label_studio_url: str | None = None,
) -> dict[str, Any]:
    """Evaluate an export and write report.json, samples.csv and report.html into outdir.

    With review_queue, also that CSV file (see review_queue), its task links under
    label_studio_url; it must not be one of OUTPUT_NAMES in outdir. Returns the report dict. On
    any error nothing is written and existing files stay as they were.
    """
    totals = EvaluationTotals(worst_count, keep_review_queue=review_queue is not None)
    progress = tqdm(desc="evaluating", unit="task", file=sys.stderr, disable=quiet or not sys.stderr.isatty())
    chunks = scored_chunks(
        source.tasks(), settings, workers=workers, chunk_size=chunk_size,
        keep_worst=worst_count, worst_bound=totals.worst.bound,
    )
    # closing(chunks): a failure in this loop stops the worker pool at once, not at garbage collection.
    with AtomicFiles(outdir) as outputs, progress, closing(chunks):
        samples_csv = report.SampleCsvWriter(outputs.open("samples.csv"))
        for chunk in chunks:
            totals.add(chunk)
            samples_csv.write_rows(sample.row() for sample in chunk.samples)
            progress.update(chunk.tasks)
        if settings.model_version is not None and settings.model_version not in totals.versions_seen:
            seen = ", ".join(sorted(totals.versions_seen)) or "none"
            raise ExportFormatError(f"model version {settings.model_version!r} is not in the export; versions seen: {seen}")
        summary = {**source.summary(), **{k: v for k, v in asdict(settings).items() if k != "prompt_controls"}}
        result = totals.report(summary)
        report.write_json(outputs.open("report.json"), result)
        views = report.worst_task_views(totals.worst.cases(), load_image)
        outputs.open("report.html").write(report.render_html(result, views))
        if review_queue is not None:
            _write_review_queue(outputs, Path(review_queue), totals.review_queue, label_studio_url)
    logger.info("evaluated %d tasks: %d samples, %d skipped", totals.tasks, totals.samples, len(totals.skipped))
    return result


def _write_review_queue(outputs: AtomicFiles, path: Path, queue: ReviewQueue, label_studio_url: str | None) -> None:
    """Write the queue to `path`: staged with the outputs when it goes into their folder, else on its own.

    Elsewhere it is moved into place just before the outputs, each file whole or not at all.
    """
    folder = path.absolute().parent
    if folder == outputs.directory:
        queue.write(outputs.open(path.name), label_studio_url)
        return
    with AtomicFiles(folder) as queue_files:
        queue.write(queue_files.open(path.name), label_studio_url)
