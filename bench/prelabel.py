"""Pre-labeling throughput on a local Label Studio with the stand-in model at a fixed cost per call.

For one project of N tasks (default 2,000; expressions of one image are neighbours) each mode
runs on a fresh copy of the project and is timed until every task holds its prediction:

- retrieve: one "Retrieve predictions" through the backend (budget MLCDSEG_PREDICT_BUDGET, the
  rest stored by its background job), timed until the job is idle;
- prelabel: `mlcdseg prelabel` with one worker in its process;
- ray: `mlcdseg prelabel --ray auto --workers 2`.

It prints tasks/s and where the time went: waiting for images (fetching + decoding that the
prefetch did not hide), the model (the stand-in's call), turning masks into regions, uploading
(beside the model), and the overhead outside the model (1 − model time / (wall time × workers)).
The stand-in is NOT MLCD-Seg; with MLCD-Seg the model's share grows (0.13–0.29 s per expression).
Loopback only; it starts and stops Label Studio and the backend itself.

    .venv/bin/python bench/prelabel.py [--tasks 2000] [--latency-ms 130] [--modes retrieve prelabel ray]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mlcdseg.labelstudio.client import LabelStudioClient
from mlcdseg.labelstudio.local_server import BackendServer, LabelStudioServer
from mlcdseg.model.stand_in import write_stand_in_model

LABEL_CONFIG = (REPO_ROOT / "label_config" / "expressions.xml").read_text(encoding="utf-8")
EXPRESSIONS_PER_IMAGE = ("the red box", "the blue square", "the green bar", "the white dot")


@dataclass(frozen=True)
class ModeResult:
    """One mode's wall time and seconds by stage (stage seconds summed over workers)."""

    mode: str
    workers: int
    tasks: int
    wall_s: float
    fetch_s: float
    model_s: float
    regions_s: float
    upload_s: float

    def row(self) -> str:
        """One line of the table."""
        busy = self.wall_s * self.workers
        overhead = 1 - self.model_s / busy
        return (
            f"{self.mode:<10} {self.workers:>7} {self.tasks / self.wall_s:>8.1f} {self.wall_s:>7.1f} "
            f"{100 * self.fetch_s / busy:>7.1f}% {100 * self.model_s / busy:>7.1f}% "
            f"{100 * self.regions_s / busy:>7.1f}% {100 * self.upload_s / busy:>7.1f}% {100 * overhead:>8.1f}%"
        )


