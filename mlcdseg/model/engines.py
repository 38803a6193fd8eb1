"""The two ways a Segmenter can run MLCD-Seg, behind one `segment_many` call.

- `OfficialEngine`: the model card's path, one ``model.seg(image, prompt, tokenizer, force_seg)``
  call per expression on the hub's remote code (or the offline stand-in).
- `NativeEngine` of mlcdseg.engine (wrapped by `NativeEngineAdapter`): our own implementation
  of the architecture, which encodes each image once (kept in a per-process LRU keyed by the
  image's content) and runs the expressions of an image as one batch.
Both take an 8-bit RGB PIL image and the prompts, and return one bool (N, H, W) array per
prompt at the image's size (N = 0: "no target").
"""

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

OFFICIAL = "official"
NATIVE = "native"
ENGINE_CHOICES = ("auto", NATIVE, OFFICIAL)


class SegmentationEngine(Protocol):
    """What a Segmenter runs: `name` says which engine it is (reported in model_version)."""

    name: str

    def segment_many(
        self, image: Image.Image, prompts: Sequence[str], force_seg: bool
    ) -> list[np.ndarray]:
        """One bool (N, H, W) array per prompt, in order."""


class OfficialEngine:
    """model.seg per prompt, as the model card does it (torch.inference_mode, masks to the CPU)."""

    name = OFFICIAL

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def segment_many(
        self, image: Image.Image, prompts: Sequence[str], force_seg: bool
    ) -> list[np.ndarray]:
        """model.seg once per prompt."""
        import torch

        with torch.inference_mode():
            return [
                (self.model.seg(image, prompt, self.tokenizer, force_seg=force_seg) != 0).cpu().numpy()
                for prompt in prompts
            ]


class NativeEngineAdapter:
    """The native engine: the image encoded once (or found in its cache), the prompts batched."""

    name = NATIVE

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def segment_many(
        self, image: Image.Image, prompts: Sequence[str], force_seg: bool
    ) -> list[np.ndarray]:
        """encode_image (cached by content) then one batched segment call."""
        return self.engine.segment(self.engine.encode_image(image), list(prompts), force_seg)
