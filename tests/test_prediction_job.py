"""The /predict budget, the background job that stores deferred tasks through Label Studio's API,
and the start-up check of the Label Studio settings; Label Studio is a recording double here (the
real one is in test_e2e_prelabel.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import requests_mock

from backend import task_claims
from backend.app import create_app
from backend.label_studio_check import label_studio_problem
from backend.settings import Settings
from tests.backend_doubles import DictImages, ScriptedSegmenter, predict_body, task

LABEL_STUDIO = {"label_studio_url": "http://label-studio.test", "label_studio_api_key": "a" * 40}


class RecordingLabelStudio:
    """The two calls the job makes (task pages with their predictions, prediction import), in memory."""

    def __init__(self, held: dict[int, str] | None = None) -> None:
        self.predictions: dict[int, list[dict[str, Any]]] = {
            task_id: [{"id": task_id, "model_version": version}] for task_id, version in (held or {}).items()
        }
        self.imports: list[list[int]] = []

    def task_page(
        self, project_id: int, page: int, page_size: int, task_ids: Sequence[int] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        assert task_ids is not None and page == 1
        return [{"id": task_id, "predictions": self.predictions.get(task_id, [])} for task_id in task_ids], len(task_ids)

    def import_predictions(self, project_id: int, predictions: Sequence[dict[str, Any]]) -> int:
        assert project_id == 1
        self.imports.append([item["task"] for item in predictions])
        for item in predictions:
            self.predictions.setdefault(item["task"], []).append(item)
        return len(predictions)

    def stored_per_task(self) -> dict[int, int]:
        return {task_id: len(items) for task_id, items in self.predictions.items()}


class GatedSegmenter(ScriptedSegmenter):
    """A scripted segmenter whose calls wait until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def predict_many(self, image, expressions, *, force_seg=None):
        assert self.gate.wait(timeout=30)
        return super().predict_many(image, expressions, force_seg=force_seg)


def _app(segmenter, label_studio: RecordingLabelStudio | None, **settings: Any):
    app = create_app(
        Settings(**(LABEL_STUDIO if label_studio else {}), **settings), segmenter, DictImages(), label_studio
    )
    app.testing = True
    return app.test_client()


def _wait_until_idle(client) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        jobs = client.get("/jobs").get_json()
        if jobs["queued"] == 0 and jobs["in_flight"] == 0 and jobs["accepted"] == jobs["stored"] + jobs["already_stored"] + jobs["failed"]:
            return jobs
        assert time.monotonic() < deadline, jobs
        time.sleep(0.01)


def test_tasks_beyond_the_budget_are_answered_empty_and_stored_by_the_job() -> None:
    label_studio = RecordingLabelStudio()
    client = _app(ScriptedSegmenter(), label_studio, predict_budget=0.0)

    tasks = [task(1, "red"), task(2, "blue"), task(3, None), task(4, "red", image="/data/upload/1/gone.png")]
    answers = client.post("/predict", json=predict_body(tasks)).get_json()
    jobs = _wait_until_idle(client)

    assert answers["results"] == [[], [], [], []]
    assert label_studio.stored_per_task() == {1: 1, 2: 1}
    assert label_studio.predictions[1][0]["model_version"] == "scripted@1"
    # Task 3 fails at once (no expression); task 4's image is missing, which the job finds.
    assert (jobs["accepted"], jobs["stored"], jobs["failed"]) == (3, 2, 1)
    assert jobs["failures_by_reason"] == {"image-unreachable": 1}
    assert jobs["recent_failures"][0]["task_id"] == 4 and "404" in jobs["recent_failures"][0]["reason"]
    metrics = client.get("/metrics").get_json()
    assert metrics["prediction_job"]["stored"] == 2
    assert metrics["failed_tasks_by_reason"] == {"no-expression": 1}


