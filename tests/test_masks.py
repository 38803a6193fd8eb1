"""Mask codecs against their references: label-studio-sdk's brush RLE, pycocotools, Label Studio polygons."""

import json

import cv2
import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from pycocotools import mask as coco_mask

from mlcdseg.errors import MaskFormatError
from mlcdseg.masks.codecs import (
    decode_brush_rle,
    decode_coco_rle,
    encode_brush_rle,
    encode_coco_rle,
    Overlap,
    iou_from_counts,
    mask_area,
    mask_iou,
    mask_to_polygons,
    overlap,
    polygons_to_mask,
)


def _sdk_encode(mask: np.ndarray) -> list[int]:
    """The SDK's brush RLE of a bool mask: its own mask->rle helper on mask * 255."""
    return mask2rle(mask.astype(np.uint8) * 255)


def _sdk_decode(rle: list[int], height: int, width: int) -> np.ndarray:
    """The mask label-studio-sdk's brush exporters read: alpha channel > 0."""
    return np.reshape(decode_rle(rle), (height, width, 4))[..., 3] > 0


def _brush_strokes(height: int, width: int, seed: int) -> np.ndarray:
    """A brush-like mask: a few thick anti-aliased strokes and filled disks."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((height, width), np.uint8)
    for _ in range(4):
        points = rng.uniform([0, 0], [width, height], (5, 2)).astype(np.int32)
        thickness = int(rng.integers(2, max(3, min(height, width) // 10)))
        cv2.polylines(canvas, [points], False, 1, thickness=thickness, lineType=cv2.LINE_AA)
    for _ in range(2):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(canvas, centre, int(rng.integers(1, max(2, min(height, width) // 4))), 1, -1)
    return canvas > 0


def _runs_mask(run_lengths: list[int], first: bool = False) -> np.ndarray:
    """A (1, N) mask of alternating runs of the given lengths."""
    values = np.arange(len(run_lengths)) % 2 == (0 if first else 1)
    return np.repeat(values, run_lengths)[None, :]


def _rle_pack(words, word_size=8, count_sizes=(3, 4, 8, 16), declared_words=None) -> list[int]:
    """Slow reference rle-pack writer that, like Label Studio's editor, groups single values into literals."""
    header = f"{len(words) if declared_words is None else declared_words:032b}{word_size - 1:05b}"
    bits = [header] + [f"{size - 1:04b}" for size in count_sizes]
    longest = 1 << count_sizes[-1]
    start = 0
    while start < len(words):
        end = start + 1
        while end < len(words) and words[end] == words[start] and end - start < longest:
            end += 1
        if end - start == 1:  # a literal group: up to the next repeated pair
            while (
                end < len(words)
                and end - start < longest
                and not (end + 1 < len(words) and words[end] == words[end + 1])
            ):
                end += 1
        size_class = next(c for c, size in enumerate(count_sizes) if end - start <= 1 << size)
        size = count_sizes[size_class]
        is_run = end - start > 1 and len(set(words[start:end])) == 1
        stored = words[start : start + 1] if is_run else words[start:end]
        bits.append(f"{int(is_run)}{size_class:02b}{end - start - 1:0{size}b}")
        bits.extend(f"{value:0{word_size}b}" for value in stored)
        start = end
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[index : index + 8], 2) for index in range(0, len(stream), 8)]


def _assert_brush_codec_matches_sdk(mask: np.ndarray) -> None:
    height, width = mask.shape
    ours, sdk = encode_brush_rle(mask), _sdk_encode(mask)
    assert ours == sdk
    decoded = decode_brush_rle(sdk, height, width)
    assert decoded.dtype == bool and decoded.shape == (height, width) and decoded.flags.c_contiguous
    assert np.array_equal(decoded, mask)
    assert np.array_equal(_sdk_decode(ours, height, width), mask)


