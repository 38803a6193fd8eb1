"""Sample scenes for the demo and the end-to-end tests, drawn at run time (no binaries shipped).

Each scene is a sandy, noisy background with a few flat-coloured shapes (a car, a ball, a star…)
and referring expressions about them. Shape colours lie within 55 RGB units of a pure colour and
the background stays farther than 60 from every pure colour the expressions name, so the offline
stand-in's colour rule finds exactly the shapes of the colour an expression names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SCENE_SIZE = (480, 320)  # width, height in pixels
_BACKGROUND_BASE = np.array([176, 160, 128], dtype=np.int16)  # sand; > 60 from every pure colour used
_NOISE_AMPLITUDE = 10
_WHEEL_COLOUR = (70, 60, 60)


@dataclass(frozen=True)
class Shape:
    """One flat-coloured object: `kind` in car, ball, star, box, tree; `box` = (left, top, right, bottom)."""

    kind: str
    colour: tuple[int, int, int]
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Scene:
    """A named image recipe and the referring expressions asked about it."""

    name: str
    seed: int
    shapes: tuple[Shape, ...]
    expressions: tuple[str, ...]


@dataclass(frozen=True)
class DemoSample:
    """One demo task: an image file (relative to the folder it was written to) and one expression."""

    image_name: str
    expression: str


SCENES: tuple[Scene, ...] = (
    Scene(
        name="street",
        seed=1,
        shapes=(
            Shape("car", (225, 25, 30), (40, 170, 220, 260)),
            Shape("ball", (20, 30, 230), (330, 180, 410, 260)),
            Shape("star", (240, 230, 20), (250, 30, 340, 120)),
        ),
        expressions=("the red car", "the blue ball", "the yellow star in the sky"),
    ),
    Scene(
        name="garden",
        seed=2,
        shapes=(
            Shape("tree", (20, 235, 30), (30, 60, 150, 280)),
            Shape("box", (245, 160, 15), (300, 170, 430, 280)),
            Shape("ball", (225, 20, 225), (200, 40, 270, 110)),
        ),
        expressions=("the green thing on the left", "the orange box", "the magenta ball at the top"),
    ),
    Scene(
        name="parking",
        seed=3,
        shapes=(
            Shape("car", (25, 25, 215), (30, 60, 210, 150)),
            Shape("car", (20, 235, 230), (260, 190, 440, 280)),
            Shape("star", (235, 30, 25), (370, 30, 450, 110)),
        ),
        expressions=("the blue car at the top", "the cyan car", "the small red star"),
    ),
)


def _background(width: int, height: int, seed: int) -> np.ndarray:
    """A sand-coloured texture: soft diagonal stripes plus uniform noise; uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    stripes = (8 * np.sin((rows + columns) / 9.0))[..., None]
    noise = rng.integers(-_NOISE_AMPLITUDE, _NOISE_AMPLITUDE + 1, size=(height, width, 3))
    return np.clip(_BACKGROUND_BASE + stripes + noise, 0, 255).astype(np.uint8)


def _star_points(box: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    """The ten corners of a five-pointed star inscribed in `box`."""
    left, top, right, bottom = box
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    outer = min(right - left, bottom - top) / 2
    points = []
    for corner in range(10):
        radius = outer if corner % 2 == 0 else outer * 0.45
        angle = -math.pi / 2 + corner * math.pi / 5
        points.append((centre_x + radius * math.cos(angle), centre_y + radius * math.sin(angle)))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape) -> None:
    """Draw one shape in its flat colour (a car also gets dark wheels)."""
    left, top, right, bottom = shape.box
    if shape.kind == "car":
        width, height = right - left, bottom - top
        body_top = top + height * 0.4
        draw.rounded_rectangle((left, body_top, right, bottom - height * 0.15), radius=8, fill=shape.colour)
        draw.polygon(
            [
                (left + width * 0.25, body_top),
                (left + width * 0.35, top),
                (left + width * 0.7, top),
                (left + width * 0.8, body_top),
            ],
            fill=shape.colour,
        )
        wheel = height * 0.17
        for centre_x in (left + width * 0.22, left + width * 0.78):
            draw.ellipse((centre_x - wheel, bottom - 2 * wheel, centre_x + wheel, bottom), fill=_WHEEL_COLOUR)
    elif shape.kind == "ball":
        draw.ellipse(shape.box, fill=shape.colour)
    elif shape.kind == "star":
        draw.polygon(_star_points(shape.box), fill=shape.colour)
    elif shape.kind == "box":
        draw.rectangle(shape.box, fill=shape.colour)
    elif shape.kind == "tree":
        trunk_half = (right - left) * 0.08
        centre_x = (left + right) / 2
        draw.rectangle(
            (centre_x - trunk_half, bottom - (bottom - top) * 0.25, centre_x + trunk_half, bottom),
            fill=shape.colour,
        )
        draw.polygon(
            [
                (centre_x, top),
                (right, bottom - (bottom - top) * 0.25),
                (left, bottom - (bottom - top) * 0.25),
            ],
            fill=shape.colour,
        )
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}")


def render_scene(scene: Scene, size: tuple[int, int] = SCENE_SIZE) -> Image.Image:
    """Draw a scene as an RGB image of `size` (width, height); the same scene always gives the same pixels."""
    width, height = size
    image = Image.fromarray(_background(width, height, scene.seed), mode="RGB")
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape)
    return image


def write_demo_images(directory: str | Path, scenes: tuple[Scene, ...] = SCENES) -> list[DemoSample]:
    """Write each scene as `<name>.png` into `directory` and return one sample per (scene, expression)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for scene in scenes:
        image_name = f"{scene.name}.png"
        render_scene(scene).save(folder / image_name)
        samples.extend(DemoSample(image_name, expression) for expression in scene.expressions)
    return samples
