"""Bad input gets a 4xx JSON answer naming the problem, never a 500; the server keeps serving.

Also: basic auth, GPU out of memory (503), unexpected errors (500), and SSRF refusals through the
real ImageFetcher.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from backend.app import create_app
from backend.settings import Settings
from mlcdseg.errors import GpuOutOfMemoryError
from tests.backend_doubles import (
    EXPRESSIONS_CONFIG,
    INTERACTIVE_CONFIG,
    ScriptedSegmenter,
    make_app,
    predict_body,
    task,
    textarea_context,
)

GOOD_BODY = predict_body([task(1, "red")])
NO_MASK_CONFIG = (
    '<View><Image name="image" value="$image"/><Text name="e" value="$expression"/></View>'
)
NO_IMAGE_CONFIG = '<View><Text name="e" value="$expression"/><Labels name="l" toName="e"><Label value="a"/></Labels></View>'


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


BAD_REQUESTS = [
    ("/predict", b"{not json", 400, "not valid JSON"),
    ("/predict", b"", 400, "body is empty"),
    ("/predict", raw([GOOD_BODY]), 400, "JSON list; expected an object"),
    ("/predict", b"[" * 100_000, 400, "not valid JSON"),
    ("/predict", raw({**GOOD_BODY, "tasks": []}), 400, '"tasks" must be a non-empty list'),
    (
        "/predict",
        raw({"label_config": EXPRESSIONS_CONFIG}),
        400,
        '"tasks" must be a non-empty list',
    ),
    ("/predict", raw({**GOOD_BODY, "tasks": "t"}), 400, '"tasks" must be a non-empty list'),
    ("/predict", raw({**GOOD_BODY, "tasks": [1]}), 400, '"tasks"[0] is a int'),
    ("/predict", raw({**GOOD_BODY, "label_config": None}), 400, '"label_config"'),
    ("/predict", raw({**GOOD_BODY, "label_config": "<View><Image"}), 400, "not valid XML"),
    (
        "/predict",
        raw({**GOOD_BODY, "label_config": NO_MASK_CONFIG}),
        400,
        "no <BrushLabels> or <PolygonLabels>",
    ),
    ("/predict", raw({**GOOD_BODY, "label_config": NO_IMAGE_CONFIG}), 400, "no <Image> tag"),
    ("/predict", raw({**GOOD_BODY, "params": "x"}), 400, '"params" must be an object'),
    (
        "/predict",
        raw({**GOOD_BODY, "params": {"context": []}}),
        400,
        '"params.context" must be an object',
    ),
    (
        "/predict",
        raw({**GOOD_BODY, "params": {"context": {"result": "x"}}}),
        400,
        "must be a list of region",
    ),
    (
        "/predict",
        raw(
            predict_body([task(1, "a"), task(2, "b")], INTERACTIVE_CONFIG, textarea_context("red"))
        ),
        400,
        "takes one task, not 2",
    ),
    (
        "/predict",
        raw(
            predict_body(
                [task(1)], INTERACTIVE_CONFIG, textarea_context("red", from_name="question")
            )
        ),
        400,
        "controls the labeling config lacks: question",
    ),
    (
        "/predict",
        raw(predict_body([task(1, image=None)], INTERACTIVE_CONFIG, textarea_context("red"))),
        400,
        "task 1: no image URL in data['image']",
    ),
    (
        "/predict",
        raw(
            predict_body(
                [task(1, image="/data/upload/9/gone.png")],
                INTERACTIVE_CONFIG,
                textarea_context("red"),
            )
        ),
        422,
        "image /data/upload/9/gone.png: HTTP 404",
    ),
    ("/setup", b"nope", 400, "not valid JSON"),
    ("/setup", raw({"schema": "<View>"}), 400, "not valid XML"),
    ("/webhook", b"{", 400, "not valid JSON"),
    ("/webhook", raw({"project": {}}), 400, 'no "action"'),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_request_is_a_4xx_json_error_and_the_next_request_works(
    path: str, body: bytes, status: int, message: str
) -> None:
    client = make_app(ScriptedSegmenter()).test_client()
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == status
    assert message in response.get_json()["error"]
    assert client.post("/predict", json=GOOD_BODY).status_code == 200


def test_body_over_the_limit_is_413() -> None:
    client = make_app(ScriptedSegmenter(), max_request_bytes=1000).test_client()
    response = client.post("/predict", json=predict_body([task(i, "red") for i in range(50)]))
    assert response.status_code == 413
    assert "MLCDSEG_MAX_REQUEST_BYTES=1000" in response.get_json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("get", "/predict", 405), ("post", "/health", 405), ("get", "/nope", 404)],
)
def test_wrong_method_or_path_is_json(method: str, path: str, status: int) -> None:
    response = getattr(make_app(ScriptedSegmenter()).test_client(), method)(path)
    assert response.status_code == status
    assert response.get_json()["error"]


def test_unexpected_model_error_is_a_500_json_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_app(ScriptedSegmenter(errors=[RuntimeError("boom")])).test_client()
    response = client.post("/predict", json=GOOD_BODY)
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error (RuntimeError); see the backend log"}
    assert "boom" in caplog.text
    assert client.post("/predict", json=GOOD_BODY).status_code == 200


def test_gpu_out_of_memory_is_a_503_for_that_request_only() -> None:
    client = make_app(
        ScriptedSegmenter(errors=[GpuOutOfMemoryError("CUDA out of memory")])
    ).test_client()
    response = client.post("/predict", json=GOOD_BODY)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "ran out of memory" in response.get_json()["error"]
    retry = client.post("/predict", json=GOOD_BODY)
    assert retry.status_code == 200 and len(retry.get_json()["results"][0]["result"]) == 1


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture()
def guarded_client():
    return make_app(
        ScriptedSegmenter(), basic_auth_user="ls", basic_auth_pass="s3cret-ü"
    ).test_client()


@pytest.mark.parametrize(
    "headers", [{}, basic("ls", "wrong"), basic("other", "s3cret-ü"), {"Authorization": "Bearer x"}]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/predict"),
        ("post", "/setup"),
        ("post", "/webhook"),
        ("get", "/versions"),
        ("get", "/metrics"),
    ],
)
def test_basic_auth_guards_every_endpoint_but_health(
    guarded_client, headers: dict, method: str, path: str
) -> None:
    response = getattr(guarded_client, method)(path, json=GOOD_BODY, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "BASIC_AUTH_USER" in response.get_json()["error"]


def test_basic_auth_lets_the_right_credentials_and_health_through(guarded_client) -> None:
    assert guarded_client.get("/health").status_code == 200
    assert (
        guarded_client.post("/predict", json=GOOD_BODY, headers=basic("ls", "s3cret-ü")).status_code
        == 200
    )
    assert guarded_client.get("/versions", headers=basic("ls", "s3cret-ü")).status_code == 200


@pytest.mark.parametrize(
    ("image_url", "message"),
    [
        ("file:///etc/passwd", "file:// scheme is refused"),
        ("http://169.254.169.254/latest/meta-data/", "link-local or cloud metadata address"),
        ("http://internal.example/img.png", "neither Label Studio nor in MLCDSEG_ALLOWED_HOSTS"),
        ("s3://bucket/a.png", "Use pre-signed URLs"),
    ],
)
def test_refused_image_urls_are_422_interactively_and_empty_in_a_batch(
    image_url: str, message: str
) -> None:
    settings = Settings(label_studio_url="http://127.0.0.1:9", allowed_hosts=("169.254.169.254",))
    client = create_app(settings, ScriptedSegmenter()).test_client()  # the real ImageFetcher
    interactive = predict_body(
        [task(1, image=image_url)], INTERACTIVE_CONFIG, textarea_context("red")
    )
    response = client.post("/predict", json=interactive)
    assert response.status_code == 422
    assert message in response.get_json()["error"] and image_url in response.get_json()["error"]
    batch = client.post(
        "/predict", json=predict_body([task(1, "red", image=image_url), task(2, None)])
    )
    assert batch.status_code == 200
    # neither the refused image nor the task without expression gets a prediction
    assert batch.get_json()["results"] == [[], []]
