"""The offline stand-in's transparent segmentation rule: the pixels of the first colour named.

Numpy only, so tests and other modules can use it without torch. Not a segmentation model.
"""

import re

import numpy as np

#: The pure colour (R, G, B) of every colour word the rule understands.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "orange": (255, 165, 0),
    "purple": (128, 0, 128),
    "pink": (255, 192, 203),
    "brown": (165, 42, 42),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
}

#: A pixel belongs to a colour when its Euclidean RGB distance to the pure colour is at most this.
MAX_COLOUR_DISTANCE = 60.0


def first_colour_word(text: str) -> str | None:
    """The first whole word of `text` (case-insensitive) that names a colour in COLOURS, else None."""
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in COLOURS:
            return word
    return None


def colour_rule_mask(
    rgb: np.ndarray, text: str, max_distance: float = MAX_COLOUR_DISTANCE
) -> np.ndarray | None:
    """Mask of the pixels of the first colour named in `text`, or None when there is no target.

    rgb: uint8 array (H, W, 3). Returns a bool array (H, W) with True where the pixel lies within
    `max_distance` (Euclidean, RGB units 0-255) of the named pure colour; None when `text` names
    no colour or no pixel is that colour.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB array of shape (H, W, 3), got {rgb.shape}")
    colour = first_colour_word(text)
    if colour is None:
        return None
    difference = rgb.astype(np.int32) - np.array(COLOURS[colour], dtype=np.int32)
    squared_distance = np.einsum("hwc,hwc->hw", difference, difference)
    mask = squared_distance <= max_distance * max_distance
    return mask if mask.any() else None
