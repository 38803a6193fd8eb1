"""Native MLCD-Seg engine: each image encoded once, expressions batched against its cache.

Importing this package needs only torch, numpy, PIL and safetensors; transformers is imported
when a tokenizer is loaded.
"""

from .engine import EncodedImage, NativeEngine, Segmentation, build_network, load_native_engine

__all__ = [
    "EncodedImage",
    "NativeEngine",
    "Segmentation",
    "build_network",
    "load_native_engine",
]
