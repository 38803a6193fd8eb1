"""The shared pre-labeling pipeline and the `mlcdseg prelabel` driver, with doubles for Label Studio
(a real one is in test_e2e_prelabel.py)."""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections.abc import Sequence
from contextlib import closing
from typing import Any

import numpy as np
import pytest

from mlcdseg.errors import ExpressionError, RayUnavailableError
from mlcdseg.labelstudio.tasks import SkipCode
from mlcdseg.prelabel.executors import RAY_INSTALL_HINT, RayExecutor
from mlcdseg.prelabel.pipeline import (
    ImageGroup,
    PipelineTimes,
    group_by_image,
    labeling_setup,
    predict_tasks,
    prefetched,
)
from mlcdseg.prelabel.run import PrelabelOptions, prelabel
from mlcdseg.prelabel.store import ProjectPredictions
from tests.backend_doubles import EXPRESSIONS_CONFIG, SHAPES_URL, DictImages, ScriptedSegmenter, shapes_image, task


class PickySegmenter(ScriptedSegmenter):
    """Refuses the expression "..." like the real prompt builder does, for the whole batch."""

    def predict_many(self, image, expressions, *, force_seg=None):
        if "..." in expressions:
            raise ExpressionError("the expression '...' has nothing left to put in the prompt")
        return super().predict_many(image, expressions, force_seg=force_seg)


def test_tasks_are_grouped_by_image_and_unreadable_ones_fail_with_their_code() -> None:
    tasks = [task(1, "red"), task(2, "blue", image="/other.png"), task(3, "blue"), task(4, None), task(5, "x", image=None)]

    groups, failed = group_by_image(tasks, labeling_setup(EXPRESSIONS_CONFIG))

    assert [(group.image_url, group.task_ids, group.expressions) for group in groups] == [
        (SHAPES_URL, [1, 3], ["red", "blue"]),
        ("/other.png", [2], ["blue"]),
    ]
    assert [(outcome.task_id, outcome.failure.code) for outcome in failed] == [
        (4, SkipCode.NO_EXPRESSION),
        (5, SkipCode.NO_IMAGE),
    ]


def test_an_image_is_fetched_once_for_its_expressions_and_a_missing_one_fails_its_tasks() -> None:
    images, segmenter = DictImages(), ScriptedSegmenter()
    tasks = [task(1, "red"), task(2, "blue"), task(3, "red", image="/gone.png")]
    times = PipelineTimes()

    outcomes = {outcome.task_id: outcome for outcome in predict_tasks(segmenter, images, EXPRESSIONS_CONFIG, tasks, times)}

    assert images.fetched == [SHAPES_URL, "/gone.png"]
    assert segmenter.calls == ["red", "blue"]
    assert [len(outcomes[task_id].item["result"]) for task_id in (1, 2)] == [1, 1]
    assert outcomes[3].item is None and outcomes[3].failure.code == SkipCode.IMAGE_UNREACHABLE
    assert "HTTP 404" in outcomes[3].failure.reason
    assert times.fetch_s >= 0 and times.model_s >= 0


def test_an_expression_the_model_cannot_take_gets_an_empty_prediction_and_the_others_theirs() -> None:
    outcomes = predict_tasks(PickySegmenter(), DictImages(), EXPRESSIONS_CONFIG, [task(1, "red"), task(2, "...")])

    assert [len(outcome.item["result"]) for outcome in outcomes] == [1, 0]
    assert outcomes[1].item["model_version"] == "scripted@1"


class GatedImages(DictImages):
    """DictImages whose fetches of `slow_url` wait until `open` is set (at most 10 s)."""

    def __init__(self, images: dict[str, Any], slow_url: str) -> None:
        super().__init__(images)
        self.slow_url, self.open = slow_url, threading.Event()
        self.started: dict[str, threading.Event] = {url: threading.Event() for url in images}

    def fetch(self, url: str):
        self.started[url].set()
        if url == self.slow_url:
            self.open.wait(10)
        return super().fetch(url)


def test_the_next_images_are_fetched_while_the_model_works_on_the_first() -> None:
    urls = ["/a.png", "/b.png", "/c.png"]
    images = GatedImages({url: shapes_image() for url in urls}, slow_url="/b.png")
    seen_while_predicting: list[bool] = []

    def mask_for(image, expression):
        if expression == "first":  # the model on /a.png: /b.png's fetch is already under way
            seen_while_predicting.append(images.started["/b.png"].wait(10))
            images.open.set()
        return np.ones((image.height, image.width), dtype=bool)

    tasks = [task(1, "first", image="/a.png"), task(2, "second", image="/b.png"), task(3, "third", image="/c.png")]
    outcomes = predict_tasks(ScriptedSegmenter(mask_for), images, EXPRESSIONS_CONFIG, tasks)

    assert seen_while_predicting == [True]
    assert images.fetched == urls
    assert [outcome.item is not None for outcome in outcomes] == [True, True, True]


def test_chunks_of_one_image_share_one_fetch_and_closing_early_cancels_the_rest() -> None:
    images = DictImages({url: shapes_image(80 + 10 * index) for index, url in enumerate(("/a.png", "/b.png", "/c.png", "/d.png"))})
    whole = ImageGroup("/a.png", [1, 2, 3, 4, 5], ["x"] * 5)
    others = [ImageGroup(url, [index], ["x"]) for index, url in enumerate(("/b.png", "/c.png", "/d.png"), 6)]

    with closing(prefetched(images, [*whole.chunks(2), *others], ahead=2)) as fetches:
        handed = [(group.task_ids, fetch.result().size) for group, fetch in itertools.islice(fetches, 3)]

    assert handed == [([1, 2], (80, 60)), ([3, 4], (80, 60)), ([5], (80, 60))]
    assert images.fetched.count("/a.png") == 1
    assert "/d.png" not in images.fetched  # more than `ahead` groups past the last one handed out


