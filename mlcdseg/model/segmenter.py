"""`Segmenter`: a loaded model behind one thread-safe `predict` call (image + expression → mask).

As in a transformers Pipeline, `Segmenter.predict` is preprocess (decode the image, build the
prompt: mlcdseg.model.prompts) → `_call_model` (the only torch step, under a lock) →
`union_of_masks` (numpy). The model's contract is the official MLCD-Seg
``model.seg(image, prompt, tokenizer, force_seg)``, which returns 0/1 masks (N, H, W), N = 0
meaning "no target".
"""

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mlcdseg.errors import GpuOutOfMemoryError, ModelOutputError
from mlcdseg.masks.images import ImageSource, load_image
from mlcdseg.model.engines import SegmentationEngine
from mlcdseg.model.prompts import DEFAULT_PROMPT_TEMPLATE, build_prompt, check_prompt_template

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Prediction:
    """One answer: `mask` bool (H, W) at the EXIF-oriented image's size; the prompt sent.

    `has_target` is the model's own answer (it returned at least one mask); with force_seg the
    model always returns one, which may still be empty.
    """

    mask: np.ndarray
    has_target: bool
    prompt: str


def union_of_masks(masks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Union bool (H, W) of the model's bool masks (N, H, W), and whether N > 0.

    MLCD-Seg can return several masks for one expression; one expression gets one region, so
    they are merged. N = 0 gives an all-False mask. A shape other than (N, height, width) is a
    broken model contract: ModelOutputError (a RuntimeError).
    """
    if masks.ndim != 3 or masks.shape[1:] != (height, width):
        raise ModelOutputError(
            f"the model returned masks of shape {tuple(masks.shape)}; expected (N, {height}, {width}): "
            "the checkpoint or its engine is broken, try MLCDSEG_ENGINE=official or another checkpoint"
        )
    return masks.any(axis=0), masks.shape[0] > 0


class Segmenter:
    """A loaded MLCD-Seg (or offline stand-in) that turns (image, expression) into a mask.

    `predict` and `predict_many` are thread-safe: image decoding runs in parallel, the model
    calls one request at a time. Attributes: engine (mlcdseg.model.engines: official or
    native), model_version, is_stand_in, device, dtype, prompt_template, force_seg (the
    default for predict).
    """

    def __init__(
        self,
        engine: SegmentationEngine,
        *,
        model_version: str,
        device: str,
        dtype: str,
        is_stand_in: bool,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        force_seg: bool = False,
    ) -> None:
        self.engine = engine
        self.model_version = model_version
        self.device = device
        self.dtype = dtype
        self.is_stand_in = is_stand_in
        self.prompt_template = check_prompt_template(prompt_template)
        self.force_seg = force_seg
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Segmenter({self.model_version!r}, engine={self.engine.name!r}, "
            f"device={self.device!r}, dtype={self.dtype!r})"
        )

    def predict(
        self, image: ImageSource, expression: str, *, force_seg: bool | None = None
    ) -> Prediction:
        """Segment what `expression` refers to in `image` (path, encoded bytes or PIL image).

        The image is EXIF-oriented and made 8-bit RGB first (mlcdseg.masks.images.load_image); the
        mask is bool (H, W) at that size. force_seg=None uses the Segmenter's default. Raises
        ImageDecodeError, ExpressionError, GpuOutOfMemoryError (the next call works),
        ModelOutputError (masks outside the model's contract); all are MlcdsegError.
        """
        return self.predict_many(image, [expression], force_seg=force_seg)[0]

    def predict_many(
        self, image: ImageSource, expressions: Sequence[str], *, force_seg: bool | None = None
    ) -> list[Prediction]:
        """One Prediction per expression, in order, for expressions that share `image`.

        The image is decoded once and every prompt is checked before the model runs (an
        unusable expression raises ExpressionError and nothing is computed); the model calls run
        back to back under one hold of the lock. Same errors as predict.
        """
        rgb_image = load_image(image)
        prompts = [build_prompt(expression, self.prompt_template) for expression in expressions]
        use_force_seg = self.force_seg if force_seg is None else force_seg
        predictions = []
        for prompt, masks in zip(prompts, self._call_model(rgb_image, prompts, use_force_seg)):
            mask, has_target = union_of_masks(masks, rgb_image.height, rgb_image.width)
            predictions.append(Prediction(mask=mask, has_target=has_target, prompt=prompt))
        return predictions

    def _call_model(
        self, image: Image.Image, prompts: Sequence[str], force_seg: bool
    ) -> list[np.ndarray]:
        """Run the engine on the prompts under the lock; bool masks (N, H, W) on the CPU each."""
        import torch

        try:
            with self._lock:
                return self.engine.segment_many(image, prompts, force_seg)
        except torch.cuda.OutOfMemoryError:
            pass  # handled below: leaving the except block first frees the failed call's tensors
        torch.cuda.empty_cache()
        raise GpuOutOfMemoryError(
            f"the GPU ran out of memory segmenting a {image.width}×{image.height} image with "
            f"{self.model_version}; free GPU memory (other processes, fewer workers) or use a "
            "smaller image — the model stays loaded and the next request can succeed"
        )