def test_a_second_predict_answers_tasks_the_job_owns_with_empty_lists_so_each_task_has_one_writer() -> None:
    label_studio, segmenter = RecordingLabelStudio(), GatedSegmenter()
    client = _app(segmenter, label_studio, predict_budget=0.0)
    client.post("/predict", json=predict_body([task(1, "red"), task(2, "blue")]))  # the job waits at the gate

    jobs_during = client.get("/jobs").get_json()
    answers = client.post("/predict", json=predict_body([task(1, "red"), task(2, "blue")])).get_json()["results"]
    segmenter.gate.set()
    jobs = _wait_until_idle(client)

    assert answers == [[], []]
    assert jobs_during["queued"] + jobs_during["in_flight"] == 2
    assert jobs["accepted"] == 2 and label_studio.stored_per_task() == {1: 1, 2: 1}
    assert label_studio.imports == [[1, 2]]


def test_the_job_leaves_out_a_task_label_studio_already_holds_for_this_model_version() -> None:
    label_studio = RecordingLabelStudio(held={2: "scripted@1", 3: "older@0"})
    client = _app(ScriptedSegmenter(), label_studio, predict_budget=0.0)

    client.post("/predict", json=predict_body([task(1, "red"), task(2, "red"), task(3, "red")]))
    jobs = _wait_until_idle(client)

    assert label_studio.imports == [[1, 3]]
    assert label_studio.stored_per_task() == {1: 1, 2: 1, 3: 2}
    assert (jobs["stored"], jobs["already_stored"]) == (2, 1)


def test_a_full_queue_refuses_work_with_a_log_line_naming_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    client = _app(ScriptedSegmenter(), RecordingLabelStudio(), predict_budget=0.0, job_queue_limit=0)

    with caplog.at_level(logging.WARNING):
        answers = client.post("/predict", json=predict_body([task(1, "red"), task(2, "red")])).get_json()

    assert answers["results"] == [[], []]
    assert "prediction job refused 2 task(s) of project 1" in caplog.text
    assert "MLCDSEG_JOB_QUEUE_LIMIT" in caplog.text
    assert client.get("/jobs").get_json()["refused"] == 2


def test_without_label_studio_the_budget_alone_applies_and_the_summary_says_what_was_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _app(ScriptedSegmenter(), None, predict_budget=0.0)

    with caplog.at_level(logging.INFO, logger="backend.predictions"):
        answers = client.post("/predict", json=predict_body([task(1, "red"), task(2, None)])).get_json()

    assert answers["results"] == [[], []]
    assert client.get("/jobs").get_json()["enabled"] is False
    assert "not reached within MLCDSEG_PREDICT_BUDGET=0 s" in caplog.text
    assert (
        "predict batch of 2 task(s), project 1: served 0, deferred 0 to the job, left 1 for a later "
        "retrieval, 0 owned by the job, failed 1 (no-expression: 1)"
    ) in caplog.text


