"""Native MLCD-Seg engine: each image encoded once, expressions batched against its cache.

Importing this package needs only torch, numpy, PIL and safetensors; transformers is imported
when a tokenizer is loaded.
"""

from .engine import EncodedImage, NativeEngine, Segmentation, build_network, load_native_engine
from .errors import CheckpointMismatchError, EngineError, UnsupportedCheckpointError

__all__ = [
    "CheckpointMismatchError",
    "EncodedImage",
    "EngineError",
    "NativeEngine",
    "Segmentation",
    "UnsupportedCheckpointError",
    "build_network",
    "load_native_engine",
]
