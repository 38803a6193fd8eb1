"""Benchmark the native engine against one call per expression, full-size random weights.

Builds the MLCD-Seg architecture (CLIP ViT-L/14-336 tower, Qwen2.5-7B, SAM ViT-H) with random
weights in 16-bit and measures, on one 640x480 image:
  - the one-call path: every expression re-runs preprocessing, tower, SAM encoder and the whole
    prompt prefill (the engine's own modules, the cache bypassed);
  - the engine: the image encoded once, 1 / 3 / 10 expressions in one batched suffix prefill;
  - a re-prompt on a cached image (one suffix);
  - peak GPU memory of each path.
Random token ids stand in for text (the real prompt length, ~6-token expressions); the answer is
teacher-forced, as in the benchmark mode. Needs only torch, numpy, PIL and `mlcdseg.engine`:

    PYTHONPATH=. python3 bench/engine_gpu.py --out result.json        # GPU, full size
    PYTHONPATH=. python3 bench/engine_gpu.py --tiny --out tiny.json   # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from mlcdseg.engine import NativeEngine, build_network
from mlcdseg.engine.config import CLIP_IMAGE_MEAN, CLIP_IMAGE_STD, EngineConfig, LlmConfig, SamEncoderConfig, TowerConfig

PREFIX_TOKENS = 15  # "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
TEMPLATE_TOKENS = 25  # "\n", "<|im_end|>\n<|im_start|>assistant\n", "It is [SEG].<|im_end|>\n"
EXPRESSION_TOKENS = 6
TOKENS_AFTER_SEG = 3  # ".", "<|im_end|>", "\n"


def grids(tile: int) -> tuple[tuple[int, int], ...]:
    """MLCD-Seg's ten anyres canvases, (width, height) in tiles of `tile` pixels."""
    cells = ((1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (4, 1))
    return tuple((w * tile, h * tile) for w, h in cells)


def architecture(tiny: bool) -> EngineConfig:
    """Full-size MLCD-Seg-7B (dimensions from research/mlcdseg-architecture.md), or a tiny twin."""
    if tiny:
        tower = TowerConfig(64, 3, 1, 256, 14, 70, -2, "quick_gelu", 1e-5, CLIP_IMAGE_MEAN, CLIP_IMAGE_STD)
        llm = LlmConfig(64, 2, 4, 2, 128, 400, 1e-6, 1e6, False)
        sam = SamEncoderConfig(32, 2, 2, 128, 16, 256, 14, (1,), 64)
        return EngineConfig(tower, llm, sam, 2, grids(70), 64, 2, 128, "")
    tower = TowerConfig(1024, 24, 16, 4096, 14, 336, -2, "quick_gelu", 1e-5, CLIP_IMAGE_MEAN, CLIP_IMAGE_STD)
    llm = LlmConfig(3584, 28, 28, 4, 18944, 151666, 1e-6, 1e6, False)
    sam = SamEncoderConfig(1280, 32, 16, 5120, 16, 1024, 14, (7, 15, 23, 31), 256)
    return EngineConfig(tower, llm, sam, 2, grids(336), 256, 2, 2048, "")


class RandomPrompts:
    """Token ids of the real prompt's lengths; the `[SEG]` id sits where the answer puts it."""

    def __init__(self, vocab: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.seg_id = vocab - 1
        self.stop_ids = frozenset({vocab - 2})
        self._prefix = self._random(PREFIX_TOKENS)

    def _random(self, count: int) -> list[int]:
        return self.rng.integers(0, self.vocab - 2, count).tolist()

    def prefix_ids(self) -> list[int]:
        return self._prefix

    def suffix_ids(self, question: str, answer: str | None) -> list[int]:
        tokens = self._random(TEMPLATE_TOKENS + EXPRESSION_TOKENS - TOKENS_AFTER_SEG - 1)
        return tokens + [self.seg_id] + self._random(TOKENS_AFTER_SEG)

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(map(str, ids))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(run: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def peak_gib(run: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def test_image(width: int = 640, height: int = 480) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def measure(engine: NativeEngine, counts: Sequence[int], warmup: int, repeats: int) -> dict:
    device = engine.device
    image = test_image()
    suffixes = [engine.prompts.suffix_ids("", None) for _ in range(max(counts))]

    def one_call_per_expression(count: int) -> Callable[[], None]:
        def run() -> None:
            for suffix in suffixes[:count]:
                engine.segment_suffixes(engine.encode_image(image, use_cache=False), [suffix], generate=False)

        return run

    def engine_batch(count: int) -> Callable[[], None]:
        def run() -> None:
            engine.cache.clear()
            engine.segment_suffixes(engine.encode_image(image), suffixes[:count], generate=False)

        return run

    encoded = engine.encode_image(image)
    tokens = {"image_tokens": encoded.prefix_length - PREFIX_TOKENS, "prompt_tokens": encoded.prefix_length + len(suffixes[0])}
    del encoded
    engine.cache.clear()  # nothing resident but the weights when peaks are measured
    peaks = {"peak_gib_one_call": peak_gib(one_call_per_expression(1), device),
             "peak_gib_engine": peak_gib(engine_batch(max(counts)), device)}
    rows = []
    for count in counts:
        per_call = median_ms(one_call_per_expression(count), device, warmup, repeats) / count
        batched = median_ms(engine_batch(count), device, warmup, repeats) / count
        rows.append({"expressions": count, "one_call_ms_per_expression": per_call, "engine_ms_per_expression": batched,
                     "speedup": per_call / batched})
    reprompt = median_ms(lambda: engine.segment_suffixes(engine.encode_image(image), suffixes[:1], generate=False), device, warmup, repeats)
    graphs = engine.use_cuda_graphs
    engine.use_cuda_graphs = False
    reprompt_launched = median_ms(lambda: engine.segment_suffixes(engine.encode_image(image), suffixes[:1], generate=False), device, warmup, repeats)
    eager = engine.segment_suffixes(engine.encode_image(image), suffixes[:1], generate=False)[0]
    engine.use_cuda_graphs = graphs
    replayed = engine.segment_suffixes(engine.encode_image(image), suffixes[:1], generate=False)[0]
    agreement = {
        "graph_vs_eager_seg_hidden_max_abs": float((replayed.seg_hidden - eager.seg_hidden).abs().max()),
        "graph_vs_eager_mask_iou": mask_iou(replayed.masks, eager.masks),
    }
    encode = median_ms(lambda: engine.encode_image(image, use_cache=False), device, warmup, repeats)
    return {"image": list(image.size), **tokens, "rows": rows, "cached_reprompt_ms": reprompt,
            "cached_reprompt_ms_without_graph": reprompt_launched, **agreement, "encode_image_ms": encode, **peaks}


def mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    """IoU of two bool mask stacks; 1.0 when both are empty."""
    union = np.logical_or(first, second).sum()
    return 1.0 if union == 0 else float(np.logical_and(first, second).sum() / union)


def print_table(result: dict) -> None:
    print(f"{result['device']} {result['dtype']} {'tiny' if result['tiny'] else 'full-size'}; "
          f"image {result['image'][0]}x{result['image'][1]}: {result['image_tokens']} image tokens, "
          f"{result['prompt_tokens']} prompt tokens")
    print(f"{'expressions':>11} | {'one call ms/expr':>16} | {'engine ms/expr':>14} | {'speedup':>7}")
    for row in result["rows"]:
        print(f"{row['expressions']:>11} | {row['one_call_ms_per_expression']:>16.1f} | "
              f"{row['engine_ms_per_expression']:>14.1f} | {row['speedup']:>6.1f}x")
    print(f"encode image: {result['encode_image_ms']:.1f} ms; re-prompt on a cached image: {result['cached_reprompt_ms']:.1f} ms "
          f"({result['cached_reprompt_ms_without_graph']:.1f} ms without the CUDA graph; graph vs eager: [SEG] state "
          f"max |diff| {result['graph_vs_eager_seg_hidden_max_abs']:.2e}, mask IoU {result['graph_vs_eager_mask_iou']:.4f})")
    if result["peak_gib_one_call"] is not None:
        print(f"peak memory: one call {result['peak_gib_one_call']:.2f} GiB, engine at "
              f"{max(r['expressions'] for r in result['rows'])} expressions {result['peak_gib_engine']:.2f} GiB")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny architecture, a few seconds on a CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default=None, help="default: fp16 on GPU, fp32 on CPU")
    parser.add_argument("--expressions", default="1,3,10", help="expressions per image, comma-separated")
    parser.add_argument("--warmup", type=int, default=None, help="default 3 (1 with --tiny)")
    parser.add_argument("--repeats", type=int, default=None, help="default 7 (2 with --tiny)")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    torch.manual_seed(0)
    config = architecture(args.tiny)
    with torch.inference_mode():
        network = build_network(config, device, dtype)
    engine = NativeEngine(network, RandomPrompts(config.llm.vocab), cache_size=4, use_cuda_graphs=True)
    counts = [int(count) for count in args.expressions.split(",")]
    result = measure(engine, counts, args.warmup if args.warmup is not None else (1 if args.tiny else 3),
                     args.repeats if args.repeats is not None else (2 if args.tiny else 7))
    result.update(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", dtype=dtype_name, tiny=args.tiny,
                  parameters=sum(p.numel() for p in network.parameters()), torch=torch.__version__)
    print_table(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