class ClockSegmenter(ScriptedSegmenter):
    """Each predict_many call moves a fake clock on by one second."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def predict_many(self, image, expressions, *, force_seg=None):
        self.now += 1.0
        return super().predict_many(image, expressions, force_seg=force_seg)


def test_many_expressions_on_one_image_are_taken_a_few_at_a_time_so_the_budget_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    segmenter, label_studio = ClockSegmenter(), RecordingLabelStudio()
    fake_time = SimpleNamespace(monotonic=lambda: segmenter.now, perf_counter=time.perf_counter)
    monkeypatch.setattr("backend.predictions.time", fake_time)  # this module's clock only
    client = _app(segmenter, label_studio, predict_budget=2.5)

    answers = client.post("/predict", json=predict_body([task(task_id, "red") for task_id in range(1, 31)])).get_json()

    # Chunks of BUDGET_CHUNK (8) expressions start at 0, 1 and 2 s; at 3 s the budget is spent.
    assert [answer != [] for answer in answers["results"]] == [True] * 24 + [False] * 6
    assert client.get("/jobs").get_json()["accepted"] == 6


def test_within_the_budget_every_task_is_answered_in_the_response() -> None:
    label_studio = RecordingLabelStudio()
    client = _app(ScriptedSegmenter(), label_studio)

    answers = client.post("/predict", json=predict_body([task(1, "red"), task(2, "blue")])).get_json()["results"]

    assert [len(answer["result"]) for answer in answers] == [1, 1]
    assert client.get("/jobs").get_json()["accepted"] == 0 and label_studio.imports == []


def test_a_task_answered_moments_ago_goes_to_the_job_which_stores_it_only_if_label_studio_did_not() -> None:
    label_studio = RecordingLabelStudio()
    client = _app(ScriptedSegmenter(), label_studio)
    first = client.post("/predict", json=predict_body([task(1, "red"), task(2, "blue")])).get_json()["results"]
    # Label Studio has stored the answer of task 1 (not yet task 2's) when a second retrieval comes.
    label_studio.predictions[1] = [{"id": 1, "model_version": "scripted@1"}]

    second = client.post("/predict", json=predict_body([task(1, "red"), task(2, "blue")])).get_json()["results"]
    jobs = _wait_until_idle(client)

    assert [len(answer["result"]) for answer in first] == [1, 1]
    assert second == [[], []]
    assert label_studio.imports == [[2]]
    assert (jobs["accepted"], jobs["stored"], jobs["already_stored"]) == (2, 1, 1)


def test_a_task_answered_long_ago_is_answered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _app(ScriptedSegmenter(), RecordingLabelStudio())
    client.post("/predict", json=predict_body([task(1, "red")]))
    later = time.time() + task_claims.SETTLE_S + 1
    monkeypatch.setattr(task_claims.time, "time", lambda: later)

    (answer,) = client.post("/predict", json=predict_body([task(1, "red")])).get_json()["results"]

    assert len(answer["result"]) == 1
    assert client.get("/jobs").get_json()["accepted"] == 0


def test_workers_of_one_backend_share_claims_so_a_task_has_one_writer(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv(task_claims.CLAIMS_FILE_VARIABLE, str(tmp_path / "claims.sqlite3"))
    label_studio, segmenter = RecordingLabelStudio(), GatedSegmenter()
    first = _app(segmenter, label_studio, predict_budget=0.0, workers=2)
    second = _app(ScriptedSegmenter(), label_studio, workers=2)
    first.post("/predict", json=predict_body([task(1, "red")]))  # deferred to the first worker's job
    second.post("/predict", json=predict_body([task(2, "blue")]))  # answered by the second worker
    label_studio.predictions[2] = [{"id": 2, "model_version": "scripted@1"}]  # and stored by Label Studio

    answers = second.post("/predict", json=predict_body([task(1, "red"), task(2, "blue")])).get_json()["results"]
    from_first = first.post("/predict", json=predict_body([task(2, "blue")])).get_json()["results"]
    segmenter.gate.set()
    _wait_until_idle(first)
    _wait_until_idle(second)

    assert answers == [[], []]  # task 1 is the first job's; task 2 was answered moments ago
    assert from_first == [[]]
    assert label_studio.imports == [[1]]
    assert label_studio.stored_per_task() == {1: 1, 2: 1}


@pytest.mark.parametrize(
    ("settings", "status", "problem"),
    [
        ({}, None, "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY unset"),
        ({"label_studio_url": "http://label-studio.test"}, None, "LABEL_STUDIO_API_KEY unset"),
        (LABEL_STUDIO, 401, "refused LABEL_STUDIO_API_KEY"),
        (LABEL_STUDIO, "down", "is unreachable"),
        (LABEL_STUDIO, 200, None),
    ],
)
def test_the_start_up_check_names_the_one_problem_with_the_label_studio_settings(settings, status, problem) -> None:
    with requests_mock.Mocker() as mocked:
        whoami = "http://label-studio.test/api/current-user/whoami"
        if status == "down":
            mocked.get(whoami, exc=requests.exceptions.ConnectionError("connection refused"))
        elif status is not None:
            mocked.get(whoami, status_code=status, json={"id": 1})
        found = label_studio_problem(Settings(**settings))

    if problem is None:
        assert found is None
    else:
        assert problem in found and "\n" not in found
