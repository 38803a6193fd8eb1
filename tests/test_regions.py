"""Masks to Label Studio regions and back, on the captured Label Studio results."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_studio_sdk.converter.brush import decode_rle

from mlcdseg.errors import MaskFormatError
from mlcdseg.labelstudio.label_config import MaskControl
from mlcdseg.labelstudio.regions import (
    dominant_label,
    mask_from_regions,
    region_label,
    region_image_size,
    regions_for_mask,
    textarea_text,
)

BRUSH = MaskControl(name="mask", kind="brush", to_name="image", labels=("red", "blue"))
POLYGON = MaskControl(name="outline", kind="polygon", to_name="image", labels=("car",))


def _two_boxes(height: int = 40, width: int = 60) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[5:15, 4:20] = True
    mask[25:35, 30:55] = True
    return mask


def test_brush_region_round_trips_and_has_label_studio_shape():
    mask = _two_boxes()
    (region,) = regions_for_mask(mask, BRUSH, "red")
    assert region["type"] == "brushlabels"
    assert (region["from_name"], region["to_name"]) == ("mask", "image")
    assert (region["original_height"], region["original_width"]) == (40, 60)
    assert region["value"]["brushlabels"] == ["red"]
    assert region["value"]["format"] == "rle"
    assert "score" not in region
    json.dumps(region)  # plain JSON types only
    assert np.array_equal(mask_from_regions([region], "mask", 40, 60), mask)
    sdk_rgba = np.reshape(decode_rle(region["value"]["rle"]), (40, 60, 4))
    assert np.array_equal(sdk_rgba[..., 3] > 0, mask)


def test_polygon_regions_one_per_object_and_back_to_the_mask():
    mask = _two_boxes()
    regions = regions_for_mask(mask, POLYGON, "car")
    assert len(regions) == 2
    assert all(r["type"] == "polygonlabels" and r["value"]["closed"] for r in regions)
    assert all(0 <= x <= 100 and 0 <= y <= 100 for r in regions for x, y in r["value"]["points"])
    assert np.array_equal(mask_from_regions(regions, "outline", 40, 60), mask)


def test_empty_mask_gives_no_region():
    assert regions_for_mask(np.zeros((4, 4), bool), BRUSH, "red") == []


def test_regions_of_one_control_are_merged_and_others_ignored():
    top, bottom = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    top[:3], bottom[7:] = True, True
    other = MaskControl(name="other", kind="brush", to_name="image", labels=())
    results = regions_for_mask(top, BRUSH, "red") + regions_for_mask(bottom, BRUSH, "blue")
    results += regions_for_mask(np.ones((10, 10), bool), other, None)
    assert np.array_equal(mask_from_regions(results, "mask", 10, 10), top | bottom)
    assert mask_from_regions(results, None, 10, 10).all()


def test_region_drawn_at_another_size_is_refused():
    (region,) = regions_for_mask(_two_boxes(), BRUSH, "red")
    with pytest.raises(MaskFormatError, match="60x40 image, expected 61x40"):
        mask_from_regions([region], "mask", 40, 61)


def test_non_rle_brush_and_malformed_polygon_are_refused():
    (brush,) = regions_for_mask(_two_boxes(), BRUSH, "red")
    brush["value"]["format"] = "png"
    with pytest.raises(MaskFormatError, match="only 'rle'"):
        mask_from_regions([brush], "mask", 40, 60)
    polygon = regions_for_mask(_two_boxes(), POLYGON, "car")[0]
    polygon["value"]["points"] = [[1, "x"], [2]]
    with pytest.raises(MaskFormatError, match="malformed points"):
        mask_from_regions([polygon], "outline", 40, 60)


def test_captured_export_regions_decode_like_the_sdk(fixtures_dir):
    task = json.loads((fixtures_dir / "export_snapshot_full_predictions.json").read_text())[0]
    results = task["annotations"][0]["result"]
    height, width = region_image_size(results)
    assert (height, width) == (480, 640)
    expected = np.zeros((height, width), bool)
    for region in results:
        expected |= np.reshape(decode_rle(region["value"]["rle"]), (height, width, 4))[..., 3] > 0
    merged = mask_from_regions(results, "mask", height, width)
    assert merged.any()
    assert np.array_equal(merged, expected)


def test_textarea_text_reads_the_captured_interactive_context(fixtures_dir):
    body = json.loads((fixtures_dir / "request_predict_interactive.json").read_text())
    context = body["params"]["context"]["result"]
    assert textarea_text(context, ["prompt"]) == "red"
    assert textarea_text(context) == "red"
    assert textarea_text(context, ["other"]) is None


def test_blank_textarea_is_no_text():
    blank = [{"type": "textarea", "from_name": "prompt", "value": {"text": ["  ", ""]}}]
    assert textarea_text(blank) is None
    lines = [{"type": "textarea", "from_name": "prompt", "value": {"text": ["the man", "in red "]}}]
    assert textarea_text(lines) == "the man in red"


# --- hostile result lists (exports and interactive contexts are user data) -----------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["brushlabels", "polygonlabels", "textarea", "rle", "mask", "prompt"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["type", "from_name", "value", "text", "rle", "format", "points", "id"])
        | st.sampled_from(["original_height", "original_width"]),
        children,
        max_size=5,
    ),
    max_leaves=16,
)
_REGIONS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["brushlabels", "polygonlabels", "textarea"]) | _VALUES,
            "from_name": st.sampled_from(["mask", "prompt"]) | _VALUES,
            "original_height": st.sampled_from([4]) | _VALUES,
            "original_width": st.sampled_from([6]) | _VALUES,
            "value": _VALUES,
        },
    )
    | _VALUES,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(results=_REGIONS)
def test_any_result_list_decodes_to_a_mask_or_a_mask_format_error(results: list) -> None:
    """Never AttributeError/TypeError from a region of the wrong shape (found: a string
    value, an unhashable type, a number as TextArea text)."""
    assert isinstance(textarea_text(results), (str, type(None)))
    assert isinstance(textarea_text(results, ("prompt",)), (str, type(None)))
    size = region_image_size([region for region in results if isinstance(region, dict)])
    assert size is None or all(isinstance(side, int) and side > 0 for side in size)
    try:
        mask = mask_from_regions(results, None, 4, 6)
    except MaskFormatError:
        return
    assert mask.shape == (4, 6) and mask.dtype == bool


@pytest.mark.parametrize(
    "region",
    [
        {"type": ["brushlabels"], "value": {}},
        {"type": "brushlabels", "original_height": 4, "original_width": 6, "value": "rle"},
        {"type": "polygonlabels", "original_height": 4, "original_width": 6, "value": [[0, 0]]},
    ],
)
def test_region_of_the_wrong_shape_is_skipped_or_a_mask_format_error(region: dict) -> None:
    try:
        mask = mask_from_regions([region], None, 4, 6)
    except MaskFormatError as error:
        assert "value, not an object" in str(error)
    else:
        assert not mask.any()


@pytest.mark.parametrize(
    "value",
    ["typed", ["typed"], {"text": 5}, {"text": {"typed": 1}}, {"text": [["typed"], 7]}, None],
)
def test_textarea_value_of_the_wrong_shape_has_no_text(value: object) -> None:
    assert textarea_text([{"type": "textarea", "from_name": "prompt", "value": value}]) is None


def test_a_masks_label_is_the_shared_one_else_the_one_covering_most_pixels():
    small, large = np.zeros((40, 60), bool), np.zeros((40, 60), bool)
    small[0:2, 0:2] = True
    large[10:30, 10:50] = True
    (red_small,) = regions_for_mask(small, BRUSH, "red")
    (blue_large,) = regions_for_mask(large, BRUSH, "blue")
    (red_large,) = regions_for_mask(large, BRUSH, "red")
    (unlabelled,) = regions_for_mask(small, BRUSH, None)
    assert region_label(red_small) == "red" and region_label(unlabelled) is None
    assert dominant_label([red_small, red_large, unlabelled], 40, 60) == "red"
    assert dominant_label([red_small, blue_large], 40, 60) == "blue"
    assert dominant_label([unlabelled], 40, 60) is None
    assert dominant_label([], 40, 60) is None
