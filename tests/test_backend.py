"""The backend's endpoints and predictions, with the captured Label Studio 1.23.2 requests."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image

from mlcdseg.masks.codecs import decode_brush_rle, polygons_to_mask
from mlcdseg.model.loading import STAND_IN_VERSION_PREFIX
from mlcdseg.model.stand_in import colour_rule_mask
from tests.backend_doubles import (
    EXPRESSIONS_CONFIG,
    INTERACTIVE_CONFIG,
    POLYGONS_CONFIG,
    RED_BLUE_CONFIG,
    SHAPES_URL,
    DictImages,
    ScriptedSegmenter,
    load_fixture,
    make_app,
    predict_body,
    shapes_image,
    task,
    textarea_context,
)

FIXTURE_IMAGE_URL = "/data/local-files/?d=dataset1/img1.png"


def fixture_image() -> Image.Image:
    """800×600, as the captured task's image: a red disc on dark grey."""
    yy, xx = np.mgrid[0:600, 0:800]
    pixels = np.full((600, 800, 3), 40, dtype=np.uint8)
    pixels[(yy - 250) ** 2 + (xx - 420) ** 2 <= 120**2] = (255, 0, 0)
    return Image.fromarray(pixels, mode="RGB")


def brush_mask(region: dict) -> np.ndarray:
    return decode_brush_rle(
        region["value"]["rle"], region["original_height"], region["original_width"]
    )


def test_health_says_up_and_names_the_model(stand_in_segmenter) -> None:
    response = make_app(stand_in_segmenter).test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "UP",
        "model_class": "MLCDSeg",
        "model_version": stand_in_segmenter.model_version,
        "is_stand_in": True,
    }
    assert stand_in_segmenter.model_version.startswith(STAND_IN_VERSION_PREFIX)


def test_setup_with_the_captured_request_returns_the_model_version(fixtures_dir: Path) -> None:
    client = make_app(ScriptedSegmenter()).test_client()
    started = time.perf_counter()
    response = client.post("/setup", json=load_fixture(fixtures_dir, "request_setup.json"))
    assert response.status_code == 200
    assert response.get_json() == {"model_version": "scripted@1"}
    assert time.perf_counter() - started < 1.0


def test_setup_refuses_a_project_config_without_a_mask_control() -> None:
    schema = '<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>'
    response = (
        make_app(ScriptedSegmenter())
        .test_client()
        .post("/setup", json={"project": "1.1", "schema": schema})
    )
    assert response.status_code == 400
    assert "BrushLabels" in response.get_json()["error"]


def test_captured_training_webhook_is_acknowledged_at_once(fixtures_dir: Path) -> None:
    client = make_app(ScriptedSegmenter()).test_client()
    started = time.perf_counter()
    response = client.post(
        "/webhook", json=load_fixture(fixtures_dir, "request_webhook_start_training.json")
    )
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 201
    assert response.get_json()["status"] == "ok"


def test_webhook_for_an_event_we_do_not_handle_is_200() -> None:
    response = (
        make_app(ScriptedSegmenter())
        .test_client()
        .post("/webhook", json={"action": "PROJECT_UPDATED"})
    )
    assert (response.status_code, response.get_json()) == (200, {"status": "Unknown event"})


def test_versions_lists_the_served_model_version() -> None:
    response = make_app(ScriptedSegmenter()).test_client().get("/versions")
    assert response.get_json() == {"versions": ["scripted@1"]}