@pytest.mark.parametrize("shape", [(16, 16), (7, 13), (1, 999), (999, 1), (33, 64)])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_brush_codec_matches_sdk_on_random_masks(shape, density):
    rng = np.random.default_rng([*shape, int(density * 100)])
    _assert_brush_codec_matches_sdk(rng.random(shape) < density)


@pytest.mark.parametrize("seed", range(4))
def test_brush_codec_matches_sdk_on_brush_strokes(seed):
    _assert_brush_codec_matches_sdk(_brush_strokes(120, 160, seed))


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((5, 7), bool),
        np.ones((5, 7), bool),
        np.zeros((1, 1), bool),
        np.ones((1, 1), bool),
        np.eye(7, 13, dtype=bool),
        # runs of 1..3 pixels (4..12 words) and the size-class limits 8, 16 and 256 words
        _runs_mask([1, 2, 3, 2, 1, 4, 5, 64, 65, 63, 1]),
        # 65536 words fill one record; 65540 words split into 65536 + 4; 100000 px into 7 records
        _runs_mask([16384, 3, 16385, 1, 100000], first=True),
        np.ones((300, 300), bool),
    ],
    ids=["empty", "full", "1x1-empty", "1x1-full", "diagonal", "class-limits", "chunked-runs", "full-300"],
)
def test_brush_codec_matches_sdk_on_edge_masks(mask):
    _assert_brush_codec_matches_sdk(mask)


def test_brush_codec_matches_sdk_on_a_4k_brush_mask():
    _assert_brush_codec_matches_sdk(_brush_strokes(2160, 3840, seed=7))


def test_brush_encode_accepts_integer_masks_and_refuses_others():
    labels = np.array([[0, 1, 2], [3, 0, 0]], dtype=np.int32)
    assert encode_brush_rle(labels) == encode_brush_rle(labels != 0)
    for bad in (np.zeros((2, 3, 4), bool), np.zeros((0, 5), bool), np.zeros((2, 2), np.float32)):
        with pytest.raises(MaskFormatError):
            encode_brush_rle(bad)


def test_captured_label_studio_rles_decode_like_the_sdk_and_re_encode_identically(fixtures_dir):
    tasks = json.loads((fixtures_dir / "export_snapshot_full_predictions.json").read_text())
    regions = [
        region
        for task in tasks
        for item in task.get("annotations", []) + task.get("predictions", [])
        for region in item["result"]
        if region["type"] == "brushlabels"
    ]
    assert len(regions) == 8
    for region in regions:
        rle, height, width = region["value"]["rle"], region["original_height"], region["original_width"]
        mask = decode_brush_rle(rle, height, width)
        assert mask.any()
        assert np.array_equal(mask, _sdk_decode(rle, height, width))
        assert encode_brush_rle(mask) == rle


def test_brush_decode_reads_alpha_of_editor_strokes_with_literal_records():
    # A Label Studio editor stroke: label colour in RGB, anti-aliased alpha, RGB noise outside.
    rng = np.random.default_rng(3)
    height, width = 24, 31
    stroke = _brush_strokes(height, width, seed=5)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(stroke, rng.integers(1, 256, (height, width)), 0)
    rgba[5, 5] = (255, 255, 255, 0)  # colour without alpha is background
    rle = _rle_pack(rgba.ravel().tolist())
    assert np.array_equal(decode_brush_rle(rle, height, width), rgba[..., 3] > 0)
    assert np.array_equal(decode_brush_rle(rle, height, width), _sdk_decode(rle, height, width))


