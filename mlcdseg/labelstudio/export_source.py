"""Label Studio JSON exports as a stream of tasks: from a file, or a snapshot of a live project.

A JSON export is one top-level array of task objects. It is read item by item with ijson, so
memory stays flat in the number of tasks. A live project is exported through label-studio-sdk
as a snapshot with predictions serialized in full (the plain `/export` gives their ids only),
downloaded to a temporary file and then read like any other file.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import ijson

from mlcdseg.errors import ExportFormatError, LabelStudioError, NestingTooDeepError
from mlcdseg.json_depth import MAX_NESTING_DEPTH, DepthLimitedReader
from mlcdseg.urls import HTTP_URL_DESCRIPTION, is_http_url

logger = logging.getLogger(__name__)

_UTF8_BOM = b"\xef\xbb\xbf"
_PEEK_BYTES = 4096
#: Bytes the parser asks for at a time.
READ_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class ExportSource:
    """A Label Studio JSON export on local disk, with what is known about where it came from."""

    path: Path
    label_config: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def tasks(self) -> Iterator[Any]:
        """The items of the export's top-level array, one at a time (see iter_export_tasks)."""
        return iter_export_tasks(self.path)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description of the source for reports."""
        return {"path": str(self.path), "bytes": _file_size(self.path), **self.details}


def iter_export_tasks(path: str | os.PathLike[str], max_depth: int = MAX_NESTING_DEPTH) -> Iterator[Any]:
    """Stream the items of a JSON export's top-level array; ExportFormatError for unusable input.

    Items are yielded as parsed (usually task dicts; floats as float). A truncated file raises
    only when the parser reaches the cut, after the complete items before it were yielded. Nesting
    deeper than `max_depth` levels (the top-level array is level 1) raises as soon as the bytes
    are read, before the parser builds anything from them: ijson's memory grows with the square
    of the depth, so a 200 KB file could otherwise take gigabytes.
    """
    path = Path(path)
    try:
        stream = path.open("rb")
    except OSError as error:
        raise ExportFormatError(f"cannot read the export {path}: {error.strerror or error}") from error
    with stream:
        _seek_past_preamble(stream, path)
        count = 0
        try:
            for item in ijson.items(
                DepthLimitedReader(stream, max_depth), "item", use_float=True, buf_size=READ_CHUNK_BYTES
            ):
                yield item
                count += 1
        except ijson.JSONError as error:
            raise ExportFormatError(_parse_error_message(path, count, error)) from error
        except NestingTooDeepError as error:
            raise ExportFormatError(f"the export {path} {error} (after {count} complete tasks); "
                                    "Label Studio exports never are, so this file is not one") from None


def _seek_past_preamble(stream: BinaryIO, path: Path) -> None:
    """Check that the JSON starts with an array and position the stream at its "[".

    Each byte of a leading BOM and whitespace is looked at once, however long the preamble.
    """
    offset = 0
    head = stream.read(_PEEK_BYTES)
    if head.startswith(_UTF8_BOM):
        head, offset = head[len(_UTF8_BOM):], len(_UTF8_BOM)
    while not head.strip():
        offset += len(head)
        head = stream.read(_PEEK_BYTES)
        if not head:
            raise ExportFormatError(f"the export {path} is empty; expected a JSON list of tasks")
    content = head.lstrip()
    first = content[:1]
    if first != b"[":
        what = "holds a JSON object" if first == b"{" else f"starts with {first.decode('latin-1')!r}"
        raise ExportFormatError(
            f"the export {path} {what}, not a list of tasks; use a Label Studio JSON export "
            "(exportType=JSON), not JSON_MIN, CSV or a single task"
        )
    stream.seek(offset + len(head) - len(content))


def _parse_error_message(path: Path, complete_items: int, error: Exception) -> str:
    """One line that says whether the file was cut short or is not JSON, and where."""
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "premature EOF" in detail:
        return (
            f"the export {path} is truncated: it ends after {complete_items} complete tasks, "
            "before the task list is closed; download or copy it again"
        )
    return f"the export {path} is not valid JSON after {complete_items} complete tasks: {detail}"


def _file_size(path: Path) -> int | None:
    """Size of the file in bytes, or None when it cannot be read."""
    try:
        return path.stat().st_size
    except OSError:
        return None


@contextmanager
def open_export_source(
    source: str | os.PathLike[str] | None,
    *,
    label_studio_url: str | None = None,
    api_key: str | None = None,
    project: int | None = None,
    label_config: str | None = None,
    timeout_s: float = 600.0,
    poll_interval_s: float = 1.0,
    httpx_client: httpx.Client | None = None,
) -> Iterator[ExportSource]:
    """The export to evaluate: a local file, or (project given) a fresh snapshot of a live project.

    A snapshot lives in a temporary directory that is removed when the context exits. The label
    config comes from `label_config` when given, else from the live project, else is None.
    LabelStudioError for a malformed label_studio_url, before any request.
    """
    if project is None:
        if source is None:
            raise ExportFormatError("give an export file, or --label-studio-url, --api-key and --project")
        yield ExportSource(Path(source), label_config, {"kind": "file"})
        return
    if source is not None:
        raise ExportFormatError("give either an export file or --project, not both")
    if not label_studio_url or not api_key:
        raise ExportFormatError("--project needs --label-studio-url and --api-key")
    if not is_http_url(label_studio_url):
        raise LabelStudioError(f"--label-studio-url {label_studio_url!r} is not {HTTP_URL_DESCRIPTION}")
    with tempfile.TemporaryDirectory(prefix="mlcdseg-export-") as directory:
        snapshot = snapshot_project_export(
            label_studio_url, api_key, project, Path(directory),
            timeout_s=timeout_s, poll_interval_s=poll_interval_s, httpx_client=httpx_client,
        )
        if label_config is not None:
            snapshot = ExportSource(snapshot.path, label_config, snapshot.details)
        yield snapshot


def snapshot_project_export(
    label_studio_url: str,
    api_key: str,
    project: int,
    directory: Path,
    *,
    timeout_s: float = 600.0,
    poll_interval_s: float = 1.0,
    httpx_client: httpx.Client | None = None,
) -> ExportSource:
    """Export a live project as a JSON snapshot with full predictions into `directory`.

    Creates the export, polls it until completed (LabelStudioError when it fails or takes longer
    than timeout_s) and streams the download to `directory/project-<id>-export-<eid>.json`.
    """
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.types import (
        SerializationOptionRequest,
        SerializationOptionsRequest,
    )

    where = f"project {project} at {label_studio_url}"
    with _label_studio_errors(f"reading {where}"):
        client = LabelStudio(base_url=label_studio_url, api_key=api_key, httpx_client=httpx_client)
        label_config = client.projects.get(id=project).label_config
    with _label_studio_errors(f"creating an export of {where}"):
        export = client.projects.exports.create(
            id=project,
            title="mlcdseg evaluate",
            serialization_options=SerializationOptionsRequest(
                predictions=SerializationOptionRequest(only_id=False)
            ),
        )
    export_id = export.id
    deadline = time.monotonic() + timeout_s
    status = export.status
    while status != "completed":
        if status == "failed":
            raise LabelStudioError(f"Label Studio could not build export {export_id} of {where}")
        if time.monotonic() > deadline:
            raise LabelStudioError(
                f"export {export_id} of {where} was still {status!r} after {timeout_s:.0f} s; "
                "raise --export-timeout or try again later"
            )
        time.sleep(poll_interval_s)
        with _label_studio_errors(f"polling export {export_id} of {where}"):
            status = client.projects.exports.get(id=project, export_pk=export_id).status
        logger.debug("export %s of %s: %s", export_id, where, status)
    path = directory / f"project-{project}-export-{export_id}.json"
    with _label_studio_errors(f"downloading export {export_id} of {where}"), path.open("wb") as target:
        chunks = client.projects.exports.download(
            id=project, export_pk=export_id, export_type="JSON", request_options={"chunk_size": 1 << 20}
        )
        for chunk in chunks:
            target.write(chunk)
    logger.info("downloaded export %s of %s (%d bytes)", export_id, where, path.stat().st_size)
    details = {"kind": "label-studio", "url": label_studio_url, "project": project, "export_id": export_id}
    return ExportSource(path, label_config, details)


@contextmanager
def _label_studio_errors(action: str) -> Iterator[None]:
    """Turn SDK and HTTP failures (and a URL httpx cannot parse) during `action` into one-line LabelStudioErrors."""
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as error:
        raise LabelStudioError(f"Label Studio refused {action}: HTTP {error.status_code} {error.body}") from error
    except (httpx.HTTPError, httpx.InvalidURL) as error:  # InvalidURL is no HTTPError
        raise LabelStudioError(f"Label Studio could not be reached while {action}: {error}") from error
