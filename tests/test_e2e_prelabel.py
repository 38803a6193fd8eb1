"""Pre-labeling whole projects against a real Label Studio 1.23.2 (the session's, from conftest).

A UI-style "Retrieve predictions" on more tasks than the backend's budget covers ends, once the
background job has finished, with exactly one prediction per task; `mlcdseg prelabel`, locally and
on Ray, killed midway and run again, does too. The model is the stand-in (NOT MLCD-Seg) with a set
cost per call; every mask is checked against its colour rule, and tasks whose image is missing
are reported with their reason and get no prediction at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from mlcdseg.labelstudio.client import JsonObject, LabelStudioClient
from mlcdseg.labelstudio.local_server import REPO_ROOT, BackendServer, LabelStudioServer
from mlcdseg.masks.codecs import decode_brush_rle
from mlcdseg.model.stand_in import colour_rule_mask, write_stand_in_model

pytestmark = pytest.mark.labelstudio

EXPRESSIONS_CONFIG = (REPO_ROOT / "label_config" / "expressions.xml").read_text(encoding="utf-8")
IMAGE_COUNT = 6
EXPRESSIONS = ("the red box", "the blue square", "the green bar")
MISSING_IMAGES = 3


@dataclass(frozen=True)
class Images:
    """Small PNGs in a local-files folder of Label Studio; name → uint8 (H, W, 3)."""

    folder: Path
    pixels: dict[str, np.ndarray]


@dataclass(frozen=True)
class Project:
    """A project of many tasks over a few small images; the last MISSING_IMAGES tasks' images do not exist."""

    project_id: int
    task_ids: tuple[int, ...]
    missing_image_task_ids: frozenset[int]
    expected: dict[int, np.ndarray]  # task id → the colour rule's mask, bool (H, W)


@pytest.fixture(scope="module")
def images(label_studio: LabelStudioServer) -> Images:
    """IMAGE_COUNT 64×48 PNGs, each showing a red, a blue and a green shape."""
    folder = label_studio.document_root / "prelabel"
    folder.mkdir(parents=True, exist_ok=True)
    pixels_by_name = {}
    for index in range(IMAGE_COUNT):
        pixels = np.full((48, 64, 3), 60, dtype=np.uint8)
        pixels[4 : 12 + 4 * index, 3:30] = (250, 10, 5)
        pixels[24:40, 34 + index : 60] = (0, 0, 255)
        pixels[42:46, 2 : 10 + index] = (0, 255, 0)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        pixels_by_name[f"{index}.png"] = pixels
    return Images(folder, pixels_by_name)


