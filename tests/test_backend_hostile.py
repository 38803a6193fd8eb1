"""Hostile requests never get a 5xx nor stop the server (property tests with hypothesis).

Whatever the body of /predict, /setup or /webhook: the status is below 500, a 4xx answer is a JSON
object with a non-empty "error" string, a 200 /predict has one item per task, and the next valid
request still gets the right mask. One app serves every example of a test, as a real worker would.

Images come from the real ImageFetcher over an offline session that plays Label Studio, so URL
parsing and the SSRF checks see the generated URLs too.
"""

from __future__ import annotations

import copy
import io
import ipaddress
import itertools
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, quote
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from urllib3.util import parse_url

from backend.app import create_app
from backend.settings import Settings
from mlcdseg.labelstudio.image_fetch import ImageFetcher
from mlcdseg.masks.codecs import decode_brush_rle
from tests.backend_doubles import (
    EXPRESSIONS_CONFIG,
    INTERACTIVE_CONFIG,
    POLYGONS_CONFIG,
    SHAPES_URL,
    ScriptedSegmenter,
    make_app,
    predict_body,
    shapes_image,
    task,
    textarea_context,
)

LABEL_STUDIO_URL = "http://ls.test:8080"
LABEL_STUDIO_ORIGIN = ("ls.test", 8080)
API_KEY = "0123456789abcdef0123456789abcdef01234567"
ALLOWED_HOST = "images.example"
PRIVATE_ADDRESS = "10.1.2.3"  # what every host name resolves to: private, so allowed
POST_ENDPOINTS = ("/predict", "/setup", "/webhook")

EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- an offline Label Studio and the app ---------------------------------------------------------


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    shapes_image().save(buffer, format="PNG")
    return buffer.getvalue()


def red_mask(image: Any, expression: str) -> np.ndarray:
    """The red rectangle of shapes_image(), whatever the expression."""
    pixels = np.asarray(image)
    return (pixels[..., 0] > 200) & (pixels[..., 1] < 50) & (pixels[..., 2] < 50)


EXPECTED_MASK = red_mask(shapes_image(), "red")


