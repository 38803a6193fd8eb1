"""The review queue: every scored prediction, lowest score first, as a CSV a lead hands to reviewers.

One row per (task, model version) whose prediction carries a score, annotated or not: the task's
id and Label Studio link, the model version, the expression, the score and, when the task has a
human mask, the IoU of the model's mask against it (the lowest one when several annotators'
masks are scored, `--annotation all`). Equal scores keep the export's order. Cells go through
report.spreadsheet_safe, as in samples.csv.

The rows must all be seen before the first is written, so the queue holds one small entry per
scored prediction (a few hundred bytes with its expression); it is collected only when asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from mlcdseg.evaluation.report import SafeCsvWriter
from mlcdseg.evaluation.samples import ModelPrediction, SampleSettings
from mlcdseg.evaluation.scoring import ScoredSample
from mlcdseg.labelstudio.task_links import task_url
from mlcdseg.labelstudio.tasks import JsonObject, data_text, task_data

REVIEW_QUEUE_COLUMNS = ("task_id", "task_link", "model_version", "expression", "score", "iou")


@dataclass(frozen=True)
class QueueEntry:
    """One scored prediction of a task; iou is None when the task has no scored human mask."""

    task_id: Any
    project: Any
    model_version: str
    expression: str | None
    score: float
    iou: float | None

    def row(self, label_studio_url: str | None) -> dict[str, Any]:
        """The entry as a review-queue row; the link is empty without a Label Studio URL."""
        return {
            "task_id": self.task_id,
            "task_link": task_url(label_studio_url, self.project, self.task_id),
            "model_version": self.model_version,
            "expression": self.expression,
            "score": round(self.score, 6),
            "iou": None if self.iou is None else round(self.iou, 6),
        }


def queue_entries(
    task: JsonObject, predictions: Mapping[str, ModelPrediction], samples: Sequence[ScoredSample], settings: SampleSettings
) -> list[QueueEntry]:
    """The queue entries of one task: one per prediction with a score, with the IoU of its samples (if any).

    The expression is that of the task's samples, else the task's expression field, else the
    prediction's prompt text.
    """
    entries = []
    for version, prediction in predictions.items():
        if prediction.score is None:
            continue
        scored = [sample for sample in samples if sample.model_version == version]
        expression = next((sample.expression for sample in scored if sample.expression), None)
        entries.append(
            QueueEntry(
                task_id=task.get("id"),
                project=task.get("project"),
                model_version=version,
                expression=expression or data_text(task_data(task), settings.expression_field) or prediction.expression,
                score=prediction.score,
                iou=min((sample.iou for sample in scored), default=None),
            )
        )
    return entries


class ReviewQueue:
    """The queue entries of a run, written lowest score first."""

    def __init__(self) -> None:
        self._entries: list[QueueEntry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def extend(self, entries: Iterable[QueueEntry]) -> None:
        """Add entries, in export order."""
        self._entries.extend(entries)

    def write(self, stream: IO[str], label_studio_url: str | None) -> None:
        """Write the CSV (header REVIEW_QUEUE_COLUMNS), lowest score first; equal scores in export order."""
        writer = SafeCsvWriter(stream, REVIEW_QUEUE_COLUMNS)
        ordered = sorted(self._entries, key=lambda entry: entry.score)
        writer.write_rows(entry.row(label_studio_url) for entry in ordered)
