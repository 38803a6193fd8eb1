"""The Label Studio ML backend's HTTP side: `create_app(settings, segmenter)` returns a Flask app.

Endpoints (Label Studio 1.23 / label-studio-ml 2.x conventions): GET /health, POST /setup,
POST /predict, POST /webhook, GET /versions, GET /metrics; and GET /jobs, the background
prediction job's progress. Every error answer is JSON
{"error": "..."}: bad input 4xx, GPU out of memory 503, anything unexpected 500 (logged).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import threading
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.prediction_job import PredictionJob
from backend.predictions import (
    ImageProvider,
    Predictor,
    PredictRequest,
    MaskModel,
    labeling_setup,
)
from backend.service_metrics import ServiceMetrics
from backend.settings import Settings
from backend.task_claims import TaskClaims, shared_claims_file
from mlcdseg.errors import (
    GpuOutOfMemoryError,
    ImageFetchError,
    InvalidRequestError,
    LabelConfigError,
    ServerBusyError,
    TaskDataError,
)
from mlcdseg.labelstudio.client import LabelStudioClient
from mlcdseg.labelstudio.image_fetch import ImageFetcher

logger = logging.getLogger(__name__)

MODEL_CLASS = "MLCDSeg"
#: Webhook events label-studio-ml treats as training triggers; we acknowledge them, we do not train.
TRAIN_EVENTS = frozenset(
    {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING"}
)
UNAUTHENTICATED_PATHS = frozenset({"/health"})
GPU_RETRY_AFTER_S = 5
BUSY_RETRY_AFTER_S = 1


def image_fetcher(settings: Settings) -> ImageFetcher:
    """The ImageFetcher the settings describe."""
    return ImageFetcher(
        settings.label_studio_url,
        settings.label_studio_api_key,
        allowed_hosts=settings.allowed_hosts,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        timeout=settings.fetch_timeout,
        cache_size=settings.image_cache_size,
        cache_bytes=settings.image_cache_mb * 1024 * 1024,
    )


def prediction_job(
    settings: Settings, segmenter: MaskModel, images: ImageProvider, client: LabelStudioClient | None
) -> PredictionJob | None:
    """The background job writing deferred predictions to Label Studio with `client` (default: one
    from the settings); None without LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY
    (backend.label_studio_check says so at start-up)."""
    if not settings.label_studio_api:
        return None
    assert settings.label_studio_url is not None and settings.label_studio_api_key is not None
    if client is None:
        client = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key)
    claims = TaskClaims(shared_claims_file(settings.workers))
    return PredictionJob(segmenter, images, client, queue_limit=settings.job_queue_limit, claims=claims)


def create_app(
    settings: Settings,
    segmenter: MaskModel,
    images: ImageProvider | None = None,
    label_studio: LabelStudioClient | None = None,
) -> Flask:
    """The backend app serving `segmenter`; `images` defaults to an ImageFetcher from the settings,
    `label_studio` (the client the background job writes with) to a LabelStudioClient from them."""
    images = images if images is not None else image_fetcher(settings)
    metrics = ServiceMetrics()
    job = prediction_job(settings, segmenter, images, label_studio)
    predictor = Predictor(segmenter, images, metrics, budget_s=settings.predict_budget, job=job)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    _install_request_counting(app, metrics)
    _install_auth(app, settings.basic_auth)
    _install_error_handlers(app, settings.max_request_bytes)

    @app.get("/health")
    def health() -> Response:
        return jsonify(
            status="UP",
            model_class=MODEL_CLASS,
            model_version=segmenter.model_version,
            is_stand_in=segmenter.is_stand_in,
        )

    @app.post("/setup")
    def setup() -> Response:
        body = _json_object_body()
        schema = body.get("schema")
        if isinstance(schema, str) and schema.strip():
            labeling_setup(schema)  # a config we cannot serve is refused when the project connects
        return jsonify(model_version=segmenter.model_version)

    # At most THREADS predictions at once; gunicorn runs one thread more (backend/server.py), which a
    # prediction can never take, so /health and /setup are answered however slow predictions are.
    # A /predict beyond that is answered 503 at once instead of queueing in front of them.
    prediction_slots = threading.BoundedSemaphore(settings.threads)

    @app.post("/predict")
    def predict() -> Response:
        if not prediction_slots.acquire(blocking=False):
            raise ServerBusyError(
                f"all {settings.threads} prediction threads are busy (THREADS); retry shortly"
            )
        try:
            predict_request = PredictRequest.from_body(_json_object_body())
            return jsonify(results=predictor.predict(predict_request))
        finally:
            prediction_slots.release()

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        action = _json_object_body().get("action")
        if not isinstance(action, str) or not action:
            raise InvalidRequestError('the webhook body has no "action"')
        if action not in TRAIN_EVENTS:
            return jsonify(status="Unknown event"), 200
        logger.info(
            "webhook %s acknowledged; mlcdseg serves a fixed model and does not train", action
        )
        return jsonify(status="ok", result="not trained: mlcdseg serves a fixed model"), 201

    @app.get("/versions")
    def versions() -> Response:
        return jsonify(versions=[segmenter.model_version])

    @app.get("/metrics")
    def service_metrics() -> Response:
        return jsonify(
            {
                **metrics.snapshot(),
                "image_cache": images.cache_info(),
                "prediction_job": job.snapshot() if job is not None else None,
            }
        )

    @app.get("/jobs")
    def jobs() -> Response:
        if job is None:
            return jsonify(
                enabled=False,
                reason="LABEL_STUDIO_URL or LABEL_STUDIO_API_KEY is unset: no background job",
            )
        return jsonify(enabled=True, **job.snapshot())

    return app


def _json_object_body() -> dict[str, Any]:
    """The request body as a JSON object; InvalidRequestError when it is missing or anything else."""
    raw = request.get_data()
    # A body without Content-Length (chunked) is cut by Werkzeug at MAX_CONTENT_LENGTH without an
    # error: one more byte left in the server's stream means it was longer, so refuse it whole.
    if request.content_length is None and len(raw) >= (current_app.config["MAX_CONTENT_LENGTH"] or 0):
        if request.input_stream.read(1):
            raise RequestEntityTooLarge()
    if not raw.strip():
        raise InvalidRequestError("the request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise InvalidRequestError(f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError(
            f"the request body is a JSON {type(body).__name__}; expected an object"
        )
    return body


def _install_auth(app: Flask, credentials: tuple[str, str] | None) -> None:
    """Require HTTP basic auth on every endpoint but /health when credentials are set."""
    if credentials is None:
        return
    expected_user, expected_password = credentials

    @app.before_request
    def check_basic_auth() -> Response | None:
        if request.path in UNAUTHENTICATED_PATHS:
            return None
        given_user, given_password = _basic_credentials(request.headers.get("Authorization", ""))
        # Both compared every time, in constant time: the answer says nothing about which was wrong.
        user_matches = _matches_in_any_encoding(given_user, expected_user)
        password_matches = _matches_in_any_encoding(given_password, expected_password)
        if user_matches and password_matches:
            return None
        response = jsonify(
            error="authentication required: send the BASIC_AUTH_USER/BASIC_AUTH_PASS credentials"
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="mlcdseg"'
        return response


def _basic_credentials(header: str) -> tuple[bytes, bytes]:
    """(user, password) bytes of a Basic Authorization header; empty ones when it is not one.

    Kept as bytes: clients encode non-ASCII credentials in UTF-8 (browsers, curl) or Latin-1
    (python-requests), and Werkzeug's parser drops whatever is not UTF-8.
    """
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(encoded.strip(" \t"), validate=True)
    except binascii.Error:
        return b"", b""
    user, _, password = decoded.partition(b":")
    return user, password


def _matches_in_any_encoding(given: bytes, expected: str) -> bool:
    """True when `given` is `expected` encoded in UTF-8 or Latin-1; constant time, both tried."""
    utf8_matches = hmac.compare_digest(given, expected.encode("utf-8"))
    try:
        latin1 = expected.encode("latin-1")
    except UnicodeEncodeError:  # not expressible in Latin-1: only UTF-8 can match
        latin1 = expected.encode("utf-8")
    latin1_matches = hmac.compare_digest(given, latin1)
    return utf8_matches or latin1_matches


def _install_request_counting(app: Flask, metrics: ServiceMetrics) -> None:
    """Count requests per endpoint and responses per status class."""

    @app.before_request
    def count_request() -> None:
        metrics.count_request(request.url_rule.rule if request.url_rule else "<unknown>")

    @app.after_request
    def count_response(response: Response) -> Response:
        metrics.count_response(response.status_code)
        return response


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify(error=message), status


def _install_error_handlers(app: Flask, max_request_bytes: int) -> None:
    """Turn every error into a JSON answer; only unexpected ones are 500 and logged with a trace."""

    @app.errorhandler(InvalidRequestError)
    @app.errorhandler(TaskDataError)
    @app.errorhandler(LabelConfigError)
    def bad_request(error: Exception) -> tuple[Response, int]:
        logger.info("bad request to %s: %s", request.path, error)
        return _error(str(error), 400)

    @app.errorhandler(ImageFetchError)
    def unusable_image(error: ImageFetchError) -> tuple[Response, int]:
        logger.warning("image error in %s: %s", request.path, error)
        return _error(str(error), 422)

    @app.errorhandler(GpuOutOfMemoryError)
    def out_of_memory(error: GpuOutOfMemoryError) -> tuple[Response, int, dict[str, str]]:
        logger.error("GPU out of memory in %s: %s", request.path, error)
        response, status = _error(f"the GPU ran out of memory; retry later ({error})", 503)
        return response, status, {"Retry-After": str(GPU_RETRY_AFTER_S)}

    @app.errorhandler(ServerBusyError)
    def busy(error: ServerBusyError) -> tuple[Response, int, dict[str, str]]:
        logger.warning("refused %s: %s", request.path, error)
        response, status = _error(str(error), 503)
        return response, status, {"Retry-After": str(BUSY_RETRY_AFTER_S)}

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> tuple[Response, int]:
        return _error(
            f"the request body is larger than MLCDSEG_MAX_REQUEST_BYTES={max_request_bytes} bytes",
            413,
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return _error(error.description or error.name, error.code or 500)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        logger.exception("unexpected error in %s", request.path)
        return _error(f"internal error ({type(error).__name__}); see the backend log", 500)
