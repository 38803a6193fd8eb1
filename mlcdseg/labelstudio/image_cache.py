"""A thread-safe LRU cache of decoded images, bounded in images and in bytes of pixels.

A small compressed file can decode to a huge image (an 8000x8000 grey PNG of 62 KB is 192 MB as
RGB), so the bound that matters for memory is the bytes of decoded pixels, not the image count.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from PIL import Image

#: Default byte bound (the backend's MLCDSEG_IMAGE_CACHE_MB=512).
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024


def decoded_bytes(image: Image.Image) -> int:
    """Memory taken by a decoded image's pixels: one byte per band (8-bit RGB: 3 per pixel)."""
    return image.width * image.height * len(image.getbands())


class DecodedImageCache:
    """Images by URL, the least recently used dropped beyond `max_images` or `max_bytes`.

    An image larger than max_bytes on its own is not kept; max_images=0 keeps nothing.
    """

    def __init__(self, max_images: int = 8, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._images: OrderedDict[str, Image.Image] = OrderedDict()
        self._max_images = max_images
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, url: str) -> Image.Image | None:
        """The image kept for `url` (now the most recently used), or None."""
        with self._lock:
            image = self._images.get(url)
            if image is None:
                self._misses += 1
                return None
            self._images.move_to_end(url)
            self._hits += 1
            return image

    def put(self, url: str, image: Image.Image) -> None:
        """Keep `image` for `url`, dropping the least recently used ones beyond the bounds."""
        size = decoded_bytes(image)
        if self._max_images == 0 or size > self._max_bytes:
            return
        with self._lock:
            previous = self._images.pop(url, None)
            if previous is not None:
                self._bytes -= decoded_bytes(previous)
            self._images[url] = image
            self._bytes += size
            while len(self._images) > self._max_images or self._bytes > self._max_bytes:
                _, dropped = self._images.popitem(last=False)
                self._bytes -= decoded_bytes(dropped)

    def info(self) -> dict[str, int]:
        """Counters: hits, misses, size (images held), capacity (images), bytes (of decoded
        pixels held) and capacity_bytes."""
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "size": len(self._images),
                "capacity": self._max_images,
                "bytes": self._bytes,
                "capacity_bytes": self._max_bytes,
            }
