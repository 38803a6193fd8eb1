"""Checking the native engine against the official path on the same inputs.

For each image, every expression goes through both Segmenters: the official one call per
expression, the native one batch per image. Each case records the IoU of the two masks (both
empty counts as 1.0: the engines agree there is no target) and the model time per expression
of each side. `mlcdseg verify-engine` prints them and fails below MIN_AGREEMENT.
"""

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image

from mlcdseg.masks.codecs import mask_iou
from mlcdseg.model.segmenter import Segmenter

#: The lowest mask IoU between the engines that counts as the same answer.
MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class EngineCase:
    """One (image, expression) through both engines: agreement and model seconds of each."""

    image: str
    expression: str
    iou: float
    official_has_target: bool
    native_has_target: bool
    official_seconds: float
    native_seconds: float

    @property
    def agrees(self) -> bool:
        """Whether the masks are the same answer (IoU at least MIN_AGREEMENT)."""
        return self.iou >= MIN_AGREEMENT


def compare_engines(
    official: Segmenter,
    native: Segmenter,
    images: Iterable[tuple[str, Image.Image]],
    expressions_for: "ExpressionSource",
) -> list[EngineCase]:
    """The cases of every (named image, expression): official per expression, native batched.

    `expressions_for(name)` gives the expressions asked about an image. The native batch's
    time is shared equally by its expressions.
    """
    cases = []
    for name, image in images:
        expressions = list(expressions_for(name))
        if not expressions:
            continue
        official_results = []
        for expression in expressions:
            started = time.perf_counter()
            official_results.append((official.predict(image, expression), time.perf_counter() - started))
        started = time.perf_counter()
        native_results = native.predict_many(image, expressions)
        native_each = (time.perf_counter() - started) / len(expressions)
        for expression, (official_prediction, official_seconds), native_prediction in zip(
            expressions, official_results, native_results
        ):
            cases.append(
                EngineCase(
                    image=name,
                    expression=expression,
                    iou=mask_iou(official_prediction.mask, native_prediction.mask),
                    official_has_target=official_prediction.has_target,
                    native_has_target=native_prediction.has_target,
                    official_seconds=official_seconds,
                    native_seconds=native_each,
                )
            )
    return cases


class ExpressionSource:
    """The expressions of each image: one list for every image, or a list per image name."""

    def __init__(self, shared: Sequence[str] = (), per_image: dict[str, Sequence[str]] | None = None) -> None:
        self._shared = list(shared)
        self._per_image = per_image or {}

    def __call__(self, image_name: str) -> list[str]:
        """The expressions asked about `image_name`."""
        return list(self._per_image.get(image_name, self._shared))
