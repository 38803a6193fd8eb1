"""A small REST client for the Label Studio 1.23 calls the demo and the end-to-end tests need.

Authenticates with a legacy API token (`Authorization: Token …`) or a personal access token
(exchanged for `Bearer` access tokens, mlcdseg.labelstudio.auth); every non-2xx answer raises
LabelStudioError carrying the method, path, status and response body. It can create the user's
personal access token (a JWT refresh token) for clients that authenticate the new way, such as the
ML backend. Export snapshots with full predictions are taken by mlcdseg.labelstudio.export_source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from mlcdseg.errors import LabelStudioError
from mlcdseg.labelstudio.auth import LabelStudioAuth

JsonObject = dict[str, Any]
_BODY_PREVIEW_CHARS = 2000


class LabelStudioClient:
    """REST calls against one Label Studio at `url`, authenticated with a legacy API token or a
    personal access token (`token`)."""

    def __init__(self, url: str, token: str, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._auth = LabelStudioAuth(self.url, token, self._session, timeout_s)

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request; raise LabelStudioError on a connection failure or a non-2xx status.

        With a personal access token, a 401 renews the access token and sends the request once more.
        """
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            response = self._session.request(method, f"{self.url}{path}", headers=self._auth.header(), **kwargs)
            if response.status_code == 401 and self._auth.uses_refresh:
                self._auth.forget_access_token()
                response = self._session.request(method, f"{self.url}{path}", headers=self._auth.header(), **kwargs)
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

    def create_project(self, title: str, label_config: str | None = None) -> JsonObject:
        """Create a project (title of 3+ characters); Label Studio rejects an invalid labeling config with 400.

        Without a label_config the project starts with an empty `<View></View>`.
        """
        body = {"title": title} if label_config is None else {"title": title, "label_config": label_config}
        return self._json("POST", "/api/projects", json=body)

    def project(self, project_id: int) -> JsonObject:
        """A project's fields, e.g. its `label_config`."""
        return self._json("GET", f"/api/projects/{project_id}")

    def update_project(self, project_id: int, **fields: Any) -> JsonObject:
        """Change project fields, e.g. `label_config` (checked against existing tasks and annotations)."""
        return self._json("PATCH", f"/api/projects/{project_id}", json=fields)

    def add_local_storage(self, project_id: int, path: str, title: str = "local files") -> JsonObject:
        """Attach a local-files storage for `path` (under the document root) so /data/local-files/ serves it."""
        body = {"project": project_id, "path": path, "title": title, "use_blob_urls": True}
        return self._json("POST", "/api/storages/localfiles", json=body)

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> JsonObject:
        """Import tasks (each `{"data": {...}}`) into a project; returns the import summary."""
        return self._json("POST", f"/api/projects/{project_id}/import", json=list(tasks))

    def upload_files(self, project_id: int, paths: Sequence[Path]) -> dict[str, str]:
        """Upload files to a project without making tasks of them; returns {file name: /data/upload/… URL}.

        Label Studio refuses a direct upload into a project whose labeling config reads more than
        one data key, so upload before setting such a config, then import JSON tasks naming the URLs.
        Uploaded names get a random prefix (`<8 hex>-<name>`); the URLs need authentication.
        """
        with ExitStack() as open_files:
            # One form field per file: Label Studio keeps only the last file of a repeated field name.
            files = {
                f"file{index}": (path.name, open_files.enter_context(path.open("rb")))
                for index, path in enumerate(paths)
            }
            answer = self._json(
                "POST", f"/api/projects/{project_id}/import", params={"commit_to_project": "false"}, files=files
            )
        uploads = self._json(
            "GET", f"/api/projects/{project_id}/file-uploads", params={"ids": json.dumps(answer["file_upload_ids"])}
        )
        urls = {}
        for path in paths:
            matches = [upload["file"] for upload in uploads if upload["file"].endswith(f"-{path.name}")]
            if len(matches) != 1:
                raise LabelStudioError(f"uploaded {path.name} but Label Studio lists {len(matches)} files of that name")
            urls[path.name] = f"/data/{matches[0]}"
        return urls

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

    def task_page(
        self, project_id: int, page: int, page_size: int, task_ids: Sequence[int] | None = None
    ) -> tuple[list[JsonObject], int]:
        """One page of a project's tasks with their predictions' model versions, and the total count.

        Tasks come oldest first with `fields=all` (each prediction with its id and model_version);
        `task_ids` limits the page to those tasks. Past the last page the list is empty (Label
        Studio answers 404 there, which this turns into an empty page).
        """
        params: dict[str, Any] = {"project": project_id, "page": page, "page_size": page_size, "fields": "all"}
        if task_ids is not None:
            params["query"] = json.dumps({"selectedItems": {"all": False, "included": list(task_ids)}})
        try:
            answer = self._json("GET", "/api/tasks", params=params)
        except LabelStudioError as error:
            if " answered 404" in str(error):
                return [], 0
            raise
        return answer["tasks"], int(answer["total"])

    def prediction_count(self, project_id: int) -> int:
        """How many predictions a project holds (one light request)."""
        answer = self._json("GET", "/api/tasks", params={"project": project_id, "page": 1, "page_size": 1})
        return int(answer["total_predictions"])

    def import_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]]) -> int:
        """Store predictions (`{"task": id, "result": [...], "model_version": ...}` each) in one request.

        Label Studio checks every task id against the project first and creates them all in one
        bulk insert; returns how many it created.
        """
        answer = self._json("POST", f"/api/projects/{project_id}/import/predictions", json=list(predictions))
        return int(answer["created"])

    def delete_prediction(self, prediction_id: int) -> None:
        """Delete one stored prediction."""
        self._request("DELETE", f"/api/predictions/{prediction_id}")

    def whoami(self) -> JsonObject:
        """The user the token belongs to; a cheap call to check the URL and the key."""
        return self._json("GET", "/api/current-user/whoami")

    def connect_ml_backend(
        self, project_id: int, backend_url: str, title: str = "MLCD-Seg", is_interactive: bool = True
    ) -> JsonObject:
        """Connect an ML backend to a project; Label Studio checks its /health and /setup first."""
        body = {"url": backend_url, "project": project_id, "title": title, "is_interactive": is_interactive}
        return self._json("POST", "/api/ml", json=body)

    def projects_titled(self, title: str) -> list[JsonObject]:
        """Return the projects whose title is exactly `title`, oldest first."""
        found: list[JsonObject] = []
        page = 1
        while True:
            answer = self._json("GET", "/api/projects", params={"page": page, "page_size": 100})
            found.extend(project for project in answer["results"] if project["title"] == title)
            if not answer.get("next"):
                return sorted(found, key=lambda project: project["id"])
            page += 1

    def ml_backends(self, project_id: int) -> list[JsonObject]:
        """Return the ML backends connected to a project."""
        return self._json("GET", "/api/ml", params={"project": project_id})

    def update_ml_backend(self, ml_backend_id: int, project_id: int, backend_url: str) -> JsonObject:
        """Point a connected ML backend at `backend_url` (Label Studio wants `project` with `url`)."""
        body = {"url": backend_url, "project": project_id}
        return self._json("PATCH", f"/api/ml/{ml_backend_id}", json=body)

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

    def annotations(self, task_id: int) -> list[JsonObject]:
        """Return every annotation of a task."""
        return self._json("GET", f"/api/tasks/{task_id}/annotations")

    def create_annotation(self, task_id: int, result: Sequence[Mapping[str, Any]], **fields: Any) -> JsonObject:
        """Submit an annotation of a task as the token's user; an empty `result` is a submitted empty annotation."""
        body = {"result": [dict(region) for region in result], **fields}
        return self._json("POST", f"/api/tasks/{task_id}/annotations", json=body)

    def jwt_settings(self) -> JsonObject:
        """The organization's token settings: {"api_tokens_enabled": bool, "legacy_api_tokens_enabled": bool}."""
        return self._json("GET", "/api/jwt/settings")

    def update_jwt_settings(self, **settings: bool) -> JsonObject:
        """Change the organization's token settings (needs the organizations.change permission)."""
        return self._json("POST", "/api/jwt/settings", json=settings)

    def create_personal_access_token(self) -> str:
        """Enable personal access tokens for the organization if needed and create one for this user.

        The token is a JWT refresh token: clients exchange it at /api/token/refresh/ for a short-lived
        access token sent as `Authorization: Bearer …`. Label Studio shows the full token only in
        this answer and allows one live token per user (409 while another is unrevoked).
        """
        if not self.jwt_settings().get("api_tokens_enabled"):
            self.update_jwt_settings(api_tokens_enabled=True)
        return self._json("POST", "/api/token/")["token"]