def test_captured_interactive_request_gives_the_stand_in_colour_mask(
    fixtures_dir: Path, stand_in_segmenter
) -> None:
    body = load_fixture(fixtures_dir, "request_predict_interactive.json")
    image = fixture_image()
    client = make_app(stand_in_segmenter, DictImages({FIXTURE_IMAGE_URL: image})).test_client()
    response = client.post("/predict", json=body)
    assert response.status_code == 200
    (item,) = response.get_json()["results"]
    assert set(item) == {"result", "model_version"}  # no invented score
    assert item["model_version"] == stand_in_segmenter.model_version
    (region,) = item["result"]
    assert (region["from_name"], region["to_name"], region["type"]) == (
        "mask",
        "image",
        "brushlabels",
    )
    assert (region["original_width"], region["original_height"], region["image_rotation"]) == (
        800,
        600,
        0,
    )
    assert region["value"]["brushlabels"] == ["red"]
    assert np.array_equal(brush_mask(region), colour_rule_mask(np.asarray(image), "red"))
    assert LabelInterface(body["label_config"]).validate_prediction(item)


def test_batch_gives_one_item_per_task_in_order(stand_in_segmenter) -> None:
    image = shapes_image()
    tasks = [task(7, "the blue square"), task(3, "a green thing"), task(9, "red rectangle")]
    response = make_app(stand_in_segmenter).test_client().post("/predict", json=predict_body(tasks))
    blue, green, red = response.get_json()["results"]
    assert green == {"result": [], "model_version": stand_in_segmenter.model_version}  # no target
    assert np.array_equal(
        brush_mask(blue["result"][0]), colour_rule_mask(np.asarray(image), "blue")
    )
    assert np.array_equal(brush_mask(red["result"][0]), colour_rule_mask(np.asarray(image), "red"))
    assert blue["result"][0]["value"]["brushlabels"] == ["object"]


def test_polygon_config_gives_closed_polygonlabels(stand_in_segmenter) -> None:
    body = predict_body([task(1, "blue square")], label_config=POLYGONS_CONFIG)
    response = make_app(stand_in_segmenter).test_client().post("/predict", json=body)
    (item,) = response.get_json()["results"]
    (region,) = item["result"]
    assert (region["from_name"], region["type"]) == ("outline", "polygonlabels")
    assert region["value"]["closed"] is True and region["value"]["polygonlabels"] == ["object"]
    expected = colour_rule_mask(np.asarray(shapes_image()), "blue")
    drawn = polygons_to_mask([[tuple(point) for point in region["value"]["points"]]], 60, 80)
    assert np.count_nonzero(drawn & expected) / np.count_nonzero(drawn | expected) > 0.9
    assert LabelInterface(POLYGONS_CONFIG).validate_prediction(item)


@pytest.mark.parametrize(
    ("expression", "label"),
    [
        ("the BLUE square", "blue"),
        ("red one", "red"),
        ("the square on the right", "red"),
        ("bluest sky", "red"),
    ],
)
def test_label_is_the_one_the_expression_names_else_the_first(expression: str, label: str) -> None:
    response = (
        make_app(ScriptedSegmenter())
        .test_client()
        .post("/predict", json=predict_body([task(1, expression)], label_config=RED_BLUE_CONFIG))
    )
    assert response.get_json()["results"][0]["result"][0]["value"]["brushlabels"] == [label]


def test_annotator_text_wins_over_the_task_field() -> None:
    segmenter = ScriptedSegmenter()
    body = predict_body(
        [task(1, "from the task")], INTERACTIVE_CONFIG, textarea_context("typed by the annotator")
    )
    assert make_app(segmenter).test_client().post("/predict", json=body).status_code == 200
    assert segmenter.calls == ["typed by the annotator"]


def test_task_field_is_used_when_the_context_has_no_text() -> None:
    segmenter = ScriptedSegmenter()
    body = predict_body([task(1, "from the task")], INTERACTIVE_CONFIG, textarea_context("   "))
    make_app(segmenter).test_client().post("/predict", json=body)
    assert segmenter.calls == ["from the task"]


def test_config_without_text_tag_reads_the_expression_field() -> None:
    segmenter = ScriptedSegmenter()
    make_app(segmenter).test_client().post(
        "/predict", json=predict_body([task(1, "the dog")], INTERACTIVE_CONFIG)
    )
    assert segmenter.calls == ["the dog"]


