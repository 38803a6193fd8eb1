"""Load test of the ML backend (gunicorn, offline stand-in model) with concurrent /predict clients.

A tiny HTTP server on 127.0.0.1 plays Label Studio and serves one generated scene image; the
backend fetches it like a `/data/upload/…` task image. For each client count the script sends a
bounded number of requests (or stops at a time limit) and prints requests/s, p50/p99 latency,
errors, and the backend's own overhead: request time outside the model call, from the backend's
GET /metrics model time. Loopback only; it starts and stops everything itself.

Every answer is checked: a request counts as served only when it is HTTP 200 with one prediction
whose brush mask equals the stand-in's colour rule on the scene (an empty answer, a wrong mask or
an HTTP error is a failure). A 503 (all THREADS prediction threads busy; the backend refuses
rather than queues) is counted apart as "busy". Exits 1 when any answer was wrong.

    .venv/bin/python bench/backend_load.py [--clients 1 4 16] [--requests 200] [--seconds 30]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlcdseg.demo.scenes import SCENES, render_scene
from mlcdseg.labelstudio.local_server import LOOPBACK, BackendServer, new_legacy_token
from mlcdseg.masks.codecs import decode_brush_rle
from mlcdseg.model.stand_in import colour_rule_mask, write_stand_in_model

IMAGE_PATH = "/data/upload/1/scene.png"
LABEL_CONFIG = Path(__file__).resolve().parent.parent / "label_config" / "expressions.xml"


@dataclass(frozen=True)
class LevelResult:
    """Outcome of one concurrency level."""

    clients: int
    requests: int
    errors: int
    busy: int  # 503 answers: every prediction thread was taken
    wall_s: float
    latencies_s: list[float]
    model_s: float  # model time the backend reported for these requests

    def row(self) -> str:
        """One line of the results table."""
        ok = self.requests - self.errors - self.busy
        latencies = sorted(self.latencies_s) or [float("nan")]
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        mean_latency = statistics.fmean(latencies)
        model_per_request = self.model_s / ok if ok else float("nan")
        overhead = mean_latency - model_per_request
        return (
            f"{self.clients:>7} {self.requests:>8} {self.errors:>6} {self.busy:>5} {ok / self.wall_s:>9.1f} "
            f"{1000 * p50:>8.1f} {1000 * p99:>8.1f} {1000 * model_per_request:>9.1f} "
            f"{1000 * overhead:>11.1f} {100 * overhead / mean_latency:>9.0f}%"
        )


HEADER = (
    f"{'clients':>7} {'requests':>8} {'errors':>6} {'busy':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'model ms':>9} {'overhead ms':>11} {'overhead':>10}"
)


def serve_image(png: bytes) -> ThreadingHTTPServer:
    """Start a loopback HTTP server in a thread that answers IMAGE_PATH with `png` (a stand-in Label Studio)."""

    class ImageHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != IMAGE_PATH:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), ImageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def model_seconds(backend_url: str) -> float:
    """Total model-call time the backend reports in GET /metrics."""
    metrics = requests.get(f"{backend_url}/metrics", timeout=10).json()
    mean_ms = metrics["model_latency_ms"]["mean"] or 0.0
    return metrics["model_calls"] * mean_ms / 1000


def answer_is_right(response: requests.Response, expected_mask: np.ndarray) -> bool:
    """True for HTTP 200 with exactly one prediction whose brush mask is `expected_mask`."""
    if response.status_code != 200:
        return False
    results = response.json().get("results")
    if not isinstance(results, list) or len(results) != 1 or not isinstance(results[0], dict):
        return False  # [] is a task the backend could not serve
    regions = results[0].get("result") or []
    if len(regions) != 1:
        return False
    region = regions[0]
    mask = decode_brush_rle(region["value"]["rle"], region["original_height"], region["original_width"])
    return mask.shape == expected_mask.shape and bool(np.array_equal(mask, expected_mask))


def run_level(
    predict_url: str,
    body: dict,
    expected_mask: np.ndarray,
    backend_url: str,
    clients: int,
    total_requests: int,
    seconds: float,
) -> LevelResult:
    """Send up to `total_requests` /predict calls from `clients` threads, stopping after `seconds`."""
    deadline = time.monotonic() + seconds
    counter = iter(range(total_requests))
    counter_lock = threading.Lock()
    latencies: list[float] = []
    errors = busy = 0
    results_lock = threading.Lock()

    def client_loop() -> None:
        nonlocal errors, busy
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with counter_lock:
                    if next(counter, None) is None:
                        return
                started = time.perf_counter()
                refused = False
                try:
                    response = session.post(predict_url, json=body, timeout=60)
                    refused = response.status_code == 503
                    failed = not answer_is_right(response, expected_mask)
                except (requests.RequestException, ValueError, KeyError, TypeError):
                    failed = True
                elapsed = time.perf_counter() - started
                with results_lock:
                    if refused:
                        busy += 1
                    elif failed:
                        errors += 1
                    else:
                        latencies.append(elapsed)

    model_before = model_seconds(backend_url)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    return LevelResult(
        clients,
        len(latencies) + errors + busy,
        errors,
        busy,
        wall,
        latencies,
        model_seconds(backend_url) - model_before,
    )


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 4, 16], help="client counts (default: 1 4 16)"
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per client count (default: 200)")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="time limit per client count (default: 30)"
    )
    parser.add_argument("--threads", type=int, default=8, help="backend THREADS (default: 8)")
    parser.add_argument(
        "--no-image-cache",
        action="store_true",
        help="make the backend fetch and decode the image on every request",
    )
    arguments = parser.parse_args()

    scene = SCENES[0]
    image = render_scene(scene)
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    expected_mask = colour_rule_mask(np.asarray(image.convert("RGB")), scene.expressions[0])
    if expected_mask is None:
        raise SystemExit(f"the stand-in finds no target for {scene.expressions[0]!r}: pick another scene")
    fake_label_studio = serve_image(encoded.getvalue())
    label_studio_url = f"http://{LOOPBACK}:{fake_label_studio.server_address[1]}"
    body = {
        "tasks": [{"id": 1, "data": {"image": IMAGE_PATH, "expression": scene.expressions[0]}}],
        "project": "1.1",
        "label_config": LABEL_CONFIG.read_text(encoding="utf-8"),
        "params": {"context": None},
    }
    try:
        with tempfile.TemporaryDirectory(prefix="mlcdseg-bench-") as work_dir:
            model_dir = write_stand_in_model(Path(work_dir) / "stand-in")
            extra_env = {"LOG_LEVEL": "WARNING"}
            if arguments.no_image_cache:
                extra_env["MLCDSEG_IMAGE_CACHE_SIZE"] = "0"
            with BackendServer(
                model_dir,
                work_dir,
                label_studio_url=label_studio_url,
                label_studio_api_key=new_legacy_token(),
                threads=arguments.threads,
                extra_env=extra_env,
            ) as backend:
                predict_url = f"{backend.url}/predict"
                warm_up = requests.post(predict_url, json=body, timeout=60)
                warm_up.raise_for_status()
                print(
                    f"backend: gunicorn, 1 worker x {arguments.threads} threads, offline stand-in model "
                    f"(NOT MLCD-Seg); image {scene.name} {render_scene(scene).size}, "
                    f"image cache {'off' if arguments.no_image_cache else 'on'}"
                )
                print(HEADER)
                results = []
                for clients in arguments.clients:
                    results.append(
                        run_level(
                            predict_url, body, expected_mask, backend.url, clients,
                            arguments.requests, arguments.seconds,
                        )
                    )
                    print(results[-1].row(), flush=True)
    finally:
        fake_label_studio.shutdown()
    print("overhead = mean request latency - model time per request (from the backend's /metrics)")
    print("errors = HTTP errors, empty answers and masks other than the colour rule's; busy = 503")
    if any(result.errors for result in results):
        print("FAIL: some answers were wrong or empty", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
