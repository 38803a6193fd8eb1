"""Test doubles and builders shared by the backend tests: images served from a dict, a scripted
segmenter, request bodies, and an app factory."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask
from PIL import Image

from backend.app import create_app
from backend.settings import Settings
from mlcdseg.errors import ImageFetchError
from mlcdseg.model.segmenter import Prediction

LABEL_CONFIG_DIR = Path(__file__).resolve().parents[1] / "label_config"
EXPRESSIONS_CONFIG = (LABEL_CONFIG_DIR / "expressions.xml").read_text(encoding="utf-8")
INTERACTIVE_CONFIG = (LABEL_CONFIG_DIR / "interactive.xml").read_text(encoding="utf-8")
POLYGONS_CONFIG = (LABEL_CONFIG_DIR / "polygons.xml").read_text(encoding="utf-8")
RED_BLUE_CONFIG = (
    '<View><Image name="image" value="$image"/><Text name="expression" value="$expression"/>'
    '<BrushLabels name="mask" toName="image"><Label value="red"/><Label value="blue"/></BrushLabels></View>'
)
SHAPES_URL = "/data/upload/1/shapes.png"


def shapes_image(width: int = 80, height: int = 60) -> Image.Image:
    """Dark grey RGB image with a red rectangle and a blue square (no other pure colour)."""
    pixels = np.full((height, width, 3), 60, dtype=np.uint8)
    pixels[10:30, 5:40] = (250, 10, 5)
    pixels[35:55, 50:70] = (0, 0, 255)
    return Image.fromarray(pixels, mode="RGB")


class DictImages:
    """An image source serving PIL images from a dict; unknown URLs raise ImageFetchError."""

    def __init__(self, images: dict[str, Image.Image] | None = None) -> None:
        self.images = images if images is not None else {SHAPES_URL: shapes_image()}
        self.fetched: list[str] = []

    def fetch(self, url: str) -> Image.Image:
        self.fetched.append(url)
        if url not in self.images:
            raise ImageFetchError(f"image {url}: HTTP 404 Not Found")
        return self.images[url]

    def cache_info(self) -> dict[str, int]:
        return {"hits": 0, "misses": len(self.fetched), "size": 0, "capacity": 0}


class ScriptedSegmenter:
    """A segmenter double: answers with `mask_for(image, expression)` or raises the queued errors first."""

    model_version = "scripted@1"
    is_stand_in = False

    def __init__(
        self,
        mask_for: Callable[[Image.Image, str], np.ndarray | None] | None = None,
        errors: Iterable[BaseException] = (),
    ) -> None:
        self.mask_for = mask_for or (
            lambda image, expression: np.ones((image.height, image.width), dtype=bool)
        )
        self.errors = list(errors)
        self.calls: list[str] = []

    def predict(
        self, image: Image.Image, expression: str, *, force_seg: bool | None = None
    ) -> Prediction:
        self.calls.append(expression)
        if self.errors:
            raise self.errors.pop(0)
        mask = self.mask_for(image, expression)
        if mask is None:
            return Prediction(
                mask=np.zeros((image.height, image.width), dtype=bool),
                has_target=False,
                prompt=expression,
            )
        return Prediction(mask=mask, has_target=True, prompt=expression)

    def predict_many(
        self, image: Image.Image, expressions: list[str], *, force_seg: bool | None = None
    ) -> list[Prediction]:
        return [self.predict(image, expression, force_seg=force_seg) for expression in expressions]


def make_app(segmenter: Any, images: Any = None, **settings: Any) -> Flask:
    """The backend app over `segmenter`, images from a DictImages unless given."""
    app = create_app(
        Settings(**settings), segmenter, images if images is not None else DictImages()
    )
    app.testing = True
    return app


def task(
    task_id: int, expression: str | None = None, image: str | None = SHAPES_URL
) -> dict[str, Any]:
    """A Label Studio task with the given data fields (None leaves a field out)."""
    data = {
        key: value
        for key, value in (("image", image), ("expression", expression))
        if value is not None
    }
    return {"id": task_id, "data": data, "annotations": [], "predictions": []}


def predict_body(
    tasks: list[dict[str, Any]], label_config: str = EXPRESSIONS_CONFIG, context: Any = None
) -> dict[str, Any]:
    """A /predict body shaped like the ones Label Studio 1.23.2 sends."""
    return {
        "tasks": tasks,
        "project": "1.1795754171",
        "label_config": label_config,
        "params": {"login": None, "password": None, "context": context},
    }


def textarea_context(text: str, from_name: str = "prompt") -> dict[str, Any]:
    """The context Label Studio sends when the annotator submits TextArea text."""
    return {
        "result": [
            {
                "from_name": from_name,
                "to_name": "image",
                "type": "textarea",
                "value": {"text": [text]},
            }
        ]
    }


def load_fixture(fixtures_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((fixtures_dir / name).read_text(encoding="utf-8"))
