"""The `prelabel` subcommand: pre-label a whole Label Studio project from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlcdseg.atomic_files import write_files_atomically
from mlcdseg.cli.export_source_options import add_label_studio_options, positive_int
from mlcdseg.cli.model_options import add_model_options, model_settings
from mlcdseg.errors import LabelStudioError
from mlcdseg.labelstudio.client import LabelStudioClient

_DESCRIPTION = """\
Predict a mask for every task of a Label Studio project and store the predictions through its
API, in batches, with the model's version. Tasks that already hold a prediction of this model
version are skipped, so a run that was stopped (even killed) and started again finishes the work
with no duplicate. Expressions that share an image are predicted together (the image is fetched
and decoded once). With --ray the model runs on Ray, one replica per worker (e.g. one per GPU
across a cluster); the tasks are still read and the predictions uploaded here.

A progress bar on stderr shows tasks/s and the time left; the summary lists done, skipped and
failed tasks with reasons (printed, and as JSON with -o).
"""


def register_prelabel(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `prelabel` subcommand."""
    parser = subparsers.add_parser(
        "prelabel",
        help="pre-label a whole Label Studio project (resumable; optionally on Ray)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_label_studio_options(parser)
    parser.add_argument("--project", type=int, required=True, metavar="ID", help="project id")
    parser.add_argument(
        "--tasks", type=_task_ids, metavar="IDS", help="only these task ids, comma-separated (default: all)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the predictions of this model version the tasks already hold (default: skip those tasks)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="tasks per model batch and per upload (default: %(default)s)"
    )
    parser.add_argument(
        "--page-size", type=positive_int, default=1000, help="tasks per Label Studio page read (default: %(default)s)"
    )
    parser.add_argument("-o", "--output", type=Path, metavar="SUMMARY_JSON", help="write the summary as JSON here")
    add_model_options(parser)
    ray_options = parser.add_argument_group("Ray (pip install 'mlcdseg[ray]')")
    ray_options.add_argument(
        "--ray", metavar="ADDRESS", help="run the model on Ray: auto (a local Ray) or a cluster address"
    )
    ray_options.add_argument("--workers", type=positive_int, default=1, help="model replicas (default: %(default)s)")
    ray_options.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs each replica takes (default: %(default)s)"
    )
    parser.set_defaults(handler=run_prelabel)
    return parser


def run_prelabel(arguments: argparse.Namespace) -> int:
    """Run the pre-labeling; exit status 0 when no task failed, 1 otherwise."""
    from tqdm import tqdm

    from mlcdseg.prelabel.executors import LocalExecutor, RayExecutor, WorkerSetup
    from mlcdseg.prelabel.run import PrelabelOptions, prelabel
    from mlcdseg.prelabel.store import ProjectPredictions

    if not arguments.label_studio_url or not arguments.api_key:
        raise LabelStudioError("prelabel needs --label-studio-url and --api-key (or LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)")
    client = LabelStudioClient(arguments.label_studio_url, arguments.api_key)
    label_config = client.project(arguments.project)["label_config"]
    setup = WorkerSetup(model_settings(arguments), client.url, arguments.api_key, label_config)
    executor = (
        RayExecutor(setup, arguments.ray, arguments.workers, arguments.gpus_per_worker)
        if arguments.ray
        else LocalExecutor(setup)
    )
    try:
        store = ProjectPredictions(client, arguments.project, executor.model_version)
        total = client.task_page(arguments.project, 1, 1, arguments.tasks)[1]
        options = PrelabelOptions(arguments.tasks, arguments.overwrite, arguments.batch_size, arguments.page_size)
        with tqdm(total=total, unit="task", file=sys.stderr, dynamic_ncols=True) as bar:
            summary = prelabel(store, executor, options, bar.update)
    finally:
        executor.close()
    print("\n".join(summary.lines()))
    if arguments.output is not None:
        text = json.dumps(summary.as_json(), indent=2) + "\n"
        write_files_atomically(arguments.output.parent, {arguments.output.name: text.encode("utf-8")})
    return 0 if summary.failed == 0 else 1


def _task_ids(text: str) -> list[int]:
    """argparse type: comma-separated task ids."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of task ids") from None
