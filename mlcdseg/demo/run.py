"""`mlcdseg demo`: a local Label Studio with MLCD-Seg pre-annotations on generated sample images.

Starts Label Studio (SQLite) and the ML backend on 127.0.0.1, creates a project with
label_config/expressions.xml and one with label_config/interactive.xml (or reuses them, found by
title, when the data folder is reused), imports the sample tasks, connects the backend and
retrieves predictions. Without a GPU or cached MLCD-Seg weights it serves the offline stand-in
model and says so loudly. `--once` checks every prediction, stops everything and exits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from mlcdseg.demo.scenes import DemoSample, write_demo_images
from mlcdseg.errors import LabelStudioError, MlcdsegError, ServiceStartError
from mlcdseg.labelstudio.client import LabelStudioClient
from mlcdseg.labelstudio.local_server import (
    LOOPBACK,
    REPO_ROOT,
    BackendServer,
    LabelStudioServer,
    find_label_studio,
    free_port,
    new_legacy_token,
)
from mlcdseg.model.loading import DEFAULT_MODEL, available_offline
from mlcdseg.model.settings import ModelSettings
from mlcdseg.model.stand_in import is_stand_in_directory, write_stand_in_model

# mlcdseg.labelstudio.label_config and mlcdseg.labelstudio.regions load label-studio-sdk (~0.5 s): imported where used so
# that `mlcdseg --help` stays quick.
if TYPE_CHECKING:
    from mlcdseg.labelstudio.label_config import LabelingSetup

logger = logging.getLogger(__name__)

EXPRESSIONS_CONFIG = REPO_ROOT / "label_config" / "expressions.xml"
INTERACTIVE_CONFIG = REPO_ROOT / "label_config" / "interactive.xml"
DEFAULT_DATA_DIR = Path("demo-data")
DEFAULT_LABEL_STUDIO_PORT = 8080
SAMPLES_FOLDER = "mlcdseg-demo"  # under Label Studio's local-files document root
CREDENTIALS_FILE = "mlcdseg-demo-credentials.json"
DEMO_USERNAME = "demo@example.com"
#: A first start runs Label Studio's migrations: ~40 s on an idle machine, minutes on a busy one.
#: A taken port is refused before starting, so this wait is only ever spent on a real start.
LABEL_STUDIO_STARTUP_TIMEOUT_S = 300.0
STAND_IN_BANNER = """
************************************************************************
*  OFFLINE STAND-IN MODEL - NOT MLCD-Seg                               *
*  No GPU with cached MLCD-Seg weights was found (or MLCDSEG_MODEL     *
*  names the stand-in), so the backend serves a colour rule: it masks  *
*  the pixels of the first colour word in the expression. Its masks    *
*  say nothing about MLCD-Seg. Set MLCDSEG_MODEL to the real weights.  *
************************************************************************
"""


@dataclass(frozen=True)
class ModelChoice:
    """What the demo backend serves: a hub id or directory, and whether it is the offline stand-in."""

    location: str
    is_stand_in: bool


@dataclass(frozen=True)
class DemoProject:
    """The project the demo set up: ids in Label Studio and the samples behind its tasks (same order)."""

    project_id: int
    ml_backend_id: int
    task_ids: tuple[int, ...]
    samples: tuple[DemoSample, ...]


def real_model_available(settings: ModelSettings) -> bool:
    """True when a CUDA GPU is present and the model `settings` name is at hand offline.

    The model is resolved as the backend resolves it (MODEL_DIR, MLCDSEG_REVISION), so the demo
    and the backend never disagree about it.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    return available_offline(settings.model_source, settings.revision)


def choose_model(explicit: str | None, work_dir: Path, settings: ModelSettings) -> ModelChoice:
    """The model to serve: `explicit` (--model), else MLCDSEG_MODEL, else MLCD-Seg if usable, else the stand-in.

    The model settings resolve the name, a name under MODEL_DIR included, as for every other
    command. The default model (MLCDSEG_MODEL unset or naming it) is served only when a GPU and
    its weights are at hand; else the stand-in is written to `work_dir/stand-in-model`.
    """
    named = settings.with_overrides(model=explicit)
    if explicit or named.model != DEFAULT_MODEL or real_model_available(named):
        return ModelChoice(named.model_source, is_stand_in_directory(named.model_source))
    return ModelChoice(str(write_stand_in_model(work_dir / "stand-in-model")), True)


def sample_tasks(samples: Sequence[DemoSample], folder: str, setup: LabelingSetup) -> list[dict[str, Any]]:
    """Label Studio tasks for samples whose images lie in `folder` under the local-files document root."""
    return [
        {
            "data": {
                setup.image_field: f"/data/local-files/?d={folder}/{sample.image_name}",
                setup.expression_field: sample.expression,
            }
        }
        for sample in samples
    ]


