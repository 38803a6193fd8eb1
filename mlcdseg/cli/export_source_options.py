"""The SOURCE options shared by every command that reads a Label Studio export.

evaluate and export-refcoco declare them with add_export_source_arguments and open what they
name with opened_export_source: an export file, or a snapshot of a live project.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from mlcdseg.errors import LabelConfigError
from mlcdseg.evaluation.samples import ANNOTATION_MODES, MAX_IMAGE_PIXELS, SampleSettings
from mlcdseg.labelstudio.export_source import ExportSource, open_export_source


def add_label_studio_options(group: argparse._ActionsContainer) -> None:
    """--label-studio-url and --api-key, defaulting to $LABEL_STUDIO_URL and $LABEL_STUDIO_API_KEY."""
    environment = os.environ
    group.add_argument(
        "--label-studio-url", default=environment.get("LABEL_STUDIO_URL"), help="default: $LABEL_STUDIO_URL"
    )
    group.add_argument(
        "--api-key",
        default=environment.get("LABEL_STUDIO_API_KEY"),
        help="legacy token or personal access token; default: $LABEL_STUDIO_API_KEY",
    )


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
    parser.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=MAX_IMAGE_PIXELS,
        metavar="N",
        help="skip a task whose regions declare an image of more pixels (default %(default)s)",
    )
    live = parser.add_argument_group("live project (instead of SOURCE)", live_project_description)
    add_label_studio_options(live)
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


def positive_int(text: str) -> int:
    """argparse type: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (a whole number), got {text!r}")
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
            max_image_pixels=arguments.max_image_pixels,
        )
        if arguments.expression_field:
            settings = replace(settings, expression_field=arguments.expression_field)
        yield source, settings