class FakeLabelStudio:
    """Task pages and prediction writes of one project in memory, as LabelStudioClient offers them."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = {item["id"]: item for item in tasks}
        self.next_prediction_id = 100
        self.deleted: list[int] = []
        self.uploads: list[list[int]] = []

    def task_page(self, project_id: int, page: int, page_size: int, task_ids: Sequence[int] | None = None):
        chosen = [self.tasks[task_id] for task_id in sorted(task_ids if task_ids is not None else self.tasks)]
        return chosen[(page - 1) * page_size : page * page_size], len(chosen)

    def import_predictions(self, project_id: int, predictions: Sequence[dict[str, Any]]) -> int:
        self.uploads.append([item["task"] for item in predictions])
        for item in predictions:
            self.next_prediction_id += 1
            self.tasks[item["task"]]["predictions"].append({**item, "id": self.next_prediction_id})
        return len(predictions)

    def delete_prediction(self, prediction_id: int) -> None:
        self.deleted.append(prediction_id)
        for item in self.tasks.values():
            item["predictions"] = [p for p in item["predictions"] if p["id"] != prediction_id]


class InlineExecutor:
    """The LocalExecutor's contract over a test segmenter (no model loading)."""

    def __init__(self) -> None:
        self.segmenter, self.images, self.done = ScriptedSegmenter(), DictImages(), []
        self.model_version = self.segmenter.model_version
        self.batches: list[list[int]] = []

    def has_free(self) -> bool:
        return not self.done

    def submit(self, tasks):
        self.batches.append([item["id"] for item in tasks])
        times = PipelineTimes()
        self.done.append((tasks, predict_tasks(self.segmenter, self.images, EXPRESSIONS_CONFIG, tasks, times), times))

    def has_pending(self) -> bool:
        return bool(self.done)

    def next_done(self):
        return self.done.pop(0)


def _project(count: int, held: dict[int, str]) -> FakeLabelStudio:
    tasks = [task(task_id, "red") for task_id in range(1, count + 1)]
    for item in tasks:
        version = held.get(item["id"])
        item["predictions"] = [{"id": item["id"], "model_version": version, "result": []}] if version else []
    return FakeLabelStudio(tasks)


def test_prelabel_skips_tasks_holding_this_version_and_uploads_the_rest_in_batches() -> None:
    label_studio, executor = _project(7, held={2: "scripted@1", 3: "older@0"}), InlineExecutor()
    store = ProjectPredictions(label_studio, 1, executor.model_version)
    settled: list[int] = []

    summary = prelabel(store, executor, PrelabelOptions(batch_size=3, page_size=2), settled.append)

    assert executor.batches == [[1, 3, 4], [5, 6, 7]]
    assert label_studio.uploads == [[1, 3, 4], [5, 6, 7]]
    assert (summary.done, summary.skipped, summary.failed) == (6, 1, 0)
    assert sum(settled) == 7
    versions = [[p["model_version"] for p in item["predictions"]] for item in label_studio.tasks.values()]
    assert all(version.count("scripted@1") == 1 for version in versions)


def test_prelabel_with_overwrite_replaces_this_versions_predictions_and_keeps_others() -> None:
    label_studio, executor = _project(3, held={1: "scripted@1", 2: "older@0"}), InlineExecutor()

    summary = prelabel(ProjectPredictions(label_studio, 1, executor.model_version), executor, PrelabelOptions(overwrite=True))

    assert label_studio.deleted == [1] and summary.replaced == 1
    assert [[p["model_version"] for p in item["predictions"]] for item in label_studio.tasks.values()] == [
        ["scripted@1"],
        ["older@0", "scripted@1"],
        ["scripted@1"],
    ]


def test_the_summary_counts_failures_by_reason_for_people_and_as_json() -> None:
    label_studio = FakeLabelStudio([task(1, "red"), task(2, "red", image="/gone.png"), task(3, None)])
    executor = InlineExecutor()

    summary = prelabel(ProjectPredictions(label_studio, 1, executor.model_version), executor, PrelabelOptions())
    record = json.loads(json.dumps(summary.as_json()))

    assert (record["done"], record["failed"]) == (1, 2)
    assert record["failed_by_reason"] == {"image-unreachable": 1, "no-expression": 1}
    assert {failure["task_id"] for failure in record["failures"]} == {2, 3}
    assert set(record["seconds"]) == {"total", "fetch_and_decode", "model", "regions", "upload"}
    assert "  failed, image-unreachable: 1" in summary.lines()


def test_ray_missing_is_one_line_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError

    with pytest.raises(RayUnavailableError) as raised:
        RayExecutor(None, "auto", 2, 0.0)  # type: ignore[arg-type]

    assert str(raised.value) == RAY_INSTALL_HINT and "pip install 'mlcdseg[ray]'" in str(raised.value)


def test_the_stand_in_keeps_its_set_latency_in_its_config(tmp_path) -> None:
    from mlcdseg.cli import main

    assert main(["stand-in-model", str(tmp_path / "model"), "--latency-ms", "7.5"]) == 0

    assert json.loads((tmp_path / "model" / "config.json").read_text())["latency_ms"] == 7.5
    assert main(["stand-in-model", str(tmp_path / "other"), "--latency-ms", "-1"]) == 2