@pytest.mark.parametrize(
    "word_size, count_sizes", [(4, (2, 5, 9, 12)), (8, (1, 2, 3, 16)), (5, (16, 16, 16, 16))]
)
def test_brush_decode_follows_the_header_word_and_count_sizes(word_size, count_sizes):
    rng = np.random.default_rng(word_size)
    mask = _brush_strokes(20, 30, seed=word_size)
    alpha_value = (1 << word_size) - 1
    rgba = np.zeros((20, 30, 4), np.int64)
    rgba[..., :3] = rng.integers(0, alpha_value + 1, (20, 30, 3))
    rgba[..., 3] = np.where(mask, alpha_value, 0)
    rle = _rle_pack(rgba.ravel().tolist(), word_size, count_sizes)
    assert np.array_equal(decode_brush_rle(rle, 20, 30), mask)
    assert np.array_equal(_sdk_decode(rle, 20, 30), mask)


def test_brush_decode_handles_words_wider_than_a_byte():
    mask = _brush_strokes(10, 12, seed=1)
    rgba = np.zeros((10, 12, 4), np.int64)
    rgba[..., 3] = np.where(mask, 70000, 0)
    rgba[..., 0] = 300
    rle = _rle_pack(rgba.ravel().tolist(), word_size=17)
    assert np.array_equal(decode_brush_rle(rle, 10, 12), mask)


def test_brush_decode_accepts_bytes_arrays_and_trailing_padding():
    mask = _brush_strokes(30, 40, seed=2)
    rle = encode_brush_rle(mask)
    assert np.array_equal(decode_brush_rle(bytes(rle), 30, 40), mask)
    assert np.array_equal(decode_brush_rle(np.array(rle, dtype=np.int64), 30, 40), mask)
    assert np.array_equal(decode_brush_rle(tuple(rle), 30, 40), mask)
    assert np.array_equal(decode_brush_rle(rle + [0, 0, 0], 30, 40), mask)  # ignored, as the SDK does


def _valid_rle() -> list[int]:
    return encode_brush_rle(_brush_strokes(30, 40, seed=4))


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda rle: rle[: len(rle) // 2], "truncated"),
        (lambda rle: rle[:-2], "truncated"),
        (lambda rle: rle[:5], "shorter than its 53-bit header"),
        (lambda rle: [], "shorter than its 53-bit header"),
        (lambda rle: rle + [0] * 20000, "far longer"),
        (lambda rle: rle[:10] + [1.5] + rle[11:], "list of ints 0..255"),
        (lambda rle: rle[:10] + ["7"] + rle[11:], "list of ints 0..255"),
        (lambda rle: rle[:10] + [None] + rle[11:], "list of ints 0..255"),
        (lambda rle: rle[:10] + [256] + rle[11:], "list of ints 0..255"),
        (lambda rle: rle[:10] + [-1] + rle[11:], "list of ints 0..255"),
        (lambda rle: np.array(rle) * 2, "0..255"),
        (lambda rle: np.array(rle, dtype=float), "1-D array of ints"),
        (lambda rle: "".join(map(chr, rle)), "list of ints"),
        (lambda rle: 12, "list of ints"),
        (lambda rle: None, "list of ints"),
    ],
)
def test_corrupt_brush_rle_raises_mask_format_error(corrupt, match):
    with pytest.raises(MaskFormatError, match=match):
        decode_brush_rle(corrupt(_valid_rle()), 30, 40)


def test_brush_rle_of_another_size_or_overrunning_its_count_is_refused():
    with pytest.raises(MaskFormatError, match="1209 RGBA pixels need 4836"):
        decode_brush_rle(_valid_rle(), 31, 39)
    overrun = _rle_pack([255] * 12, declared_words=8)  # a 12-word run in a 2-pixel stream
    with pytest.raises(MaskFormatError, match="overrun"):
        decode_brush_rle(overrun, 1, 2)
    for height, width in [(0, 40), (-30, 40), (30.0, 40), ("30", 40), (True, 40)]:
        with pytest.raises(MaskFormatError, match="positive integers"):
            decode_brush_rle(_valid_rle(), height, width)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (1, 999), (64, 48)])
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_coco_rle_round_trips_and_matches_pycocotools(shape, density):
    rng = np.random.default_rng(int(density * 10) + shape[1])
    mask = rng.random(shape) < density
    rle = encode_coco_rle(mask)
    reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle == {"size": list(shape), "counts": reference["counts"].decode("ascii")}
    json.dumps(rle)
    assert np.array_equal(decode_coco_rle(rle), mask)
    assert np.array_equal(decode_coco_rle({"size": rle["size"], "counts": rle["counts"].encode()}), mask)
    column_major = mask.T.ravel()
    changes = np.flatnonzero(column_major[1:] != column_major[:-1]) + 1
    counts = np.diff(np.concatenate(([0], changes, [mask.size]))).tolist()
    uncompressed = {"size": list(shape), "counts": ([0] if column_major[0] else []) + counts}
    assert np.array_equal(decode_coco_rle(uncompressed), mask)