def write_images(folder: Path, count: int) -> list[str]:
    """`count` 320×240 PNGs with a red, blue, green and white shape; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        pixels = np.full((240, 320, 3), 60, dtype=np.uint8)
        pixels[20 : 80 + index % 50, 10:150] = (250, 10, 5)
        pixels[120:220, 170 + index % 40 : 300] = (0, 0, 255)
        pixels[225:235, 10:200] = (0, 255, 0)
        pixels[100:110, 100:110] = (255, 255, 255)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        names.append(f"{index}.png")
    return names


def new_project(client: LabelStudioClient, folder: Path, names: list[str], tasks: int, title: str) -> int:
    """A project of `tasks` tasks, EXPRESSIONS_PER_IMAGE per image, imported in one request."""
    project_id = client.create_project(title, LABEL_CONFIG)["id"]
    client.add_local_storage(project_id, str(folder))
    data = [
        {"image": f"/data/local-files/?d={folder.name}/{names[index // len(EXPRESSIONS_PER_IMAGE)]}",
         "expression": EXPRESSIONS_PER_IMAGE[index % len(EXPRESSIONS_PER_IMAGE)]}
        for index in range(tasks)
    ]  # fmt: skip
    client.import_tasks(project_id, [{"data": item} for item in data])
    return project_id


def run_retrieve(label_studio: LabelStudioServer, client: LabelStudioClient, model: Path, project_id: int, tasks: int, log_dir: Path) -> ModeResult:
    """One Retrieve predictions through the backend, until the background job is idle."""
    with BackendServer(model, log_dir, label_studio_url=label_studio.url, label_studio_api_key=label_studio.token) as backend:
        client.connect_ml_backend(project_id, backend.url)
        started = time.monotonic()
        client.retrieve_predictions(project_id)
        while True:
            jobs = requests.get(f"{backend.url}/jobs", timeout=10).json()
            if jobs["queued"] == 0 and jobs["in_flight"] == 0 and client.prediction_count(project_id) >= tasks:
                break
            time.sleep(0.2)
        wall_s = time.monotonic() - started
        metrics = requests.get(f"{backend.url}/metrics", timeout=10).json()
    synchronous_model_s = metrics["model_calls"] and metrics["model_latency_ms"]["mean"] * metrics["model_calls"] / 1000
    seconds = jobs["seconds"]
    # The synchronous part's fetch and regions times are not reported apart: they count as overhead.
    return ModeResult(
        "retrieve", 1, tasks, wall_s, seconds["fetch_and_decode"], seconds["model"] + synchronous_model_s,
        seconds["regions"], seconds["upload"],
    )  # fmt: skip


def run_prelabel(label_studio: LabelStudioServer, model: Path, project_id: int, tasks: int, workdir: Path, ray_workers: int | None, batch_size: int) -> ModeResult:
    """`mlcdseg prelabel` (with --ray auto --workers N when ray_workers is set)."""
    summary_path = workdir / f"summary-{project_id}.json"
    command = [
        sys.executable, "-m", "mlcdseg", "prelabel", "--label-studio-url", label_studio.url,
        "--api-key", label_studio.token, "--project", str(project_id), "--model", str(model),
        "--batch-size", str(batch_size), "-o", str(summary_path),
    ]  # fmt: skip
    if ray_workers:
        command += ["--ray", "auto", "--workers", str(ray_workers)]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    started = time.monotonic()
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    process_s = time.monotonic() - started
    if finished.returncode != 0:
        raise SystemExit(f"prelabel failed ({finished.returncode}): {finished.stderr[-3000:]}")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    seconds = summary["seconds"]
    assert summary["done"] == tasks, summary
    print(f"  ({'ray' if ray_workers else 'prelabel'}: {process_s:.1f} s with start-up and model loading)", file=sys.stderr)
    return ModeResult(
        "ray" if ray_workers else "prelabel", ray_workers or 1, tasks, seconds["total"],
        seconds["fetch_and_decode"], seconds["model"], seconds["regions"], seconds["upload"],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=130.0, help="stand-in cost per call (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="prelabel's --batch-size (default: %(default)s)")
    parser.add_argument("--modes", nargs="+", default=["retrieve", "prelabel", "ray"], choices=["retrieve", "prelabel", "ray"])
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlcdseg-bench-prelabel-") as scratch:
        workdir = Path(scratch)
        model = write_stand_in_model(workdir / "stand-in", latency_ms=arguments.latency_ms)
        with LabelStudioServer(workdir / "label-studio", startup_timeout_s=600) as label_studio:
            client = LabelStudioClient(label_studio.url, label_studio.token, timeout_s=900)
            folder = label_studio.document_root / "bench"
            names = write_images(folder, -(-arguments.tasks // len(EXPRESSIONS_PER_IMAGE)))
            results = []
            for mode in arguments.modes:
                project_id = new_project(client, folder, names, arguments.tasks, f"bench {mode}")
                if mode == "retrieve":
                    results.append(run_retrieve(label_studio, client, model, project_id, arguments.tasks, workdir / "backend"))
                else:
                    results.append(run_prelabel(label_studio, model, project_id, arguments.tasks, workdir, 2 if mode == "ray" else None, arguments.batch_size))
                print(results[-1].row(), file=sys.stderr)
    print(f"{arguments.tasks} tasks, stand-in (NOT MLCD-Seg) at {arguments.latency_ms:g} ms per call, "
          f"{len(EXPRESSIONS_PER_IMAGE)} expressions per 320x240 image; shares of wall time x workers")
    print(f"{'mode':<10} {'workers':>7} {'tasks/s':>8} {'wall s':>7} {'fetch':>8} {'model':>8} {'regions':>8} {'upload':>8} {'overhead':>9}")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