def test_text_tag_names_the_expression_field() -> None:
    config = EXPRESSIONS_CONFIG.replace("$expression", "$sentence")
    segmenter = ScriptedSegmenter()
    body = predict_body(
        [{"id": 1, "data": {"image": SHAPES_URL, "sentence": "left cat", "expression": "no"}}],
        config,
    )
    make_app(segmenter).test_client().post("/predict", json=body)
    assert segmenter.calls == ["left cat"]


@pytest.mark.parametrize("expression", [None, "", "   "])
def test_task_without_expression_gets_no_prediction_without_fetching_or_the_model(
    expression,
) -> None:
    segmenter, images = ScriptedSegmenter(), DictImages()
    response = (
        make_app(segmenter, images)
        .test_client()
        .post("/predict", json=predict_body([task(1, expression)]))
    )
    # No expression is a failure (reason no-expression), not the model answering "no target".
    assert response.get_json() == {"results": [[]]}
    assert segmenter.calls == [] and images.fetched == []


def test_model_answering_no_target_gives_an_empty_result() -> None:
    segmenter = ScriptedSegmenter(mask_for=lambda image, expression: None)
    response = (
        make_app(segmenter).test_client().post("/predict", json=predict_body([task(1, "unicorn")]))
    )
    assert response.get_json()["results"] == [{"result": [], "model_version": "scripted@1"}]


def test_batch_with_bad_tasks_serves_the_others(caplog: pytest.LogCaptureFixture) -> None:
    tasks = [
        task(1, "red"),
        task(2, "red", image="/data/upload/1/missing.png"),
        task(3, "red", image=None),
        {"id": 4, "data": "not an object"},
        task(5, "red"),
    ]
    app = make_app(ScriptedSegmenter())
    with caplog.at_level(logging.WARNING, logger="backend.predictions"):
        response = app.test_client().post("/predict", json=predict_body(tasks))
    assert response.status_code == 200
    answers = response.get_json()["results"]
    # Tasks 2 and 3 failed: an empty list, so Label Studio stores no prediction for them (a stored
    # empty prediction would read as the model answering "no target"); so does task 4, which has
    # no expression.
    assert answers[1] == [] and answers[2] == [] and answers[3] == []
    assert [len(answers[index]["result"]) for index in (0, 4)] == [1, 1]
    assert "task 2 gets no prediction: image /data/upload/1/missing.png: HTTP 404" in caplog.text
    assert "task 3 gets no prediction" in caplog.text and "data['image']" in caplog.text
    metrics = app.test_client().get("/metrics").get_json()
    assert metrics["failed_tasks_by_reason"] == {"image-unreachable": 1, "no-image": 1, "no-expression": 1}


def test_expressions_sharing_an_image_fetch_it_once_and_go_to_the_model_together() -> None:
    images, segmenter = DictImages(), ScriptedSegmenter()
    tasks = [task(1, "red"), task(2, "blue")]
    make_app(segmenter, images).test_client().post("/predict", json=predict_body(tasks))
    assert images.fetched == [SHAPES_URL]
    assert segmenter.calls == ["red", "blue"]


def test_metrics_count_requests_predictions_errors_and_model_latency() -> None:
    client = make_app(ScriptedSegmenter()).test_client()
    client.post("/predict", json=predict_body([task(1, "red"), task(2, "blue"), task(3, None)]))
    client.post("/predict", data=b"{broken")
    metrics = client.get("/metrics").get_json()
    assert metrics["requests"]["/predict"] == 2
    assert metrics["predictions"] == 3
    assert metrics["model_calls"] == 2
    assert metrics["errors"] == 1 and metrics["responses"] == {"2xx": 1, "4xx": 1}
    assert metrics["model_latency_ms"]["mean"] >= 0 and metrics["model_latency_ms"]["p50"] >= 0
    assert metrics["image_cache"]["misses"] == 1  # one image for both expressions
