"""Masks to Label Studio result regions and back.

A region is one item of a Label Studio `result` list. Masks are bool numpy arrays of shape
(H, W) at the image's own size, which Label Studio records as original_height/original_width.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mlcdseg.errors import MaskFormatError
from mlcdseg.labelstudio.label_config import MASK_CONTROL_KINDS, MaskControl
from mlcdseg.masks.codecs import decode_brush_rle, encode_brush_rle, mask_to_polygons, polygons_to_mask

Region = dict[str, Any]
MASK_REGION_TYPES = frozenset(f"{kind}labels" for kind in MASK_CONTROL_KINDS.values())


def _region_frame(mask: np.ndarray, control: MaskControl) -> Region:
    """The fields every mask region shares: id, control names, type and image size."""
    height, width = mask.shape
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": control.name,
        "to_name": control.to_name,
        "type": control.region_type,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
    }


def _labels_value(control: MaskControl, label: str | None) -> dict[str, list[str]]:
    """The `<type>labels` entry of a region value; empty when the control has no label."""
    return {control.region_type: [label] if label else []}


def brush_region(mask: np.ndarray, control: MaskControl, label: str | None) -> Region:
    """One brushlabels region holding the mask as Label Studio brush RLE."""
    region = _region_frame(mask, control)
    region["value"] = {"format": "rle", "rle": encode_brush_rle(mask), **_labels_value(control, label)}
    return region


def polygon_regions(mask: np.ndarray, control: MaskControl, label: str | None) -> list[Region]:
    """One closed polygonlabels region per outer contour of the mask (percent coordinates)."""
    regions = []
    for polygon in mask_to_polygons(mask):
        region = _region_frame(mask, control)
        region["value"] = {
            "points": [[x, y] for x, y in polygon],
            "closed": True,
            **_labels_value(control, label),
        }
        regions.append(region)
    return regions


def region_label(region: Region) -> str | None:
    """The first label of a brush or polygon region (as `_labels_value` writes it), or None."""
    value = region.get("value")
    labels = value.get(region.get("type")) if isinstance(value, dict) else None
    return str(labels[0]) if isinstance(labels, list) and labels else None


def dominant_label(regions: Sequence[Region], height: int, width: int) -> str | None:
    """The label of the mask the regions draw: the one they share, else the one covering most pixels.

    None when no region carries a label. Regions are decoded (at height x width) only when their
    labels differ; MaskFormatError for a corrupt one.
    """
    labelled = [(region, region_label(region)) for region in regions]
    labels = {label for _, label in labelled if label}
    if len(labels) <= 1:
        return next(iter(labels), None)
    pixels: Counter[str] = Counter()
    for region, label in labelled:
        if label:
            pixels[label] += int(np.count_nonzero(mask_from_regions([region], None, height, width)))
    return max(sorted(pixels), key=lambda label: pixels[label])


def regions_for_mask(mask: np.ndarray, control: MaskControl, label: str | None) -> list[Region]:
    """The regions that show the mask in the control; none for an empty mask."""
    if not mask.any():
        return []
    if control.kind == "brush":
        return [brush_region(mask, control, label)]
    return polygon_regions(mask, control, label)


def mask_regions(results: Iterable[Region], control_name: str | None = None) -> list[Region]:
    """The brush and polygon regions of `results`, of one control or (None) of any."""
    return [
        region
        for region in results
        if isinstance(region, dict)
        and isinstance(region.get("type"), str)  # a list here would be unhashable
        and region["type"] in MASK_REGION_TYPES
        and (control_name is None or region.get("from_name") == control_name)
    ]


def region_image_size(results: Iterable[Region]) -> tuple[int, int] | None:
    """(height, width) of the image as the first mask region records it, or None."""
    for region in mask_regions(results):
        height, width = region.get("original_height"), region.get("original_width")
        if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
            return height, width
    return None


def mask_from_regions(
    results: Iterable[Region], control_name: str | None, height: int, width: int
) -> np.ndarray:
    """Union of the mask regions of a control as a bool (height, width) mask.

    Raises MaskFormatError for a region recorded at another image size, an unknown brush
    format or a corrupt encoding.
    """
    mask = None
    for region in mask_regions(results, control_name):
        region_size = (region.get("original_height"), region.get("original_width"))
        if region_size != (height, width):
            raise MaskFormatError(
                f"region {region.get('id')!r} was drawn on a {region_size[1]}x{region_size[0]} image, "
                f"expected {width}x{height}"
            )
        region_mask = _region_mask(region, height, width)
        if mask is None:
            mask = region_mask  # a fresh array: the usual single region needs no copy
        else:
            mask |= region_mask
    return mask if mask is not None else np.zeros((height, width), dtype=bool)


def _region_mask(region: Region, height: int, width: int) -> np.ndarray:
    """The bool mask of one brush or polygon region."""
    value = region.get("value") or {}
    if not isinstance(value, dict):
        raise MaskFormatError(
            f"region {region.get('id')!r} has a {type(value).__name__} value, not an object"
        )
    if region["type"] == "brushlabels":
        if value.get("format") != "rle" or not isinstance(value.get("rle"), list):
            raise MaskFormatError(
                f"brush region {region.get('id')!r} has format {value.get('format')!r}; only 'rle' is supported"
            )
        return decode_brush_rle(value["rle"], height, width)
    points = value.get("points")
    if not isinstance(points, list):
        raise MaskFormatError(f"polygon region {region.get('id')!r} has no points")
    return polygons_to_mask([_as_points(points, region)], height, width)


def _as_points(points: Sequence[Any], region: Region) -> list[tuple[float, float]]:
    """Polygon points as (x%, y%) float pairs; MaskFormatError for anything else."""
    try:
        return [(float(x), float(y)) for x, y in points]
    except (TypeError, ValueError) as error:
        raise MaskFormatError(f"polygon region {region.get('id')!r} has malformed points") from error


def textarea_text(results: Iterable[Region], control_names: Sequence[str] = ()) -> str | None:
    """The text typed into a TextArea (of the named controls, or any), or None when blank."""
    for region in results:
        if not isinstance(region, dict) or region.get("type") != "textarea":
            continue
        if control_names and region.get("from_name") not in control_names:
            continue
        value = region.get("value")
        text = value.get("text") if isinstance(value, dict) else None
        if isinstance(text, str):
            lines = [text]
        elif isinstance(text, list):  # Label Studio sends a list of lines; non-strings are ignored
            lines = [line for line in text if isinstance(line, str)]
        else:
            continue
        joined = " ".join(line.strip() for line in lines).strip()
        if joined:
            return joined
    return None