def fake_response(url: str, status: int, body: bytes, headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = {200: "OK", 302: "Found", 404: "Not Found"}[status]
    response.headers = CaseInsensitiveDict(headers)
    response.raw = io.BytesIO(body)
    response.url = url
    return response


class OfflineLabelStudio(requests.Session):
    """A session that never touches the network: Label Studio at LABEL_STUDIO_URL serves
    SHAPES_URL and /redirect?to=LOCATION (a 302); every other URL is a 404. Records every request
    as (host, port, path, headers), host and port as urllib3 would have connected."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, int, str, dict[str, str]]] = []

    def get(self, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        headers = kwargs.get("headers") or {}
        prepared = requests.Request("GET", url, headers=headers).prepare()  # as a real session does
        parts = parse_url(prepared.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.sent.append(((parts.host or "").strip("[]"), port, parts.path or "", dict(headers)))
        if ((parts.host or ""), port) == LABEL_STUDIO_ORIGIN:
            if parts.path == SHAPES_URL:
                return fake_response(prepared.url, 200, png_bytes(), {"Content-Type": "image/png"})
            if parts.path == "/redirect":
                location = parse_qs(parts.query or "").get("to", [""])[0]
                return fake_response(prepared.url, 302, b"", {"Location": location})
        return fake_response(prepared.url, 404, b"not here", {"Content-Type": "text/plain"})


def resolve(host: str, port: int) -> list[str]:
    """An IP literal resolves to itself; any name to a private address."""
    try:
        return [str(ipaddress.ip_address(host.split("%", 1)[0]))]
    except ValueError:
        return [PRIVATE_ADDRESS]


def hostile_app() -> tuple[Flask, OfflineLabelStudio, ScriptedSegmenter]:
    """The backend with the real ImageFetcher over OfflineLabelStudio (no image cache)."""
    session = OfflineLabelStudio()
    fetcher = ImageFetcher(
        LABEL_STUDIO_URL,
        API_KEY,
        allowed_hosts=(ALLOWED_HOST,),
        timeout=5.0,
        cache_size=0,
        session=session,
        resolver=resolve,
    )
    segmenter = ScriptedSegmenter(mask_for=red_mask)
    app = create_app(
        Settings(
            label_studio_url=LABEL_STUDIO_URL,
            label_studio_api_key=API_KEY,
            allowed_hosts=(ALLOWED_HOST,),
            max_request_bytes=4 * 1024 * 1024,
        ),
        segmenter,
        fetcher,
    )
    app.testing = True
    return app, session, segmenter


APP, SESSION, SEGMENTER = hostile_app()


@pytest.fixture()
def client() -> FlaskClient:
    return APP.test_client()


# --- what every answer must be -------------------------------------------------------------------


def assert_handled(
    response: Any, path: str, body: Any = None, model_version: str = SEGMENTER.model_version
) -> None:
    """Below 500; 4xx is {"error": "..."}; a 200 /predict has one well-formed item per task."""
    assert response.status_code < 500, (response.status_code, response.get_data()[:500])
    answer = response.get_json(silent=True)
    assert isinstance(answer, dict), response.get_data()[:500]
    if response.status_code >= 400:
        assert isinstance(answer.get("error"), str) and answer["error"].strip(), answer
        return
    if path == "/predict":
        results = answer["results"]
        assert isinstance(body, dict) and len(results) == len(body["tasks"])
        for item in results:
            if item == []:  # a task that could not be served: no prediction
                continue
            assert isinstance(item["result"], list)
            assert item["model_version"] == model_version


#: Task ids of the serving checks: a task answered moments ago goes to the job instead (settling).
FRESH_TASK_IDS = itertools.count(1_000_000)


def assert_still_serving(client: FlaskClient) -> None:
    """A valid batch request (for a task not asked before) gets the red rectangle as one brush region."""
    response = client.post("/predict", json=predict_body([task(next(FRESH_TASK_IDS), "the red one")]))
    assert response.status_code == 200, response.get_data()[:500]
    (item,) = response.get_json()["results"]
    (region,) = item["result"]
    mask = decode_brush_rle(
        region["value"]["rle"], region["original_height"], region["original_width"]
    )
    assert np.array_equal(mask, EXPECTED_MASK)


def post(client: FlaskClient, path: str, body: Any) -> Any:
    """POST a JSON value (NaN and Infinity included, as Python's json writes them)."""
    return client.post(path, data=json.dumps(body), content_type="application/json")


# --- strategies ----------------------------------------------------------------------------------

ANY_CHARACTER = st.characters(codec=None, exclude_categories=())  # lone surrogates, NUL included
KEYS = st.sampled_from(
    [
        "tasks", "data", "image", "expression", "label_config", "params", "context", "result",
        "value", "text", "from_name", "to_name", "type", "id", "schema", "action", "project",
    ]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.text(ANY_CHARACTER, max_size=8)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(KEYS | st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
URL_PARTS = st.sampled_from(
    [
        "http://", "https://", "HTTP://", "file://", "s3://", "ftp://", "//", "/", "\\", "@", ":",
        "[", "]", "::1", "%", "%25", "?", "#", "\t", "\n", " ", "\x00", "..", "ls.test",
        "ls.test:8080", ":8080", ":99999", ":-1", ":abc", ALLOWED_HOST, "evil.example",
        "169.254.169.254", "[fe80::1%25eth0]", "[::ffff:169.254.169.254]", "127.0.0.1",
        "/data/upload/", "/data/local-files/?d=", SHAPES_URL, "/redirect?to=", "\u0430", "é",
    ]
)  # fmt: skip
URLS = st.lists(URL_PARTS | st.text(max_size=6), min_size=1, max_size=7).map("".join)
HOSTILE_VALUES = (
    JSON_VALUES | URLS | st.sampled_from(["", " ", "\x00", "\ud800", "null", "<View/>", "[]", "{}"])
)
HUGE_VALUES = ["x" * 300_000, ["red"] * 20_000, {str(key): key for key in range(20_000)}]

TAG_NAMES = [
    "View", "Image", "BrushLabels", "PolygonLabels", "Text", "TextArea", "Label", "Choices",
    "Header", "KeyPointLabels", "Brush", "image", "",
]  # fmt: skip
ATTRIBUTE_VALUES = st.sampled_from(
    [
        "image", "$image", "$expression", "expression", "$", "mask", "prompt", "nowhere", "",
        "image,nowhere", "$" + "x" * 40, "red", "$image.url",
    ]
) | st.text(max_size=6)  # fmt: skip


@st.composite
def xml_elements(draw: st.DrawFn, depth: int = 0) -> str:
    """A random element of Label Studio-ish tags and attributes, well-formed or not."""
    tag = draw(st.sampled_from(TAG_NAMES))
    attributes = draw(
        st.dictionaries(
            st.sampled_from(["name", "toName", "value", "background"]), ATTRIBUTE_VALUES, max_size=3
        )
    )
    opening = tag + "".join(f" {key}={quoteattr(value)}" for key, value in attributes.items())
    children = draw(st.lists(xml_elements(depth + 1), max_size=3)) if depth < 3 else []
    if not children and draw(st.booleans()):
        return f"<{opening}/>"
    return f"<{opening}>{''.join(children)}</{tag}>"


def _truncated(config: str) -> st.SearchStrategy[str]:
    return st.integers(0, len(config)).map(lambda end: config[:end])


LABEL_CONFIGS = (
    xml_elements()
    | st.builds(lambda body: f"<View>{body}</View>", xml_elements())
    | _truncated(EXPRESSIONS_CONFIG)
    | st.builds(
        lambda config, at, junk: config[:at] + junk + config[at:],
        st.sampled_from([EXPRESSIONS_CONFIG, INTERACTIVE_CONFIG, POLYGONS_CONFIG]),
        st.integers(0, 200),
        st.text(ANY_CHARACTER, min_size=1, max_size=5),
    )
    | st.text(max_size=40)
    | st.sampled_from(
        [
            '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;'
            '&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><View><Image name="image" '
            'value="$image"/><BrushLabels name="m" toName="image"><Label value="&c;"/>'
            "</BrushLabels></View>",
            '<!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]><View><Image name="image" '
            'value="$image"/><BrushLabels name="m" toName="image"><Label value="&x;"/>'
            "</BrushLabels></View>",
            "<View>" * 3000 + "</View>" * 3000,
            '<View><Image name="image" value="$image"/><BrushLabels name="m" toName="nowhere">'
            '<Label value="a"/></BrushLabels></View>',
            '<View><Image name="image" value="$image"/><BrushLabels name="m" toName="image">'
            + '<Label value="a"/>' * 20_000
            + "</BrushLabels></View>",
        ]
    )
)

BATCH_PATHS: list[tuple[Any, ...]] = [
    ("tasks",),
    ("tasks", 0),
    ("tasks", 1),
    ("tasks", 0, "id"),
    ("tasks", 0, "data"),
    ("tasks", 0, "data", "image"),
    ("tasks", 0, "data", "expression"),
    ("label_config",),
    ("params",),
    ("params", "context"),
    ("project",),
]
INTERACTIVE_PATHS: list[tuple[Any, ...]] = [
    ("tasks", 0, "data", "image"),
    ("tasks", 0, "id"),
    ("params", "context", "result"),
    ("params", "context", "result", 0),
    ("params", "context", "result", 1),
    ("params", "context", "result", 0, "value"),
    ("params", "context", "result", 0, "value", "text"),
    ("params", "context", "result", 0, "value", "text", 0),
    ("params", "context", "result", 0, "from_name"),
    ("params", "context", "result", 0, "to_name"),
    ("params", "context", "result", 0, "type"),
]


def batch_body() -> dict[str, Any]:
    return predict_body([task(1, "the red one"), task(2, "blue")])


def interactive_body() -> dict[str, Any]:
    return predict_body([task(1, image=SHAPES_URL)], INTERACTIVE_CONFIG, textarea_context("red"))


def with_value(body: dict[str, Any], path: Sequence[Any], value: Any) -> dict[str, Any]:
    """A copy of `body` with `value` at `path`; an index one past a list's end appends."""
    changed = copy.deepcopy(body)
    container: Any = changed
    for key in path[:-1]:
        container = container[key]
    last = path[-1]
    if isinstance(container, list) and last == len(container):
        container.append(value)
    else:
        container[last] = value
    return changed


# --- the properties ------------------------------------------------------------------------------


@EXAMPLES
@given(path=st.sampled_from(POST_ENDPOINTS), body=JSON_VALUES)
def test_any_json_value_as_the_body_is_answered_below_500(path: str, body: Any) -> None:
    client = APP.test_client()
    assert_handled(post(client, path, body), path)
    assert_still_serving(client)


@EXAMPLES
@given(
    path=st.sampled_from(POST_ENDPOINTS),
    data=st.binary(max_size=200)
    | st.builds(
        lambda body, codec: json.dumps(body, ensure_ascii=False).encode(codec, "replace"),
        st.sampled_from([batch_body(), interactive_body(), {"action": "START_TRAINING"}]),
        st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"]),
    )
    | st.sampled_from([b"", b" \n\t", b"\xff\xfe\xfd", b"{" * 50_000, b"[" * 999 + b"]" * 999]),
    content_type=st.sampled_from(
        [
            None,
            "application/json",
            "application/json; charset=latin-1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "image/png",
            "\x00garbage/;;;",
        ]
    ),
)
def test_any_bytes_with_any_content_type_are_answered_below_500(
    path: str, data: bytes, content_type: str | None
) -> None:
    client = APP.test_client()
    response = client.post(path, data=data, content_type=content_type)
    assert_handled(response, path, json.loads(data) if response.status_code == 200 else None)
    assert_still_serving(client)


@EXAMPLES
@given(
    base_and_path=st.one_of(
        st.tuples(st.just("batch"), st.sampled_from(BATCH_PATHS)),
        st.tuples(st.just("interactive"), st.sampled_from(INTERACTIVE_PATHS)),
    ),
    value=HOSTILE_VALUES,
)
def test_a_hostile_value_anywhere_in_a_predict_body_is_answered_below_500(
    base_and_path: tuple[str, tuple[Any, ...]], value: Any
) -> None:
    base, path = base_and_path
    body = with_value(batch_body() if base == "batch" else interactive_body(), path, value)
    client = APP.test_client()
    assert_handled(post(client, "/predict", body), "/predict", body)
    assert_still_serving(client)


@pytest.mark.parametrize("value", HUGE_VALUES, ids=["string", "list", "object"])
@pytest.mark.parametrize(
    ("base", "path"),
    [
        pytest.param(base, path, id=f"{base}:{'.'.join(map(str, path))}")
        for base, paths in (("batch", BATCH_PATHS), ("interactive", INTERACTIVE_PATHS))
        for path in paths
    ],
)
def test_a_huge_value_anywhere_in_a_predict_body_is_answered_below_500(
    base: str, path: tuple[Any, ...], value: Any
) -> None:
    body = with_value(batch_body() if base == "batch" else interactive_body(), path, value)
    client = APP.test_client()
    assert_handled(post(client, "/predict", body), "/predict", body)


@EXAMPLES
@given(label_config=LABEL_CONFIGS, interactive=st.booleans())
def test_generated_label_configs_are_served_or_refused_with_400(
    label_config: str, interactive: bool
) -> None:
    base = interactive_body() if interactive else batch_body()
    body = {**base, "label_config": label_config}
    client = APP.test_client()
    response = post(client, "/predict", body)
    assert_handled(response, "/predict", body)
    assert response.status_code in (200, 400, 422)
    setup = post(client, "/setup", {"project": "1.1", "schema": label_config})
    assert_handled(setup, "/setup")
    assert setup.status_code in (200, 400)
    assert_still_serving(client)


@EXAMPLES
@given(url=URLS | st.text(ANY_CHARACTER, max_size=30), interactive=st.booleans())
def test_any_image_url_is_fetched_only_from_trusted_hosts_and_never_a_500(
    url: str, interactive: bool
) -> None:
    SESSION.sent.clear()
    if interactive:
        body = predict_body([task(1, image=url)], INTERACTIVE_CONFIG, textarea_context("red"))
    else:
        body = predict_body([task(1, "red", image=url), task(2, "red")])
    client = APP.test_client()
    response = post(client, "/predict", body)
    assert_handled(response, "/predict", body)
    assert response.status_code in ((200, 400, 422) if interactive else (200,))
    previous = None
    for host, port, path, headers in SESSION.sent:
        # Label Studio may redirect anywhere (pre-signed cloud URLs); nobody else may.
        redirected_by_label_studio = previous == (*LABEL_STUDIO_ORIGIN, "/redirect")
        assert host in (LABEL_STUDIO_ORIGIN[0], ALLOWED_HOST) or redirected_by_label_studio, (
            url,
            host,
        )
        if "Authorization" in headers:
            assert (host, port) == LABEL_STUDIO_ORIGIN, (url, host, port)
        previous = (host, port, path)
    assert_still_serving(client)


@EXAMPLES
@given(
    location=URLS | st.text(st.characters(codec="utf-8"), max_size=30)
)  # headers hold no surrogates
def test_any_redirect_location_from_label_studio_is_never_a_500(location: str) -> None:
    image_url = "/redirect?to=" + quote(location, safe="")
    body = predict_body([task(1, image=image_url)], INTERACTIVE_CONFIG, textarea_context("red"))
    client = APP.test_client()
    response = post(client, "/predict", body)
    assert_handled(response, "/predict", body)
    assert response.status_code in (200, 400, 422)
    assert_still_serving(client)


@EXAMPLES
@given(
    path=st.sampled_from(["/setup", "/webhook"]),
    field=st.sampled_from(["schema", "action", "project", "model_version"]),
    value=HOSTILE_VALUES,
)
def test_setup_and_webhook_fields_of_any_shape_are_answered_below_500(
    path: str, field: str, value: Any
) -> None:
    body = {"project": "1.1795754171", "schema": EXPRESSIONS_CONFIG, "action": "START_TRAINING"}
    client = APP.test_client()
    assert_handled(post(client, path, {**body, field: value}), path)
    assert_still_serving(client)


@settings(max_examples=100, deadline=None)
@given(
    expression=st.text(max_size=30)
    | st.text(ANY_CHARACTER, max_size=10)
    | st.sampled_from(
        [".", "...", " . ", "?", "the", "the .", "segment", "{expression}", "red" * 500]
    ),
    interactive=st.booleans(),
)
def test_any_expression_through_the_real_segmenter_is_answered_below_500(
    stand_in_segmenter: Any, expression: str, interactive: bool
) -> None:
    """The stand-in is loaded like MLCD-Seg: its Segmenter builds the real prompt."""
    client = make_app(stand_in_segmenter).test_client()
    if interactive:
        body = predict_body([task(1)], INTERACTIVE_CONFIG, textarea_context(expression))
    else:
        body = predict_body([task(1, expression), task(2, "red")])
    response = post(client, "/predict", body)
    assert_handled(response, "/predict", body, model_version=stand_in_segmenter.model_version)
    if not interactive:
        assert response.status_code == 200
        assert len(response.get_json()["results"][1]["result"]) == 1


# --- regressions found by the properties above ---------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (".", "is empty once blanks and trailing full stops are dropped"),
        ("...", "is empty once blanks and trailing full stops are dropped"),
        (" .. ", "is empty once blanks and trailing full stops are dropped"),
        ("the red \ud800", "is not valid Unicode text"),
    ],
)
def test_expression_the_model_cannot_take_is_an_empty_prediction_in_a_batch_and_400_interactively(
    stand_in_segmenter: Any, expression: str, message: str
) -> None:
    """Was a 500 for the whole batch: ValueError from the model's build_prompt for full stops,
    UnicodeEncodeError from the tokenizer for a lone surrogate (JSON "\\ud800")."""
    client = make_app(stand_in_segmenter).test_client()
    batch = post(client, "/predict", predict_body([task(1, expression), task(2, "red")]))
    assert batch.status_code == 200
    assert [len(item["result"]) for item in batch.get_json()["results"]] == [0, 1]
    interactive = post(
        client,
        "/predict",
        predict_body([task(1)], INTERACTIVE_CONFIG, textarea_context(expression)),
    )
    assert interactive.status_code == 400
    assert message in interactive.get_json()["error"]


@pytest.mark.parametrize(
    "region",
    [
        {"type": "textarea", "from_name": "prompt", "value": "red"},
        {"type": "textarea", "from_name": "prompt", "value": ["red"]},
        {"type": "textarea", "from_name": "prompt", "value": {"text": 5}},
        {"type": "textarea", "from_name": "prompt", "value": {"text": {"red": 1}}},
        {"type": "textarea", "from_name": "prompt", "value": {"text": [["red"], 7, None]}},
    ],
)
def test_textarea_value_of_the_wrong_shape_falls_back_to_the_task_field(
    client: FlaskClient, region: dict[str, Any]
) -> None:
    """Was a 500 (AttributeError / TypeError in regions.textarea_text)."""
    SEGMENTER.calls.clear()
    body = predict_body([task(1, "from the task")], INTERACTIVE_CONFIG, {"result": [region]})
    response = post(client, "/predict", body)
    assert response.status_code == 200
    assert SEGMENTER.calls == ["from the task"]


@pytest.mark.parametrize(
    "url",
    ["http://[::1", "http://ls.test:99999/a.png", "http://ls.test:abc/a.png", "http://ls.test:-1/"],
)
def test_malformed_image_url_is_422_interactively_and_empty_in_a_batch(
    client: FlaskClient, url: str
) -> None:
    """Was a 500 (ValueError from urlsplit), in a batch too: one bad task failed every task."""
    interactive = post(
        client,
        "/predict",
        predict_body([task(1, image=url)], INTERACTIVE_CONFIG, textarea_context("red")),
    )
    assert interactive.status_code == 422
    assert "not a valid URL" in interactive.get_json()["error"]
    batch = post(client, "/predict", predict_body([task(1, "red", image=url), task(next(FRESH_TASK_IDS), "red")]))
    assert batch.status_code == 200
    unusable, served = batch.get_json()["results"]
    assert unusable == [] and len(served["result"]) == 1


@pytest.mark.parametrize(
    ("url", "refused_host"),
    [
        ("http://169.254.169.254\\@ls.test:8080/data/upload/1/shapes.png", "169.254.169.254"),
        ("http://evil.example\\@ls.test:8080/data/upload/1/shapes.png", "evil.example"),
        ("http://evil.example\\@images.example/a.png", "evil.example"),
    ],
)
def test_a_url_whose_host_parsers_disagree_on_is_refused_before_any_request(
    client: FlaskClient, url: str, refused_host: str
) -> None:
    """urlsplit reads the host after the '@', urllib3 (which connects) the one before the '\\':
    the checks passed on ls.test and requests then went to the other host, with the Label Studio
    API key in the Authorization header."""
    SESSION.sent.clear()
    body = predict_body([task(1, image=url)], INTERACTIVE_CONFIG, textarea_context("red"))
    response = post(client, "/predict", body)
    assert response.status_code == 422
    assert f"host {refused_host!r} is neither Label Studio" in response.get_json()["error"]
    assert SESSION.sent == []


def test_a_redirect_to_a_malformed_location_is_422() -> None:
    client = APP.test_client()
    body = predict_body(
        [task(1, image="/redirect?to=" + quote("http://[::1", safe=""))],
        INTERACTIVE_CONFIG,
        textarea_context("red"),
    )
    response = post(client, "/predict", body)
    assert response.status_code == 422
    assert "redirects to a malformed URL 'http://[::1'" in response.get_json()["error"]


def test_the_server_serves_a_valid_request_after_hostile_ones() -> None:
    """Self-contained: a fresh backend takes a volley of hostile requests first (so the check
    does not depend on other tests having run), then serves a valid one."""
    app, _, _ = hostile_app()
    client = app.test_client()
    for body in [*HUGE_VALUES, None, [], "x", {"tasks": "x"}, {"tasks": [None]}]:
        for path in POST_ENDPOINTS:
            assert post(client, path, body).status_code < 500
    client.post("/predict", data=b"\xff\xfe{", content_type="application/json")
    assert_still_serving(client)
    assert client.get("/health").get_json()["status"] == "UP"
    assert client.get("/metrics").get_json()["responses"].get("5xx", 0) == 0