@pytest.fixture(scope="module")
def stand_in_3ms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in (NOT MLCD-Seg) with a set cost of 3 ms per call: the count matters more than the cost."""
    return write_stand_in_model(tmp_path_factory.mktemp("models") / "stand-in-3ms", latency_ms=3)


def _project(client: LabelStudioClient, images: Images, title: str, count: int) -> Project:
    """A project of `count` tasks (the last MISSING_IMAGES with a missing image), imported in one request."""
    project_id = client.create_project(title, EXPRESSIONS_CONFIG)["id"]
    client.add_local_storage(project_id, str(images.folder))
    names = sorted(images.pixels)
    data = [
        {"image": f"/data/local-files/?d=prelabel/{names[index % len(names)]}", "expression": EXPRESSIONS[index % 3]}
        for index in range(count - MISSING_IMAGES)
    ] + [
        {"image": f"/data/local-files/?d=prelabel/missing-{index}.png", "expression": "the red box"}
        for index in range(MISSING_IMAGES)
    ]
    client.import_tasks(project_id, [{"data": item} for item in data])
    task_ids = tuple(sorted(task["id"] for task in _all_tasks(client, project_id)))
    assert len(task_ids) == count
    expected = {
        task_id: colour_rule_mask(images.pixels[item["image"].rsplit("/", 1)[1]], item["expression"])
        for task_id, item in zip(task_ids[: count - MISSING_IMAGES], data)
    }
    return Project(project_id, task_ids, frozenset(task_ids[count - MISSING_IMAGES :]), expected)


def _all_tasks(client: LabelStudioClient, project_id: int) -> list[JsonObject]:
    """Every task of a project, in pages of 1,000."""
    tasks: list[JsonObject] = []
    page = 1
    while True:
        found, total = client.task_page(project_id, page, 1000)
        tasks += found
        if not found or len(tasks) >= total:
            return tasks
        page += 1


def _assert_one_prediction_per_task_following_the_colour_rule(client: LabelStudioClient, project: Project) -> None:
    """Exactly one prediction per task with an image, none for the others, each mask the colour rule's."""
    predictions = client.predictions(project.project_id)
    per_task = Counter(prediction["task"] for prediction in predictions)
    served = set(project.task_ids) - project.missing_image_task_ids
    assert set(per_task) == served, f"without a prediction: {sorted(served - set(per_task))[:10]}"
    assert max(per_task.values()) == 1, f"duplicates: {[task for task, n in per_task.items() if n > 1][:10]}"
    assert len({prediction["model_version"] for prediction in predictions}) == 1
    for prediction in predictions:
        mask = np.zeros((48, 64), dtype=bool)
        for region in prediction["result"]:
            mask |= decode_brush_rle(region["value"]["rle"], 48, 64)
        assert np.array_equal(mask, project.expected[prediction["task"]]), f"task {prediction['task']}"


