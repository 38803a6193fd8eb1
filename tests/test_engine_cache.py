"""The per-process LRU of encoded images: same content, same object; bounded; thread-safe."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcdseg.engine import load_native_engine
from mlcdseg.engine.image_cache import LruCache, image_key

FIXTURE = Path(__file__).parent / "fixtures" / "engine"


@pytest.fixture(scope="module")
def engine():
    return load_native_engine(FIXTURE / "checkpoint", cache_size=2)


def image(index: int) -> Image.Image:
    return Image.open(FIXTURE / "images" / f"image{index}.png")


def test_same_content_returns_the_same_encoded_object(engine):
    first = engine.encode_image(image(0))
    copy = Image.fromarray(np.asarray(image(0)).copy())  # another object, same pixels
    assert engine.encode_image(copy) is first
    assert engine.encode_image(image(9)) is not first


def test_different_pixels_give_different_keys():
    pixels = np.asarray(image(0)).copy()
    key = image_key(Image.fromarray(pixels))
    pixels[0, 0, 0] ^= 1
    assert image_key(Image.fromarray(pixels)) != key


def test_least_recently_used_image_is_evicted_when_full(engine):
    engine.cache.clear()
    first, second = engine.encode_image(image(0)), engine.encode_image(image(9))
    assert engine.encode_image(image(0)) is first  # 0 is now the most recent
    engine.encode_image(image(10))  # evicts 9
    assert len(engine.cache) == 2
    assert engine.encode_image(image(0)) is first
    assert engine.encode_image(image(9)) is not second


def test_uncached_encoding_leaves_the_cache_alone(engine):
    engine.cache.clear()
    engine.encode_image(image(0), use_cache=False)
    assert len(engine.cache) == 0


def test_concurrent_requests_share_one_value():
    cache: LruCache[object] = LruCache(4)
    barrier = threading.Barrier(8)
    results = []

    def create() -> object:
        return object()

    def worker() -> None:
        barrier.wait()
        results.append(cache.get_or_create("key", create))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(value) for value in results}) == 1


def test_zero_capacity_caches_nothing():
    cache: LruCache[int] = LruCache(0)
    assert cache.get_or_create("a", lambda: 1) == 1
    assert len(cache) == 0
