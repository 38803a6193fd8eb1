"""Label Studio JSON exports as a stream of tasks: from a file, or a snapshot of a live project.

A JSON export is one top-level array of task objects. It is read item by item with ijson, so
memory stays flat in the number of tasks. A live project is exported through label-studio-sdk
as a snapshot with predictions serialized in full (the plain `/export` gives their ids only),
downloaded to a temporary file and then read like any other file.

The commands that read an export (evaluate, export-refcoco) declare the same SOURCE options with
add_export_source_arguments and open what they name with opened_export_source.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import ijson

from mlcdseg.errors import ExportFormatError, LabelConfigError, LabelStudioError
from mlcdseg.export_tasks import ANNOTATION_MODES, SampleSettings
from mlcdseg.urls import HTTP_URL_DESCRIPTION, is_http_url

logger = logging.getLogger(__name__)

_UTF8_BOM = b"\xef\xbb\xbf"
_PEEK_BYTES = 4096


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


def iter_export_tasks(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Stream the items of a JSON export's top-level array; ExportFormatError for unusable input.

    Items are yielded as parsed (usually task dicts; floats as float). A truncated file raises
    only when the parser reaches the cut, after the complete items before it were yielded.
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
            for item in ijson.items(stream, "item", use_float=True):
                yield item
                count += 1
        except ijson.JSONError as error:
            raise ExportFormatError(_parse_error_message(path, count, error)) from error


def _seek_past_preamble(stream: BinaryIO, path: Path) -> None:
    """Check that the JSON starts with an array and position the stream at its first byte."""
    head = stream.read(_PEEK_BYTES)
    offset = len(_UTF8_BOM) if head.startswith(_UTF8_BOM) else 0
    while not head[offset:].strip():
        more = stream.read(_PEEK_BYTES)
        if not more:
            raise ExportFormatError(f"the export {path} is empty; expected a JSON list of tasks")
        head += more
    first = head[offset:].lstrip()[:1]
    if first != b"[":
        what = "holds a JSON object" if first == b"{" else f"starts with {first.decode('latin-1')!r}"
        raise ExportFormatError(
            f"the export {path} {what}, not a list of tasks; use a Label Studio JSON export "
            "(exportType=JSON), not JSON_MIN, CSV or a single task"
        )
    stream.seek(offset)


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


def add_export_source_arguments(
    parser: argparse.ArgumentParser, *, model_version_help: str, live_project_description: str | None = None
) -> None:
    """SOURCE, the options that pick samples from its tasks and the live-project options.

    Only --model-version means something different to each command, so its help is the caller's;
    live_project_description, when given, is printed under the live-project group's title.
    """
    parser.add_argument("source", nargs="?", metavar="SOURCE", help="Label Studio JSON export file (full predictions)")
    parser.add_argument(
        "--label-config", metavar="XML_FILE", help="labeling config of a SOURCE file (a live project's is read from it)"
    )
    parser.add_argument(
        "--annotation",
        choices=ANNOTATION_MODES,
        default="latest",
        help="human mask: latest submitted non-cancelled annotation (default), the ground-truth one, "
        "or all (each annotator's latest as its own sample)",
    )
    parser.add_argument("--model-version", help=model_version_help)
    parser.add_argument(
        "--control", metavar="NAME", help="mask control (BrushLabels/PolygonLabels name) when there are several"
    )
    parser.add_argument(
        "--expression-field",
        metavar="KEY",
        help="task data key of the expression (default: the <Text> tag's, else 'expression')",
    )
    live = parser.add_argument_group("live project (instead of SOURCE)", live_project_description)
    environment = os.environ
    live.add_argument(
        "--label-studio-url", default=environment.get("LABEL_STUDIO_URL"), help="default: $LABEL_STUDIO_URL"
    )
    live.add_argument(
        "--api-key", default=environment.get("LABEL_STUDIO_API_KEY"), help="default: $LABEL_STUDIO_API_KEY"
    )
    live.add_argument("--project", type=int, metavar="ID", help="project id to export as a snapshot")
    live.add_argument(
        "--export-timeout",
        type=_positive_seconds,
        default=600.0,
        metavar="S",
        help="seconds to wait for the snapshot (default 600)",
    )


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


@contextmanager
def opened_export_source(arguments: argparse.Namespace) -> Iterator[tuple[ExportSource, SampleSettings]]:
    """The export that add_export_source_arguments' options name, and the sample settings they ask for.

    LabelConfigError when --label-config cannot be read or does not fit the options; otherwise
    what open_export_source and SampleSettings.from_label_config raise.
    """
    label_config = None
    if arguments.label_config:
        try:
            label_config = Path(arguments.label_config).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text, so not an XML config"
            raise LabelConfigError(f"cannot read the labeling config {arguments.label_config}: {reason}") from error
    with open_export_source(
        arguments.source,
        label_studio_url=arguments.label_studio_url if arguments.project is not None else None,
        api_key=arguments.api_key,
        project=arguments.project,
        label_config=label_config,
        timeout_s=arguments.export_timeout,
    ) as source:
        settings = SampleSettings.from_label_config(
            source.label_config,
            annotation=arguments.annotation,
            model_version=arguments.model_version,
            control=arguments.control,
        )
        if arguments.expression_field:
            settings = replace(settings, expression_field=arguments.expression_field)
        yield source, settings
