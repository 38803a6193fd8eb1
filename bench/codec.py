"""Benchmark our Label Studio brush RLE codec against label-studio-sdk's on brush-stroke masks.

    .venv/bin/python bench/codec.py [--repeats 7] [--no-4k]

Builds reproducible brush-stroke masks (random-walk strokes of varying thickness plus a few filled
disks) at 1920x1080 and 3840x2160, times encode and decode of mlcdseg.masks.codecs against
label_studio_sdk.converter.brush (best of --repeats for both sides, timeit), prints the times in ms and the
speed-ups, and checks that both sides agree: our encode equals the SDK's byte for byte, our
decode of the SDK's RLE and the SDK's decode (alpha > 0) of ours both give the mask back.
Targets on the 1080p mask: decode >= 20x and encode >= 5x the SDK. Exits 1 when outputs differ.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import cv2
import numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcdseg.masks.codecs import decode_brush_rle, encode_brush_rle  # noqa: E402

TARGETS = {"encode": 5.0, "decode": 20.0}


def brush_stroke_mask(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Bool (height, width) mask of 6 thick anti-aliased random-walk strokes and 3 filled disks."""
    rng = np.random.default_rng(seed)
    scale = min(height, width)
    canvas = np.zeros((height, width), np.uint8)
    for _ in range(6):
        steps = rng.normal(0, scale / 12, (12, 2))
        points = (np.cumsum(steps, axis=0) + rng.uniform([0, 0], [width, height])).astype(np.int32)
        thickness = int(rng.integers(scale // 70, scale // 18))
        cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, 1, thickness=thickness, lineType=cv2.LINE_AA)
    for _ in range(3):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(canvas, centre, int(rng.integers(scale // 50, scale // 9)), 1, thickness=-1)
    return canvas > 0


def best_seconds(function, repeats: int) -> float:
    """Best wall time of one call over `repeats` timeit runs (each run long enough to time)."""
    calls, _ = timeit.Timer(function).autorange()
    calls = max(1, calls // 5)
    return min(timeit.repeat(function, number=calls, repeat=repeats)) / calls


def bench_mask(name: str, mask: np.ndarray, repeats: int) -> bool:
    """Print timings and speed-ups for one mask; True when our outputs equal the SDK's."""
    height, width = mask.shape
    sdk_rle = mask2rle(mask.astype(np.uint8) * 255)
    our_rle = encode_brush_rle(mask)
    same_encoding = our_rle == sdk_rle
    ours_decode_sdk = np.array_equal(decode_brush_rle(sdk_rle, height, width), mask)
    sdk_decode_ours = np.array_equal(np.reshape(decode_rle(our_rle), (height, width, 4))[..., 3] > 0, mask)
    identical = same_encoding and ours_decode_sdk and sdk_decode_ours

    times = {
        ("encode", "ours"): best_seconds(lambda: encode_brush_rle(mask), repeats),
        ("encode", "sdk"): best_seconds(lambda: mask2rle(mask.astype(np.uint8) * 255), repeats),
        ("decode", "ours"): best_seconds(lambda: decode_brush_rle(sdk_rle, height, width), repeats),
        ("decode", "sdk"): best_seconds(
            lambda: np.reshape(decode_rle(sdk_rle), (height, width, 4))[..., 3] > 0, repeats
        ),
    }
    print(f"{name}: {width}x{height}, {mask.mean():.1%} foreground, RLE {len(sdk_rle)} bytes")
    for operation in ("encode", "decode"):
        ours, sdk = times[(operation, "ours")], times[(operation, "sdk")]
        verdict = "met" if sdk / ours >= TARGETS[operation] else "MISSED"
        print(
            f"  {operation}: ours {ours * 1e3:8.3f} ms   sdk {sdk * 1e3:9.3f} ms   "
            f"speed-up {sdk / ours:6.1f}x (target >= {TARGETS[operation]:.0f}x: {verdict})"
        )
    print(
        f"  identical: encode {'yes' if same_encoding else 'NO'}, our decode of SDK RLE "
        f"{'yes' if ours_decode_sdk else 'NO'}, SDK decode of our RLE {'yes' if sdk_decode_ours else 'NO'}"
    )
    return identical


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timeit repeats; the best is reported")
    parser.add_argument("--no-4k", action="store_true", help="skip the 3840x2160 mask")
    arguments = parser.parse_args()
    cases = [("1080p brush strokes", brush_stroke_mask(1080, 1920, seed=0))]
    if not arguments.no_4k:
        cases.append(("4K brush strokes", brush_stroke_mask(2160, 3840, seed=1)))
    results = [bench_mask(name, mask, arguments.repeats) for name, mask in cases]  # run every case
    all_identical = all(results)
    if not all_identical:
        print("FAIL: our brush RLE differs from label-studio-sdk's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
