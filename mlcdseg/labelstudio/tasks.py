"""Reading Label Studio tasks: their data fields, and why a task or sample is left out.

Shared by the backend (a /predict task's image URL and expression) and by every command that
reads an export (evaluate, export-refcoco). A task or sample that cannot be used becomes a
`Skip` with a `SkipCode` and a sentence for people; code that finds such a case raises
`Unusable`, which its caller turns into a Skip with the context it knows (task, annotator).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]


class SkipCode(str, enum.Enum):
    """Why a task or sample was left out, as a stable code for summaries and reports."""

    MALFORMED_TASK = "malformed-task"
    NO_ANNOTATION = "no-annotation"
    CANCELLED = "cancelled"
    NO_GROUND_TRUTH = "no-ground-truth"
    BAD_REGIONS = "bad-regions"
    NO_PREDICTION = "no-prediction"
    NO_EXPRESSION = "no-expression"
    NO_IMAGE = "no-image"
    DUPLICATE_MASK = "duplicate-mask"
    SIZE_MISMATCH = "size-mismatch"
    CORRUPT_MASK = "corrupt-mask"
    PREDICTION_IDS_ONLY = "prediction-ids-only"
    IMAGE_TOO_LARGE = "image-too-large"
    IMAGE_UNREACHABLE = "image-unreachable"
    UPLOAD_FAILED = "upload-failed"
    OTHER = "other"


@dataclass(frozen=True)
class Skip:
    """A task, or one annotator's or model version's sample of it, left out, and why."""

    task_id: Any
    reason: str
    code: SkipCode = SkipCode.OTHER

    def record(self) -> dict[str, Any]:
        """The skip as reports list it: task id, code and reason."""
        return {"task_id": self.task_id, "code": self.code.value, "reason": self.reason}


class Unusable(Exception):
    """A task, annotation, prediction or mask that cannot be used: `code` and a `reason` for people."""

    def __init__(self, code: SkipCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def skip(self, task_id: Any, context: str = "") -> Skip:
        """This reason as a Skip of `task_id`, prefixed with `context` ("the annotation by 3: ")."""
        return Skip(task_id, f"{context}{self.reason}", self.code)


#: The JSON type each task-level field must have when it is present and not null.
_TASK_FIELD_TYPES: dict[str, tuple[type, str]] = {
    "data": (dict, "an object"),
    "annotations": (list, "a list"),
    "predictions": (list, "a list"),
}


def malformed_task_skip(item: Any, position: int) -> Skip | None:
    """Why export item number `position` cannot be read as a task, or None when it can.

    A task is a JSON object whose data, annotations and predictions fields, where present and
    not null, are an object, a list and a list. human_samples and model_predictions take only
    tasks this accepts, so every command that reads an export skips the same items.
    """
    if not isinstance(item, dict):
        return Skip(None, f"item {position} of the export is not a task object", SkipCode.MALFORMED_TASK)
    for name, (json_type, described) in _TASK_FIELD_TYPES.items():
        value = item.get(name)
        if value is not None and not isinstance(value, json_type):
            return Skip(item.get("id"), f"its {name!r} field is not {described}", SkipCode.MALFORMED_TASK)
    return None


def task_data(task: Mapping[str, Any]) -> JsonObject:
    """A task's `data` object; {} when it is missing or not an object."""
    data = task.get("data")
    return data if isinstance(data, dict) else {}


def data_text(data: Mapping[str, Any], key: str) -> str | None:
    """A task data field as stripped text; None when it is missing, not a string or blank."""
    value = data.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None