def test_coco_rle_decodes_large_counts_and_negative_deltas():
    mask = np.zeros((300, 500), bool)
    mask[:, 10:400] = True  # long runs whose deltas to the count two back are negative
    mask[150:152, 420:430] = True
    assert np.array_equal(decode_coco_rle(encode_coco_rle(mask)), mask)


@pytest.mark.parametrize(
    "rle, match",
    [
        ({"size": [4, 5], "counts": "zz"}, "outside '0'..'o'"),
        ({"size": [4, 5], "counts": ""}, "empty"),
        ({"size": [4, 5], "counts": "52200"}, "cover 13 pixels"),
        ({"size": [4, 5], "counts": "5220003l"}, "ends inside a count"),
        ({"size": [4, 5], "counts": "5220003\u00e9"}, "not ASCII"),
        ({"size": [4, 5], "counts": [3, 2]}, "cover 5 pixels"),
        ({"size": [4, 5], "counts": [3, 2, 100]}, "cover 105 pixels"),
        ({"size": [4, 5], "counts": [3, -2, 19]}, "negative"),
        ({"size": [4, 5], "counts": [3.0, 17]}, "list of ints"),
        ({"size": [4, 5], "counts": 20}, "str, bytes or a list"),
        ({"size": [4, "5"], "counts": [20]}, "positive integers"),
        ({"size": [20], "counts": [20]}, r"\[height, width\]"),
        ({"counts": [20]}, "'size' and 'counts'"),
        ([4, 5], "'size' and 'counts'"),
    ],
)
def test_corrupt_coco_rle_raises_mask_format_error(rle, match):
    with pytest.raises(MaskFormatError, match=match):
        decode_coco_rle(rle)