def set_up_project(
    client: LabelStudioClient,
    label_config: str,
    document_root: Path,
    backend_url: str,
    title: str,
    reuse_by_title: bool = False,
) -> DemoProject:
    """Create a project with the sample images as local files, import the tasks and connect the backend.

    With `reuse_by_title`, a project already titled `title` is taken instead and its backend
    pointed at `backend_url`: a demo run on a reused data folder finds the project of the previous
    run rather than adding one per run. The sample images are (re)written either way.
    """
    from mlcdseg.labelstudio.label_config import parse_label_config

    samples = write_demo_images(document_root / SAMPLES_FOLDER)
    existing = client.projects_titled(title) if reuse_by_title else []
    if existing:
        project_id = existing[0]["id"]
    else:
        project_id = client.create_project(title, label_config)["id"]
        client.add_local_storage(project_id, str(document_root / SAMPLES_FOLDER), title="demo images")
        client.import_tasks(project_id, sample_tasks(samples, SAMPLES_FOLDER, parse_label_config(label_config)))
    task_ids = tuple(task["id"] for task in client.tasks(project_id))
    if len(task_ids) != len(samples):
        raise LabelStudioError(
            f"project {project_id} ({title!r}) holds {len(task_ids)} tasks, not the {len(samples)} samples"
            + ("; delete it in Label Studio and run the demo again" if existing else "")
        )
    connected = client.ml_backends(project_id) if existing else []
    if connected:
        ml_backend_id = connected[0]["id"]
        client.update_ml_backend(ml_backend_id, project_id, backend_url)
    else:
        ml_backend_id = client.connect_ml_backend(project_id, backend_url)["id"]
    return DemoProject(project_id, ml_backend_id, task_ids, tuple(samples))


def prediction_problems(
    predictions: Sequence[dict[str, Any]], project: DemoProject, images_folder: Path
) -> list[str]:
    """What is wrong with a project's predictions: a task without one, or a mask empty or not decodable."""
    from mlcdseg.labelstudio.regions import mask_from_regions

    by_task: dict[int, list[dict[str, Any]]] = {}
    for prediction in predictions:
        by_task.setdefault(prediction["task"], []).append(prediction)
    problems = []
    for task_id, sample in zip(project.task_ids, project.samples):
        label = f"task {task_id} ({sample.image_name}, {sample.expression!r})"
        if task_id not in by_task:
            problems.append(f"{label}: no prediction")
            continue
        with Image.open(images_folder / sample.image_name) as image:
            width, height = image.size
        try:
            mask = mask_from_regions(by_task[task_id][-1]["result"], None, height, width)
        except MlcdsegError as error:
            problems.append(f"{label}: {error}")
            continue
        if not np.any(mask):
            problems.append(f"{label}: the predicted mask is empty")
    return problems


def _saved_credentials(data_dir: Path) -> tuple[str, str]:
    """(password, token) of the demo user of `data_dir`, created on first use and reused afterwards.

    Label Studio sets a user's password and token only when it creates the user, so a reused
    data folder must reuse them.
    """
    credentials_path = data_dir / CREDENTIALS_FILE
    if credentials_path.is_file():
        saved = json.loads(credentials_path.read_text(encoding="utf-8"))
        return saved["password"], saved["token"]
    from secrets import token_urlsafe

    password, token = token_urlsafe(12), new_legacy_token()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Created owner-only (0600) from the start: no moment in which other users can read the password.
    descriptor = os.open(credentials_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "w", encoding="utf-8") as stream:
        json.dump({"username": DEMO_USERNAME, "password": password, "token": token}, stream)
    return password, token


