"""Benchmark `mlcdseg evaluate` on synthetic 1080p exports against a label-studio-sdk baseline.

    .venv/bin/python bench/evaluate.py [--sizes 1000 10000] [--baseline-tasks 200] [--workers 1 2]

Writes exports of 1080p brush masks (ellipses and strokes, encoded with our brush encoder;
the model mask is the human one moved, resized and with a stroke missing or added) into a
temporary directory. For each size, our evaluation runs in a fresh subprocess (its peak RSS is
read from /proc/self/status VmHWM: it should stay flat from 1,000 to 10,000 tasks). The baseline runs here:
json.load of the whole 1,000-task export, then label-studio-sdk's decode_rle + numpy IoU on the
first --baseline-tasks tasks; its rate is extrapolated from that subset. Rates are also given
per CPU second (user + system, workers included), which a busy shared machine disturbs less
than wall time. Target: ours >= 10x the baseline's tasks/s.

Both sides must agree: ours also evaluates an export of exactly the baseline's --baseline-tasks
tasks, and its cIoU must equal the baseline's (ΣI/ΣU of the same pixel counts); the script exits
1 when they differ, before printing any speed.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlcdseg.masks.codecs import encode_brush_rle

HEIGHT, WIDTH = 1080, 1920
DISTINCT_PAIRS = 40  # mask pairs encoded once and cycled over the tasks (encoding is not what we measure)


def mask_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (human, model) pair of bool (1080, 1920) masks: an ellipse with strokes, and a perturbed copy."""
    def draw(center, axes, angle, strokes) -> np.ndarray:
        canvas = np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.ellipse(canvas, center, axes, angle, 0, 360, 1, thickness=-1)
        for start, end, thickness in strokes:
            cv2.line(canvas, start, end, 1, thickness)
        return canvas.astype(bool)

    center = (int(rng.integers(300, WIDTH - 300)), int(rng.integers(250, HEIGHT - 250)))
    axes = (int(rng.integers(60, 280)), int(rng.integers(50, 220)))
    angle = float(rng.uniform(0, 180))
    strokes = [((int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))),
                (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))), int(rng.integers(8, 40)))
               for _ in range(int(rng.integers(1, 4)))]
    human = draw(center, axes, angle, strokes)
    shift = rng.integers(-25, 26, size=2)
    model_axes = tuple(int(a * rng.uniform(0.85, 1.15)) for a in axes)
    model = draw((center[0] + int(shift[0]), center[1] + int(shift[1])), model_axes, angle + float(rng.uniform(-10, 10)),
                 strokes[:-1] if rng.random() < 0.5 else strokes)
    return human, model


def region(mask: np.ndarray) -> dict:
    """A brushlabels region as Label Studio 1.23 exports it."""
    return {"from_name": "mask", "id": "r1", "image_rotation": 0, "original_height": HEIGHT, "original_width": WIDTH,
            "to_name": "image", "type": "brushlabels",
            "value": {"brushlabels": ["object"], "format": "rle", "rle": encode_brush_rle(mask)}}


def write_export(path: Path, tasks: int, encoded_pairs: list[tuple[str, str]]) -> None:
    """Write an export of `tasks` tasks, streaming, in the shape of Label Studio's snapshot export."""
    with path.open("w") as stream:
        stream.write("[")
        for task_id in range(1, tasks + 1):
            human, model = encoded_pairs[task_id % len(encoded_pairs)]
            stream.write("," if task_id > 1 else "")
            stream.write(
                f'{{"id": {task_id}, "data": {{"image": "/data/upload/1/{task_id}.jpg", "expression": "object {task_id}",'
                f' "split": "{("val", "testA", "testB")[task_id % 3]}"}},'
                f' "annotations": [{{"id": {task_id}, "completed_by": 1, "result": [{human}], "was_cancelled": false,'
                f' "ground_truth": false, "created_at": "2026-11-27T04:36:13Z", "updated_at": "2026-11-27T04:36:13Z"}}],'
                f' "predictions": [{{"id": {task_id}, "result": [{model}], "model_version": "bench-1",'
                f' "created_at": "2026-11-27T04:36:12Z", "updated_at": "2026-11-27T04:36:12Z"}}], "drafts": [], "meta": {{}}}}'
            )
        stream.write("]")


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_ours_here(export: str, outdir: str, workers: int) -> None:
    """(Subprocess side) evaluate one export and print seconds and peak RSS as JSON."""
    from mlcdseg.evaluation.evaluate import evaluate_export
    from mlcdseg.labelstudio.export_source import ExportSource
    from mlcdseg.evaluation.samples import SampleSettings

    start, cpu_start = time.perf_counter(), _cpu_seconds()
    result = evaluate_export(ExportSource(Path(export)), outdir, SampleSettings(), workers=workers, quiet=True)
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
    # VmHWM restarts at exec (ru_maxrss would carry this bench's own peak over from the fork).
    status = Path("/proc/self/status").read_text()
    peak_kib = int(status.split("VmHWM:")[1].split()[0])
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # pool workers (forked from here)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak_kib / 1024, "worker_peak_mib": children_kib / 1024,
                      "samples": result["overall"]["samples"], "cIoU": result["overall"]["cIoU"]}))


