"""Backend limits that hold against slow, large or oddly encoded input."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from backend.app import image_fetcher
from backend.settings import Settings
from mlcdseg.errors import SettingsError
from mlcdseg.errors import ImageFetchError
from mlcdseg.labelstudio.image_fetch import ImageFetcher
from tests.backend_doubles import ScriptedSegmenter, make_app, predict_body, task
from tests.test_backend_serve import REPO_ROOT, SERVE, _free_port, wait_until_up


# ---------------------------------------------------------------- a whole-transfer deadline
class TricklingServer:
    """An HTTP server on 127.0.0.1 that answers 200 image/png and then sends one byte every
    `interval` seconds, for as long as the client keeps the connection; counts the bytes sent."""

    def __init__(self, interval: float = 0.25, body_bytes: int = 240, *, in_headers: bool = False) -> None:
        self.interval = interval
        self.in_headers = in_headers
        self.body_bytes = body_bytes
        self.bytes_sent = 0
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/slow.png"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        self.connections += 1
        with connection:
            connection.recv(65536)
            header = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {self.body_bytes}\r\n"
            try:
                # The headers are trickled too (a long X-Slow header), or sent at once.
                connection.sendall(header.encode() + (b"X-Slow: " if self.in_headers else b"\r\n"))
                for _ in range(self.body_bytes):
                    if self._stop.wait(self.interval):
                        return
                    connection.sendall(b"a" if self.in_headers else b"\x89")
                    self.bytes_sent += 1
            except OSError:  # the client gave up: what we want
                return

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture()
def trickling_server() -> Iterator[TricklingServer]:
    server = TricklingServer()
    yield server
    server.close()


def test_a_trickling_download_stops_at_the_deadline_for_the_whole_transfer(trickling_server: TricklingServer) -> None:
    fetcher = ImageFetcher(allowed_hosts=["127.0.0.1"], timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="took longer than 1 s"):
        fetcher.fetch(trickling_server.url)
    # The server would trickle for 60 s; the download gave up at its 1 s deadline (the bound
    # is loose on purpose: a busy machine may be slow, never 60 s slow).
    assert time.monotonic() - started < 10
    assert trickling_server.bytes_sent <= 8


def test_trickled_headers_stop_at_the_deadline_too() -> None:
    server = TricklingServer(in_headers=True)
    try:
        fetcher = ImageFetcher(allowed_hosts=["127.0.0.1"], timeout=1.0)
        started = time.monotonic()
        with pytest.raises(ImageFetchError, match="(no answer within|took longer than) 1 s"):
            fetcher.fetch(server.url)
        assert time.monotonic() - started < 10 and server.bytes_sent <= 8
    finally:
        server.close()


# ---------------------------------------------------------------- the image cache in bytes
def png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


class BytesSession:
    """A requests.Session double serving PNG bytes per URL (so the fetcher decodes for real)."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies
        self.cookies = __import__("requests").cookies.RequestsCookieJar()
        self.requested: list[str] = []

    def get(self, url: str, **_: object):
        import requests

        self.requested.append(url)
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "image/png"
        response.raw = io.BytesIO(self.bodies[url])
        return response

    def close(self) -> None:
        pass


def test_the_cache_is_bounded_in_bytes_of_decoded_pixels() -> None:
    urls = {f"http://images.test/{n}.png": png(1000, 1000) for n in range(4)}  # 3 MB each as RGB
    session = BytesSession(urls)
    fetcher = ImageFetcher(
        allowed_hosts=["images.test"], cache_size=8, cache_bytes=7_000_000, session=session,
        resolver=lambda host, port: ["192.0.2.1"],
    )
    for url in urls:
        fetcher.fetch(url)
    info = fetcher.cache_info()
    assert (info["size"], info["bytes"], info["capacity_bytes"]) == (2, 6_000_000, 7_000_000)
    fetcher.fetch("http://images.test/3.png")  # the most recent is kept…
    fetcher.fetch("http://images.test/0.png")  # …the oldest was dropped
    assert session.requested[4:] == ["http://images.test/0.png"]


def test_an_image_larger_than_the_whole_cache_is_not_kept() -> None:
    url = "http://images.test/big.png"
    session = BytesSession({url: png(2000, 2000)})  # 12 MB as RGB
    fetcher = ImageFetcher(
        allowed_hosts=["images.test"], cache_bytes=5_000_000, session=session,
        resolver=lambda host, port: ["192.0.2.1"],
    )
    fetcher.fetch(url)
    fetcher.fetch(url)
    assert len(session.requested) == 2 and fetcher.cache_info()["bytes"] == 0


def test_the_cache_bound_comes_from_mlcdseg_image_cache_mb() -> None:
    assert image_fetcher(Settings.from_env({})).cache_info()["capacity_bytes"] == 512 * 1024 * 1024
    settings = Settings.from_env({"MLCDSEG_IMAGE_CACHE_MB": "64", "MLCDSEG_IMAGE_CACHE_SIZE": "3"})
    info = image_fetcher(settings).cache_info()
    assert (info["capacity_bytes"], info["capacity"]) == (64 * 1024 * 1024, 3)
    with pytest.raises(SettingsError, match="MLCDSEG_IMAGE_CACHE_MB=-1 must be at least 0"):
        Settings.from_env({"MLCDSEG_IMAGE_CACHE_MB": "-1"})