def port_is_free(port: int) -> bool:
    """True when nothing listens on `port` of 127.0.0.1 right now (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _label_studio_port(requested: int | None, once: bool) -> int:
    """The port for Label Studio: `requested`, else 8080 when free (interactive runs), else any free one.

    A requested port that is taken is refused at once: Label Studio would quietly move to another
    port, and the demo would wait for it on the one asked for.
    """
    if requested is not None:
        if not port_is_free(requested):
            raise ServiceStartError(
                f"port {requested} on {LOOPBACK} is taken; stop what uses it or choose another with --port"
            )
        return requested
    if not once and port_is_free(DEFAULT_LABEL_STUDIO_PORT):
        return DEFAULT_LABEL_STUDIO_PORT
    return free_port()


def run_demo(
    label_studio: str | None = None,
    data_dir: Path | None = None,
    port: int | None = None,
    model: str | None = None,
    once: bool = False,
) -> int:
    """Run the demo (see the module docstring); returns the process exit status.

    With `once` and no `data_dir` a temporary folder holds everything; it is removed after a
    successful run and kept (with the logs the demo printed) after a failed one.
    """
    temporary = data_dir is None and once
    if temporary:
        data_dir = Path(tempfile.mkdtemp(prefix="mlcdseg-demo-"))
    status = 1
    try:
        status = _run_demo(label_studio, (data_dir or DEFAULT_DATA_DIR).resolve(), port, model, once)
        return status
    finally:
        if temporary and status == 0:
            shutil.rmtree(data_dir, ignore_errors=True)
        elif temporary:
            print(f"mlcdseg demo: logs and data kept in {data_dir}", file=sys.stderr)


def _run_demo(label_studio: str | None, data_dir: Path, port: int | None, model: str | None, once: bool) -> int:
    """run_demo in `data_dir` (resolved, kept by the caller)."""
    with ExitStack() as stack:
        executable = find_label_studio(label_studio)
        label_config = EXPRESSIONS_CONFIG.read_text(encoding="utf-8")
        password, token = _saved_credentials(data_dir)
        label_studio_server = LabelStudioServer(
            data_dir / "label-studio",
            executable=executable,
            port=_label_studio_port(port, once),
            username=DEMO_USERNAME,
            password=password,
            token=token,
            startup_timeout_s=LABEL_STUDIO_STARTUP_TIMEOUT_S,
        )
        choice = choose_model(model, data_dir, ModelSettings.from_env())
        if choice.is_stand_in:
            print(STAND_IN_BANNER, file=sys.stderr, flush=True)
        print(f"Starting Label Studio (log: {label_studio_server.log_path}); the first start takes ~40 s ...")
        stack.enter_context(label_studio_server)
        backend = stack.enter_context(
            BackendServer(
                choice.location,
                data_dir,
                label_studio_url=label_studio_server.url,
                label_studio_api_key=token,
            )
        )
        print(f"Backend serving {choice.location} at {backend.url} (log: {backend.log_path})")
        client = LabelStudioClient(label_studio_server.url, token)
        title, interactive_title = project_titles(choice.is_stand_in)
        document_root = label_studio_server.document_root
        project = set_up_project(client, label_config, document_root, backend.url, title, reuse_by_title=True)
        interactive_config = INTERACTIVE_CONFIG.read_text(encoding="utf-8")
        interactive = set_up_project(
            client, interactive_config, document_root, backend.url, interactive_title, reuse_by_title=True
        )
        predicted_tasks = {prediction["task"] for prediction in client.predictions(project.project_id)}
        if predicted_tasks >= set(project.task_ids):
            print("Every task holds a prediction from an earlier run: nothing to retrieve.")
        else:
            started = time.monotonic()
            answer = client.retrieve_predictions(project.project_id)
            print(f"Label Studio: {answer.get('detail', answer)} ({time.monotonic() - started:.1f} s)")
        problems = prediction_problems(
            client.predictions(project.project_id),
            project,
            label_studio_server.document_root / SAMPLES_FOLDER,
        )
        for problem in problems:
            print(f"mlcdseg demo: {problem}", file=sys.stderr)
        if problems:
            print(
                f"mlcdseg demo: {len(problems)} of {len(project.task_ids)} tasks lack a usable prediction; "
                f"see the backend log {backend.log_path}",
                file=sys.stderr,
            )
        if once:
            if not problems:
                print(f"OK: every one of the {len(project.task_ids)} tasks has a non-empty predicted mask.")
            return 1 if problems else 0
        print(annotator_instructions(label_studio_server.url, project, interactive, password, data_dir))
        if choice.is_stand_in:
            print(STAND_IN_BANNER, file=sys.stderr, flush=True)
        _wait_for_interrupt()
    return 0


def project_titles(is_stand_in: bool) -> tuple[str, str]:
    """Titles of the demo's expressions and interactive projects (Label Studio allows 50 characters)."""
    title = "MLCD-Seg demo (offline stand-in)" if is_stand_in else "MLCD-Seg demo"
    return title, f"{title} - interactive"


def annotator_instructions(
    url: str, project: DemoProject, interactive: DemoProject, password: str, data_dir: Path
) -> str:
    """What the demo prints for a person: where to log in, and the steps of interactive pre-annotation in order."""
    return (
        f"\nLog in at {url} as {DEMO_USERNAME} with password {password}\n"
        f"(data and credentials are kept in {data_dir}; logs: label-studio/label-studio.log, backend.log).\n"
        f"\nPre-annotated tasks: {url}/projects/{project.project_id}/data - open a task, the mask is there.\n"
        f"\nInteractive pre-annotation: {url}/projects/{interactive.project_id}/data\n"
        "  1. open a task;\n"
        "  2. switch on Auto-Annotation in the editor's bottom bar (without it the editor sends nothing),\n"
        "     and Auto-Accept Suggestions to make the mask a region at once;\n"
        "  3. type an expression into the prompt box (e.g. 'the red car') and press Add (or Shift+Enter);\n"
        "  4. correct the mask with the brush, then Submit.\n"
        "Press Ctrl-C to stop."
    )


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopping Label Studio and the backend ...")
