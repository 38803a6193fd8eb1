"""Links a person can open: a task in Label Studio's Data Manager, by project and task id."""

from __future__ import annotations

from typing import Any


def task_url(label_studio_url: str | None, project: Any, task_id: Any) -> str | None:
    """`{label_studio_url}/projects/{project}/data?task={task_id}`, the task opened in the Data Manager.

    None when the URL is not known or the project or task id is not a whole number (an id Label
    Studio did not write cannot be linked).
    """
    if not label_studio_url or not _is_id(project) or not _is_id(task_id):
        return None
    return f"{label_studio_url.rstrip('/')}/projects/{project}/data?task={task_id}"


def _is_id(value: Any) -> bool:
    """Whether `value` is a Label Studio object id: a non-negative int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