@contextlib.contextmanager
def _budget_backend(
    label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory, name: str, workers: int
) -> Iterator[BackendServer]:
    """Our backend with a 1 s /predict budget and `workers` gunicorn workers, each with its own model
    and background job writing to Label Studio.

    The stand-in costs 30 ms a call here, so that the job is still at work when the first
    retrieval has returned.
    """
    model = write_stand_in_model(tmp_path_factory.mktemp("models") / f"stand-in-30ms-{name}", latency_ms=30)
    with BackendServer(
        model,
        tmp_path_factory.mktemp(name),
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
        workers=workers,
        extra_env={"MLCDSEG_PREDICT_BUDGET": "1"},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def budget_backend(label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendServer]:
    """The budget backend with one worker."""
    with _budget_backend(label_studio, tmp_path_factory, "budget-backend", workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def two_worker_backend(label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendServer]:
    """The budget backend with two workers."""
    with _budget_backend(label_studio, tmp_path_factory, "two-worker-backend", workers=2) as server:
        yield server


def _wait_for_the_job(backend: BackendServer, timeout_s: float = 180) -> JsonObject:
    """GET /jobs until nothing is queued or in flight; the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = requests.get(f"{backend.url}/jobs", timeout=10).json()
        if jobs["queued"] == 0 and jobs["in_flight"] == 0:
            return jobs
        assert time.monotonic() < deadline, f"the job did not finish: {jobs}"
        time.sleep(0.5)


def test_one_retrieve_of_600_tasks_ends_with_one_prediction_each_and_a_second_adds_no_duplicate(
    client: LabelStudioClient, images: Images, budget_backend: BackendServer
) -> None:
    project = _project(client, images, "retrieve 600", 600)
    client.connect_ml_backend(project.project_id, budget_backend.url)

    client.retrieve_predictions(project.project_id)
    during_the_job = requests.get(f"{budget_backend.url}/jobs", timeout=10).json()
    client.retrieve_predictions(project.project_id)  # while the job runs
    jobs = _wait_for_the_job(budget_backend)

    assert 0 < during_the_job["accepted"] < 600, "the budget should cover part of the tasks only"
    assert during_the_job["queued"] + during_the_job["in_flight"] > 0
    assert jobs["accepted"] == during_the_job["accepted"], "the second retrieve queued tasks again"
    _assert_one_prediction_per_task_following_the_colour_rule(client, project)
    failed = {failure["task_id"]: failure for failure in jobs["recent_failures"]}
    assert set(failed) == project.missing_image_task_ids
    assert all(failure["code"] == "image-unreachable" and "404" in failure["reason"] for failure in failed.values())
    metrics = requests.get(f"{budget_backend.url}/metrics", timeout=10).json()
    assert metrics["prediction_job"]["failures_by_reason"] == {"image-unreachable": MISSING_IMAGES}


def test_retrieves_spread_over_two_workers_leave_one_prediction_per_task(
    client: LabelStudioClient, images: Images, two_worker_backend: BackendServer
) -> None:
    project = _project(client, images, "retrieve 400, two workers", 400)
    client.connect_ml_backend(project.project_id, two_worker_backend.url)
    served = len(project.task_ids) - len(project.missing_image_task_ids)

    for _ in range(4):  # while the first one's job runs; gunicorn hands them to either worker
        client.retrieve_predictions(project.project_id)
    # Until every task has been served and nothing more was stored for 5 s (a job's batch of 100
    # takes 3 s): both workers' jobs are then done.
    deadline, last, unchanged_since = time.monotonic() + 180, -1, time.monotonic()
    while True:
        stored = client.prediction_count(project.project_id)
        if stored != last:
            last, unchanged_since = stored, time.monotonic()
        elif stored >= served and time.monotonic() - unchanged_since > 5:
            break
        assert time.monotonic() < deadline, f"{stored} of {served} stored"
        time.sleep(0.5)

    _assert_one_prediction_per_task_following_the_colour_rule(client, project)


def _prelabel_command(label_studio: LabelStudioServer, project: Project, model: Path, summary: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "mlcdseg", "prelabel",
        "--label-studio-url", label_studio.url, "--api-key", label_studio.token,
        "--project", str(project.project_id), "--model", str(model),
        "--batch-size", "100", "-o", str(summary), *extra,
    ]  # fmt: skip


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def _kill_once_predictions_are_stored(
    command: list[str], client: LabelStudioClient, project: Project, at_least: int, timeout_s: float = 240
) -> int:
    """Run `command` and SIGKILL its process group once `at_least` predictions are stored; how many there were."""
    process = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            stored = client.prediction_count(project.project_id)
            if stored >= at_least:
                break
            assert process.poll() is None, f"prelabel ended (status {process.returncode}) before it was killed"
            assert time.monotonic() < deadline, f"only {stored} predictions after {timeout_s} s"
            time.sleep(0.3)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return stored


@pytest.mark.parametrize("ray", [False, True], ids=["local", "ray-2-workers"])
def test_prelabel_of_2000_tasks_killed_midway_and_run_again_gives_one_prediction_each(
    ray: bool,
    client: LabelStudioClient,
    label_studio: LabelStudioServer,
    images: Images,
    stand_in_3ms: Path,
    tmp_path: Path,
) -> None:
    project = _project(client, images, f"prelabel 2000 {'ray' if ray else 'local'}", 2000)
    summary_path = tmp_path / "summary.json"
    command = _prelabel_command(
        label_studio, project, stand_in_3ms, summary_path, *(["--ray", "auto", "--workers", "2"] if ray else [])
    )

    stored_before_kill = _kill_once_predictions_are_stored(command, client, project, at_least=300)
    finished = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=400)

    assert finished.returncode == 1, finished.stderr[-2000:]  # 1: some tasks failed (their images are missing)
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    assert summary["skipped"] >= stored_before_kill
    assert summary["skipped"] + summary["done"] == 2000 - MISSING_IMAGES
    assert summary["failed_by_reason"] == {"image-unreachable": MISSING_IMAGES}
    assert {failure["task_id"] for failure in summary["failures"]} == project.missing_image_task_ids
    assert f"failed, image-unreachable: {MISSING_IMAGES}" in finished.stdout
    _assert_one_prediction_per_task_following_the_colour_rule(client, project)