def _holes_filled(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region not 4-connected to the border filled."""
    outside = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)
    return (outside != 2)[1:-1, 1:-1]


def test_polygons_of_a_rectangle_run_a_quarter_pixel_inside_its_pixels_and_round_trip():
    mask = np.zeros((97, 131), bool)
    mask[10:50, 20:90] = True
    (polygon,) = mask_to_polygons(mask)
    assert all(isinstance(x, float) and isinstance(y, float) for x, y in polygon)
    xs, ys = np.array(polygon).T
    assert np.allclose([xs.min(), xs.max()], np.array([20.25, 89.75]) * 100 / 131)
    assert np.allclose([ys.min(), ys.max()], np.array([10.25, 49.75]) * 100 / 97)
    assert np.array_equal(polygons_to_mask([polygon], 97, 131), mask)


@pytest.mark.parametrize("seed", range(12))
def test_polygons_round_trip_exactly_up_to_filled_holes(seed):
    mask = _brush_strokes(50 + seed, 70, seed)
    mask[seed, seed + 3] = True  # a lone pixel, and a 1-pixel line
    mask[-2, 10:30] = True
    polygons = mask_to_polygons(mask)
    assert all(0 <= x <= 100 and 0 <= y <= 100 for polygon in polygons for x, y in polygon)
    assert np.array_equal(polygons_to_mask(polygons, *mask.shape), _holes_filled(mask))


def test_polygons_of_a_disk_round_trip_and_holes_are_filled():
    rows, columns = np.mgrid[:80, :90]
    distance = np.hypot(rows - 40, columns - 45)
    disk, ring = distance <= 30, (distance <= 30) & (distance > 12)
    assert np.array_equal(polygons_to_mask(mask_to_polygons(disk), 80, 90), disk)
    assert np.array_equal(polygons_to_mask(mask_to_polygons(ring), 80, 90), disk)


def test_mask_to_polygons_gives_one_polygon_per_component_and_honours_min_area():
    mask = np.zeros((40, 60), bool)
    mask[5:15, 4:20] = True
    mask[25:35, 30:55] = True
    mask[38, 2] = True
    assert len(mask_to_polygons(mask)) == 3
    assert len(mask_to_polygons(mask, min_area=1)) == 2
    assert mask_to_polygons(np.zeros((4, 4), bool)) == []


def test_label_studio_polygon_fills_the_pixels_whose_centres_it_encloses():
    square = [(10.0, 10.0), (50.0, 10.0), (50.0, 50.0), (10.0, 50.0)]
    expected = np.zeros((100, 100), bool)
    expected[10:50, 10:50] = True
    assert np.array_equal(polygons_to_mask([square], 100, 100), expected)
    # on a 200 x 50 image the same percentages are 80 x 20 pixels
    assert mask_area(polygons_to_mask([square], 50, 200)) == 80 * 20


def test_overlapping_polygons_are_united_and_degenerate_ones_ignored():
    first = [(10, 10), (60, 10), (60, 60), (10, 60)]
    second = [(35, 35), (85, 35), (85, 85), (35, 85)]
    mask = polygons_to_mask([first, second, [(1, 1), (90, 90)], []], 100, 100)
    assert mask_area(mask) == 2 * 50 * 50 - 25 * 25
    assert not polygons_to_mask([], 3, 4).any()


@pytest.mark.parametrize(
    "polygon",
    [
        [(1, "x"), (2, 3), (4, 5)],
        [(1, 2, 3), (4, 5, 6), (7, 8, 9)],
        [(float("nan"), 1), (2, 3), (4, 5)],
        [(1e9, 0), (2, 3), (4, 5)],
    ],
)
def test_malformed_polygon_raises_mask_format_error(polygon):
    with pytest.raises(MaskFormatError):
        polygons_to_mask([polygon], 10, 10)


def test_area_overlap_and_iou_of_two_rectangles_worked_by_hand():
    predicted, reference = np.zeros((6, 8), bool), np.zeros((6, 8), np.uint8)
    predicted[1:4, 1:5] = True  # rows 1-3, columns 1-4: 3 × 4 = 12 pixels
    reference[2:6, 3:8] = 1  # rows 2-5, columns 3-7: 4 × 5 = 20 pixels
    assert mask_area(predicted) == 12 and mask_area(reference) == 20
    # shared: rows 2-3, columns 3-4 = 4 pixels; union 12 + 20 - 4 = 28
    assert overlap(predicted, reference) == Overlap(intersection=4, union=28, predicted_area=12, reference_area=20)
    assert mask_iou(predicted, reference) == pytest.approx(1 / 7)
    assert iou_from_counts(4, 28) == pytest.approx(1 / 7)
    with pytest.raises(MaskFormatError, match="differ in size"):
        mask_iou(predicted, reference[:, :7])
    with pytest.raises(MaskFormatError, match="2-D"):
        mask_area(np.zeros((2, 2, 2), bool))


def test_two_empty_masks_have_iou_one_and_an_empty_against_a_drawn_mask_zero():
    empty, drawn = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    drawn[:2] = True
    assert mask_iou(empty, empty) == 1.0  # both say "no target": as gIoU counts it
    assert iou_from_counts(0, 0) == 1.0
    assert mask_iou(drawn, empty) == 0.0
    assert mask_iou(drawn, np.ones((4, 4), bool)) == 0.5