def run_ours(export: Path, outdir: Path, workers: int) -> dict:
    """Our evaluation in a fresh interpreter, so that its peak memory is its own."""
    output = subprocess.run(
        [sys.executable, __file__, "--child", str(export), str(outdir), str(workers)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_baseline(export: Path, subset: int) -> dict:
    """json.load the whole export, then SDK decode_rle + numpy IoU on the first `subset` tasks."""
    from label_studio_sdk.converter.brush import decode_rle

    start = time.process_time()
    with export.open() as stream:
        tasks = json.load(stream)
    load_seconds = time.process_time() - start
    start = time.process_time()
    intersections = unions = 0
    for task in tasks[:subset]:
        masks = []
        for item in (task["annotations"][0], task["predictions"][0]):
            result = item["result"][0]
            rgba = np.reshape(decode_rle(result["value"]["rle"]), (result["original_height"], result["original_width"], 4))
            masks.append(rgba[:, :, 3] > 0)
        intersections += int(np.count_nonzero(masks[0] & masks[1]))
        unions += int(np.count_nonzero(masks[0] | masks[1]))
    per_task = (time.process_time() - start) / subset
    total = load_seconds + per_task * len(tasks)
    return {"tasks": len(tasks), "load_seconds": load_seconds, "per_task_seconds": per_task,
            "tasks_per_second": len(tasks) / total, "subset_cIoU": intersections / unions}


def check_agreement(directory: Path, tasks: int, pairs: list[tuple[str, str]], baseline_ciou: float) -> None:
    """Exit 1 unless our cIoU on the baseline's first `tasks` tasks equals the baseline's."""
    export = directory / "export-agreement.json"
    write_export(export, tasks, pairs)
    ours = run_ours(export, directory / "out-agreement", 1)
    if ours["samples"] != tasks or not math.isclose(ours["cIoU"], baseline_ciou, rel_tol=1e-9):
        print(f"FAIL: on the same {tasks} tasks our cIoU is {ours['cIoU']!r} over {ours['samples']} samples, "
              f"the baseline's {baseline_ciou!r}", file=sys.stderr)
        raise SystemExit(1)
    print(f"agreement: cIoU {ours['cIoU']:.6f} on the baseline's {tasks} tasks, equal to the baseline's")


def main() -> None:
    """Generate the exports, run both sides and print the figures."""
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        run_ours_here(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--baseline-tasks", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    arguments = parser.parse_args()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    pairs = [tuple(json.dumps(region(mask)) for mask in mask_pair(rng)) for _ in range(DISTINCT_PAIRS)]
    print(f"encoded {DISTINCT_PAIRS} 1080p mask pairs in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory(prefix="mlcdseg-bench-") as directory:
        exports = {}
        for size in arguments.sizes:
            exports[size] = Path(directory) / f"export-{size}.json"
            write_export(exports[size], size, pairs)
            print(f"export of {size} tasks: {exports[size].stat().st_size / 2**20:.1f} MiB")
        baseline = run_baseline(exports[min(arguments.sizes)], arguments.baseline_tasks)
        check_agreement(Path(directory), arguments.baseline_tasks, pairs, baseline["subset_cIoU"])
        print(f"baseline (json.load + label-studio-sdk decode_rle + numpy IoU), {baseline['tasks']} tasks: "
              f"load {baseline['load_seconds']:.2f} CPU s, {1000 * baseline['per_task_seconds']:.0f} CPU ms/task "
              f"(on {arguments.baseline_tasks} tasks) -> {baseline['tasks_per_second']:.2f} tasks per CPU second")
        for workers in arguments.workers:
            for size in arguments.sizes:
                ours = run_ours(exports[size], Path(directory) / f"out-{size}-{workers}", workers)
                cpu_rate = size / ours["cpu_seconds"]
                print(f"ours, {size:>6} tasks, workers={workers}: {ours['seconds']:.1f} s wall "
                      f"({size / ours['seconds']:.1f} tasks/s), {ours['cpu_seconds']:.1f} CPU s "
                      f"({cpu_rate:.1f} tasks per CPU second, {cpu_rate / baseline['tasks_per_second']:.1f}x baseline), "
                      f"peak RSS {ours['peak_mib']:.0f} MiB (workers {ours['worker_peak_mib']:.0f} MiB), "
                      f"cIoU {ours['cIoU']:.4f}")


if __name__ == "__main__":
    main()
