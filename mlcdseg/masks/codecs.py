"""Binary mask codecs: Label Studio brush RLE, COCO RLE, Label Studio polygons, and overlap counts.

Every mask is a numpy bool array of shape (H, W) in C order; integer arrays are accepted on input
(non-zero = foreground). The brush RLE bit stream itself lives in `mlcdseg.masks.brush_rle`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from mlcdseg.masks import brush_rle
from mlcdseg.errors import MaskFormatError

logger = logging.getLogger(__name__)


def _as_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """`mask` as a C-ordered bool (H, W) array with H, W >= 1; MaskFormatError otherwise."""
    array = np.asarray(mask)
    if array.ndim != 2 or array.size == 0:
        raise MaskFormatError(
            f"{name} must be a 2-D (height, width) array with pixels, got shape {array.shape}"
        )
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.integer):
            raise MaskFormatError(f"{name} must be a bool or integer array, got dtype {array.dtype}")
        array = array != 0
    return np.ascontiguousarray(array)


def _check_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) as ints; MaskFormatError unless both are positive integers."""
    sizes = (height, width)
    if not all(
        isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0 for size in sizes
    ):
        raise MaskFormatError(f"mask size must be two positive integers, got {height!r} x {width!r}")
    return int(height), int(width)


# --- Label Studio brush RLE ---------------------------------------------------------------------


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """Encode a bool (H, W) mask as Label Studio brush RLE bytes (list of ints 0..255).

    Byte for byte `label_studio_sdk.converter.brush.encode_rle` of the flattened H x W x 4 RGBA
    array that is 255 in all four channels inside the mask and 0 outside, i.e. what the SDK's
    `brush.mask2rle(mask * 255)` gives and Label Studio draws as a brush region.
    """
    return brush_rle.encode_pixels(_as_mask(mask).ravel().view(np.uint8))


def decode_brush_rle(rle: Sequence[int] | bytes | np.ndarray, height: int, width: int) -> np.ndarray:
    """Decode Label Studio brush RLE bytes (ints 0..255) to a bool (height, width) mask.

    The mask is alpha > 0, the channel label_studio_sdk's brush exporters read
    (`decode_rle(rle).reshape(H, W, 4)[..., 3]`); RGB is ignored, so editor strokes (label colour,
    any alpha) and SDK predictions (all four channels 255) both decode. Raises MaskFormatError for
    corrupt RLE or one made for another image size.
    """
    height, width = _check_size(height, width)
    return brush_rle.decode_alpha(rle, height * width).reshape(height, width)


# --- COCO RLE ------------------------------------------------------------------------------------


