"""A bounded, thread-safe LRU of encoded images keyed by a hash of the image content."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

from PIL import Image

Value = TypeVar("Value")


def image_key(image: Image.Image) -> str:
    """SHA-256 of the image's mode, size and pixels: equal content, equal key."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class LruCache(Generic[Value]):
    """At most `capacity` values; the least recently used is evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, Value] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get_or_create(self, key: str, create: Callable[[], Value]) -> Value:
        """The cached value for `key`, or `create()` stored under it (computed outside the lock)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = create()
        with self._lock:
            if key in self._items:  # another thread stored it meanwhile: keep one object
                self._items.move_to_end(key)
                return self._items[key]
            if self.capacity:
                self._items[key] = value
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