# ---------------------------------------------------------------- request bodies without a length
def test_a_chunked_body_past_the_limit_is_refused_with_413() -> None:
    client = make_app(ScriptedSegmenter(), max_request_bytes=1000).test_client()
    body = json.dumps(predict_body([task(1, "red")])).encode() + b" " * 5000  # valid JSON if cut
    response = client.post(
        "/predict",
        input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},  # what gunicorn sets for chunked bodies
    )
    assert response.status_code == 413
    assert "MLCDSEG_MAX_REQUEST_BYTES=1000" in response.get_json()["error"]


def test_a_chunked_body_within_the_limit_is_served() -> None:
    client = make_app(ScriptedSegmenter(), max_request_bytes=100_000).test_client()
    body = json.dumps(predict_body([task(1, "red")])).encode()
    response = client.post(
        "/predict",
        input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200 and len(response.get_json()["results"]) == 1


# ---------------------------------------------------------------- basic auth encodings
def basic(user: bytes, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user + b":" + password).decode()}


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_a_non_ascii_password_is_accepted_in_utf8_and_latin1(encoding: str) -> None:
    client = make_app(ScriptedSegmenter(), basic_auth_user="annotator", basic_auth_pass="pässwörd").test_client()
    response = client.get("/versions", headers=basic(b"annotator", "pässwörd".encode(encoding)))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("user", "password"),
    [(b"annotator", "passwort".encode()), (b"annotator", b"p\xe4ssw\xf6r"), (b"annot\xe4tor", "pässwörd".encode()),
     (b"annotator", b"\xff\xfe")],
)
def test_wrong_credentials_in_any_encoding_are_refused(user: bytes, password: bytes) -> None:
    client = make_app(ScriptedSegmenter(), basic_auth_user="annotator", basic_auth_pass="pässwörd").test_client()
    response = client.get("/versions", headers=basic(user, password))
    assert response.status_code == 401 and "authentication required" in response.get_json()["error"]


def test_a_password_outside_latin1_is_still_accepted_in_utf8() -> None:
    client = make_app(ScriptedSegmenter(), basic_auth_user="annotator", basic_auth_pass="пароль✓").test_client()
    assert client.get("/versions", headers=basic(b"annotator", "пароль✓".encode())).status_code == 200


# ---------------------------------------------------------------- the real server under load
@dataclass(frozen=True)
class ServedBackend:
    url: str
    log_path: Path


@pytest.fixture()
def served_backend(stand_in_model_dir, tmp_path) -> Iterator[ServedBackend]:
    """`mlcdseg serve` (gunicorn, 2 threads) with the stand-in model, its log in a file."""
    port = _free_port()
    environment = {
        **os.environ, "MLCDSEG_ALLOWED_HOSTS": "127.0.0.1", "WORKERS": "1", "PYTHONPATH": str(REPO_ROOT),
        "MLCDSEG_MAX_REQUEST_BYTES": "100000",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--host", "127.0.0.1", "--port", str(port),
             "--model", str(stand_in_model_dir), "--threads", "2"],
            cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base_url, log_path)
        yield ServedBackend(base_url, log_path)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _post(url: str, body: bytes, timeout: float) -> int:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return -1


def test_health_answers_within_a_second_while_every_prediction_thread_is_busy(
    served_backend: ServedBackend, trickling_server: TricklingServer
) -> None:
    body = json.dumps(
        predict_body([{"id": 1, "data": {"image": trickling_server.url, "expression": "the red box"}}])
    ).encode()
    statuses: list[int] = []
    clients = [
        threading.Thread(target=lambda: statuses.append(_post(served_backend.url + "/predict", body, 60)), daemon=True)
        for _ in range(4)
    ]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 20
    while trickling_server.connections < 2:  # both prediction threads are downloading
        assert time.monotonic() < deadline, "the predictions never reached the image server"
        time.sleep(0.05)
    time.sleep(0.5)  # the other two requests have reached the server too
    with urllib.request.urlopen(served_backend.url + "/health", timeout=1) as response:
        assert json.loads(response.read())["status"] == "UP"
    deadline = time.monotonic() + 20
    while len(statuses) < 2:
        assert time.monotonic() < deadline, "requests beyond the prediction threads were not answered"
        time.sleep(0.05)
    assert statuses[:2] == [503, 503]  # beyond THREADS: busy, retry later, not queued forever


def test_a_chunked_body_past_the_limit_gets_413_from_the_real_server(served_backend: ServedBackend) -> None:
    port = int(served_backend.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps(predict_body([task(1, "red")])).encode() + b" " * 200_000
    connection.request("POST", "/predict", body=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                       headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413
    assert "MLCDSEG_MAX_REQUEST_BYTES=100000" in json.loads(response.read())["error"]
