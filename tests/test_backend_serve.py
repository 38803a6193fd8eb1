"""Running the backend: the gunicorn configuration, and `serve` for real with the offline stand-in."""

from __future__ import annotations

import functools
import json
import os
import runpy
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from backend.server import gunicorn_options, load_app
from backend.settings import Settings
from mlcdseg.cli import build_parser
from mlcdseg.masks.codecs import decode_brush_rle
from mlcdseg.model.stand_in import colour_rule_mask
from tests.backend_doubles import EXPRESSIONS_CONFIG, shapes_image

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVE = (
    "import argparse, sys\n"
    "from backend.serve_command import register_serve\n"
    "parser = argparse.ArgumentParser()\n"
    "register_serve(parser.add_subparsers())\n"
    "arguments = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(arguments.handler(arguments))\n"
)


def test_gunicorn_config_file_takes_its_values_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "PORT": "9191",
        "WORKERS": "2",
        "THREADS": "3",
        "LOG_LEVEL": "warning",
    }.items():
        monkeypatch.setenv(name, value)
    config = runpy.run_path(str(REPO_ROOT / "backend" / "gunicorn.conf.py"))
    assert config["bind"] == "0.0.0.0:9191"
    # THREADS prediction threads and one reserved for /health (see test_backend_limits).
    assert (config["workers"], config["threads"], config["worker_class"]) == (2, 4, "gthread")
    assert config["preload_app"] is False  # CUDA is never initialised before the fork
    assert config["timeout"] >= 600 and config["loglevel"] == "warning"


def test_gunicorn_options_bind_the_given_host() -> None:
    assert gunicorn_options(Settings(port=1234), host="127.0.0.1")["bind"] == "127.0.0.1:1234"


def test_mlcdseg_cli_has_the_serve_command() -> None:
    arguments = build_parser().parse_args(
        ["serve", "--port", "9999", "--model", "some/model", "--threads", "2"]
    )
    assert (arguments.port, arguments.model, arguments.threads, arguments.host) == (
        9999,
        "some/model",
        2,
        "0.0.0.0",
    )


def test_a_model_that_cannot_load_stops_the_worker_with_one_clear_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SystemExit) as stopped:
        load_app(Settings(model=str(tmp_path / "missing-model")))
    assert stopped.value.code == 3  # gunicorn's WORKER_BOOT_ERROR: the master shuts down
    assert "cannot start the backend: model directory" in caplog.text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_until_up(process: subprocess.Popen, base_url: str, log_path: Path, seconds: float = 90) -> dict:
    """The /health answer of a starting `serve`, once it answers; fails with the log otherwise."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"serve exited early:\n{log_path.read_text()}"
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
                return json.loads(response.read())
        except OSError:  # not listening yet, or the worker is still loading the model
            assert time.monotonic() < deadline, f"serve did not come up:\n{log_path.read_text()}"
            time.sleep(0.3)


@pytest.fixture()
def image_server(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 serving shapes.png; yields its base URL."""
    shapes_image().save(tmp_path / "shapes.png")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    ).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_serve_runs_gunicorn_with_the_model_and_answers_predictions(
    stand_in_model_dir: Path, image_server: str, tmp_path: Path
) -> None:
    port = _free_port()
    environment = {
        **os.environ,
        "MLCDSEG_ALLOWED_HOSTS": "127.0.0.1",
        "WORKERS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVE,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--model",
                str(stand_in_model_dir),
                "--threads",
                "2",
            ],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        health = wait_until_up(process, base_url, log_path)
        assert health["status"] == "UP" and health["is_stand_in"] is True
        body = {
            "tasks": [
                {
                    "id": 1,
                    "data": {"image": f"{image_server}/shapes.png", "expression": "the red box"},
                }
            ],
            "label_config": EXPRESSIONS_CONFIG,
            "params": {"context": None},
        }
        (item,) = _post_json(base_url + "/predict", body)["results"]
        (region,) = item["result"]
        mask = decode_brush_rle(
            region["value"]["rle"], region["original_height"], region["original_width"]
        )
        assert np.array_equal(mask, colour_rule_mask(np.asarray(shapes_image()), "red"))
    finally:
        process.terminate()
        process.wait(timeout=30)
