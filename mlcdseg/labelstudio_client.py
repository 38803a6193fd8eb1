"""A small REST client for the Label Studio 1.23 calls the demo and the end-to-end tests need.

Authenticates with a legacy API token (`Authorization: Token …`); every non-2xx answer raises
LabelStudioError carrying the method, path, status and response body. Export snapshots with full
predictions are taken by mlcdseg.export_source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import requests

from mlcdseg.errors import LabelStudioError

JsonObject = dict[str, Any]
_BODY_PREVIEW_CHARS = 2000


class LabelStudioClient:
    """REST calls against one Label Studio at `url`, authenticated with a legacy API `token`."""

    def __init__(self, url: str, token: str, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Token {token}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request; raise LabelStudioError on a connection failure or a non-2xx status."""
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            response = self._session.request(method, f"{self.url}{path}", **kwargs)
        except requests.RequestException as error:
            raise LabelStudioError(f"{method} {self.url}{path} failed: {error}") from error
        if not response.ok:
            raise LabelStudioError(
                f"{method} {path} answered {response.status_code}: {response.text[:_BODY_PREVIEW_CHARS]}"
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request and return its JSON body (None for an empty body)."""
        response = self._request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as error:
            raise LabelStudioError(
                f"{method} {path} answered non-JSON: {response.text[:_BODY_PREVIEW_CHARS]}"
            ) from error

    def create_project(self, title: str, label_config: str) -> JsonObject:
        """Create a project; Label Studio rejects an invalid labeling config with 400."""
        return self._json("POST", "/api/projects", json={"title": title, "label_config": label_config})

    def add_local_storage(self, project_id: int, path: str, title: str = "local files") -> JsonObject:
        """Attach a local-files storage for `path` (under the document root) so /data/local-files/ serves it."""
        body = {"project": project_id, "path": path, "title": title, "use_blob_urls": True}
        return self._json("POST", "/api/storages/localfiles", json=body)

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> JsonObject:
        """Import tasks (each `{"data": {...}}`) into a project; returns the import summary."""
        return self._json("POST", f"/api/projects/{project_id}/import", json=list(tasks))

    def tasks(self, project_id: int) -> list[JsonObject]:
        """Return every task of a project, oldest first."""
        found: list[JsonObject] = []
        page = 1
        while True:
            answer = self._json(
                "GET", "/api/tasks", params={"project": project_id, "page": page, "page_size": 100}
            )
            found.extend(answer["tasks"])
            if not answer["tasks"] or len(found) >= answer["total"]:
                return sorted(found, key=lambda task: task["id"])
            page += 1

    def connect_ml_backend(
        self, project_id: int, backend_url: str, title: str = "MLCD-Seg", is_interactive: bool = True
    ) -> JsonObject:
        """Connect an ML backend to a project; Label Studio checks its /health and /setup first."""
        body = {"url": backend_url, "project": project_id, "title": title, "is_interactive": is_interactive}
        return self._json("POST", "/api/ml", json=body)

    def retrieve_predictions(self, project_id: int) -> JsonObject:
        """Ask the project's ML backend for predictions of all tasks (one /predict call) and store them."""
        return self._json(
            "POST",
            "/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": project_id},
            json={"selectedItems": {"all": True, "excluded": []}},
        )

    def interactive_annotating(
        self, ml_backend_id: int, task_id: int, context: Mapping[str, Any]
    ) -> JsonObject:
        """Relay an interactive request (`context` = `{"result": [regions]}`) to the ML backend."""
        return self._json(
            "POST",
            f"/api/ml/{ml_backend_id}/interactive-annotating",
            json={"task": task_id, "context": dict(context)},
        )

    def predictions(self, project_id: int) -> list[JsonObject]:
        """Return every prediction stored for a project."""
        return self._json("GET", "/api/predictions", params={"project": project_id})