def encode_coco_rle(mask: np.ndarray) -> dict:
    """Encode a bool (H, W) mask as compressed COCO RLE: {"size": [H, W], "counts": str}."""
    array = _as_mask(mask)
    encoded = coco_mask.encode(np.asfortranarray(array.view(np.uint8)))
    return {"size": [int(size) for size in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def decode_coco_rle(rle: dict) -> np.ndarray:
    """Decode a COCO RLE dict (counts as str, bytes, or an uncompressed list of ints) to bool (H, W).

    The run lengths must add up to exactly H * W (pycocotools leaves a short RLE's tail as
    uninitialised memory). Decoded here from the parsed runs: pycocotools' decode warns on numpy 2.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise MaskFormatError("COCO RLE must be a dict with 'size' and 'counts'")
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise MaskFormatError(f"COCO RLE size must be [height, width], got {size!r}")
    height, width = _check_size(*size)
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError as error:
            raise MaskFormatError(f"COCO RLE counts string is not ASCII: {error}") from error
    if isinstance(counts, (bytes, bytearray)):
        run_lengths = _coco_string_counts(bytes(counts))
    elif isinstance(counts, (list, tuple)):
        if not all(isinstance(count, (int, np.integer)) and not isinstance(count, bool) for count in counts):
            raise MaskFormatError("uncompressed COCO RLE counts must be a flat list of ints")
        try:
            run_lengths = np.array(counts, dtype=np.int64)
        except OverflowError as error:
            raise MaskFormatError(f"uncompressed COCO RLE counts are out of range: {error}") from error
    else:
        raise MaskFormatError(f"COCO RLE counts must be str, bytes or a list, got {type(counts).__name__}")
    return _runs_to_mask(run_lengths, height, width)


def _runs_to_mask(run_lengths: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool (H, W) mask of COCO run lengths: alternating 0/1 runs, column-major, starting with 0."""
    if (run_lengths < 0).any():
        raise MaskFormatError("COCO RLE counts hold a negative run length")
    if int(run_lengths.sum()) != height * width:
        raise MaskFormatError(f"COCO RLE counts cover {int(run_lengths.sum())} pixels, not {height}x{width}")
    column_major = np.repeat(np.arange(run_lengths.size) % 2 == 1, run_lengths)
    return np.ascontiguousarray(column_major.reshape(width, height).T)


def _coco_string_counts(counts: bytes) -> np.ndarray:
    """Run lengths (int64) of a compressed COCO counts string, as pycocotools' rleFrString reads it.

    Each count is 5-bit groups (char - 48), low group first, 0x20 = more groups follow, 0x10 in
    the last group = negative; counts after the third are deltas to the count two places back.
    """
    groups = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if groups.size == 0:
        raise MaskFormatError("COCO RLE counts string is empty")
    if groups.min() < 0 or groups.max() > 63:
        raise MaskFormatError("COCO RLE counts string has characters outside '0'..'o'")
    is_last = (groups & 0x20) == 0
    if not is_last[-1]:
        raise MaskFormatError("COCO RLE counts string ends inside a count")
    ends = np.flatnonzero(is_last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group_lengths = ends - starts + 1
    if group_lengths.max() > 7:  # 35 bits: more than any 32-bit count needs
        raise MaskFormatError("COCO RLE counts string holds a count longer than 32 bits")
    position = np.arange(groups.size) - np.repeat(starts, group_lengths)
    values = np.add.reduceat((groups & 0x1F) << (5 * position), starts)
    negative = (groups[ends] & 0x10) != 0
    values = np.where(negative, values - (1 << (5 * group_lengths)), values)
    run_lengths = values.copy()
    run_lengths[1::2] = np.cumsum(values[1::2])
    run_lengths[2::2] = np.cumsum(values[2::2])
    return run_lengths


# --- Label Studio polygons ---------------------------------------------------------------------


def mask_to_polygons(mask: np.ndarray, min_area: float = 0.0) -> list[list[tuple[float, float]]]:
    """Outer contours of a bool (H, W) mask as Label Studio polygons: [(x%, y%), ...] each.

    Coordinates are continuous: pixel (col, row) is the square [col, col + 1] x [row, row + 1]
    and x% = 100 x / W, y% = 100 y / H. Contours are traced on the mask upsampled 2x, so each
    polygon runs a quarter pixel inside the outer edge of its boundary pixels and encloses every
    pixel centre of its component: `polygons_to_mask` gives hole-free masks back exactly, single
    pixels and 1-pixel lines included. Holes are filled (outer contours only). Polygons enclosing
    less than `min_area` square pixels are dropped.
    """
    array = _as_mask(mask)
    height, width = array.shape
    doubled = cv2.resize(array.view(np.uint8), (2 * width, 2 * height), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # Doubled pixel centre u is x = (u + 0.5) / 2 in the original continuous coordinates.
    scale = np.array([100.0 / width, 100.0 / height]) / 2
    polygons = []
    for contour in contours:
        if cv2.contourArea(contour) / 4 < min_area:
            continue
        points = (contour[:, 0, :] + 0.5) * scale
        polygons.append(list(map(tuple, points.tolist())))
    return polygons


def polygons_to_mask(
    polygons: Sequence[Sequence[tuple[float, float]]], height: int, width: int
) -> np.ndarray:
    """Rasterise Label Studio polygons (points in percent of width/height) to a bool (H, W) mask.

    The union of the polygons; a pixel is set when its centre is inside a polygon, with the same
    continuous coordinates as `mask_to_polygons` (pycocotools' polygon rasteriser, as COCO and
    REFER masks are made). Polygons with fewer than 3 points enclose no area and are ignored
    (logged); non-numeric, non-finite or absurd (beyond +-10000 %) points raise MaskFormatError.
    """
    height, width = _check_size(height, width)
    scale = np.array([width / 100.0, height / 100.0])
    flat_polygons = []
    for index, polygon in enumerate(polygons):
        try:
            points = np.asarray(polygon, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise MaskFormatError(
                f"polygon {index} must be a list of (x%, y%) number pairs: {error}"
            ) from error
        if points.size == 0:
            points = points.reshape(0, 2)
        if points.ndim != 2 or points.shape[1] != 2 or not (np.abs(points) <= 1e4).all():
            raise MaskFormatError(f"polygon {index} must be a list of finite (x%, y%) pairs within +-10000 %")
        if len(points) < 3:
            logger.warning("ignoring polygon %d with %d point(s): it encloses no area", index, len(points))
            continue
        flat_polygons.append((points * scale).ravel().tolist())
    return coco_polygons_to_mask(flat_polygons, height, width)


def coco_polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Union bool (height, width) of COCO polygons, each [x0, y0, x1, y1, ...] in pixels.

    pycocotools' polygon rasteriser (as COCO and REFER masks are made), decoded here from its RLE
    runs (pycocotools' decode warns on numpy 2). An empty list is an empty mask. pycocotools raises
    TypeError, ValueError or IndexError for malformed coordinates, and a bare Exception when the
    first polygon has fewer than 4 numbers; a 4-number first "polygon" makes it read boxes.
    """
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    encoded = coco_mask.merge(coco_mask.frPyObjects(list(polygons), height, width), intersect=False)
    return _runs_to_mask(_coco_string_counts(encoded["counts"]), height, width)


# --- Areas and overlap ---------------------------------------------------------------------------


def mask_area(mask: np.ndarray) -> int:
    """Number of foreground pixels of a bool (H, W) mask."""
    return int(np.count_nonzero(_as_mask(mask)))


class Overlap(NamedTuple):
    """Foreground pixel counts of a predicted and a reference mask of the same size."""

    intersection: int
    union: int
    predicted_area: int
    reference_area: int


def overlap(predicted: np.ndarray, reference: np.ndarray) -> Overlap:
    """Intersection, union and both areas of two same-size masks (bool, or integer: non-zero is foreground).

    MaskFormatError when either is not a 2-D mask or their sizes differ.
    """
    predicted_mask = _as_mask(predicted, "predicted mask")
    reference_mask = _as_mask(reference, "reference mask")
    if predicted_mask.shape != reference_mask.shape:
        raise MaskFormatError(
            f"masks differ in size: predicted {predicted_mask.shape}, reference {reference_mask.shape}"
        )
    intersection = int(np.count_nonzero(predicted_mask & reference_mask))
    predicted_area = int(np.count_nonzero(predicted_mask))
    reference_area = int(np.count_nonzero(reference_mask))
    return Overlap(intersection, predicted_area + reference_area - intersection, predicted_area, reference_area)


def iou_from_counts(intersection: int, union: int) -> float:
    """Intersection over union of two masks' pixel counts; 1.0 when the union is 0.

    Both masks empty is a perfect answer ("no target" given for no target), as gIoU counts it.
    """
    return 1.0 if union == 0 else intersection / union


def mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    """Intersection over union of two same-size masks (bool, or integer: non-zero is foreground).

    1.0 when both are empty (see iou_from_counts); MaskFormatError as `overlap`.
    """
    counts = overlap(first, second)
    return iou_from_counts(counts.intersection, counts.union)
