"""RefSegMeter against hand-computed RefCOCO figures."""

import numpy as np
import pytest

from mlcdseg.errors import MaskFormatError
from mlcdseg.evaluation.metrics import METRIC_KEYS, RefSegMeter


def _mask(rows: list[str]) -> np.ndarray:
    """A bool mask drawn as strings of '#' (on) and '.' (off)."""
    return np.array([[pixel == "#" for pixel in row] for row in rows])


def test_single_sample_iou_and_precision_thresholds():
    predicted = _mask(["##..", "##..", "....", "...."])  # 4 px
    reference = _mask(["###.", "###.", "....", "...."])  # 6 px, overlap 4 -> IoU 4/6
    meter = RefSegMeter()
    meter.update(predicted, reference)
    result = meter.compute()
    assert result["cIoU"] == pytest.approx(4 / 6)
    assert result["gIoU"] == pytest.approx(4 / 6)
    assert result["precision@0.5"] == 1.0
    assert result["precision@0.6"] == 1.0
    assert result["precision@0.7"] == 0.0
    assert result["T-acc"] == 1.0
    assert result["N-acc"] is None
    assert result["samples"] == 1
    assert result["no_target_samples"] == 0
    assert set(result) == set(METRIC_KEYS)


def test_ciou_pools_pixels_while_giou_averages_samples():
    meter = RefSegMeter()
    # sample 1: I=1, U=4 (IoU .25); sample 2: I=8, U=8 (IoU 1)
    meter.update(_mask(["#...", "...."]), _mask(["####", "...."]))
    meter.update(_mask(["####", "####"]), _mask(["####", "####"]))
    result = meter.compute()
    assert result["cIoU"] == pytest.approx(9 / 12)
    assert result["gIoU"] == pytest.approx((0.25 + 1.0) / 2)
    assert result["precision@0.9"] == 0.5


def test_empty_prediction_on_empty_target_scores_one():
    empty = np.zeros((3, 5), dtype=bool)
    meter = RefSegMeter()
    meter.update(empty, empty)
    result = meter.compute()
    assert result["gIoU"] == 1.0
    assert result["precision@0.9"] == 1.0
    assert result["N-acc"] == 1.0
    assert result["T-acc"] is None
    assert result["cIoU"] is None  # no pixel anywhere: pooled IoU undefined
    assert result["no_target_samples"] == 1


def test_no_target_accuracy_counts_masks_predicted_on_empty_references():
    empty = np.zeros((2, 2), dtype=bool)
    meter = RefSegMeter()
    meter.update(empty, empty)  # correct "no target"
    meter.update(_mask(["#.", ".."]), empty)  # hallucinated target: IoU 0
    meter.update(empty, _mask(["##", ".."]))  # missed target: IoU 0
    meter.update(_mask(["##", ".."]), _mask(["##", ".."]))  # found target: IoU 1
    result = meter.compute()
    assert result["N-acc"] == 0.5
    assert result["T-acc"] == 0.5
    assert result["gIoU"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert result["cIoU"] == pytest.approx(2 / (0 + 1 + 2 + 2))


def test_merged_meters_equal_one_meter_over_all_samples():
    rng = np.random.default_rng(7)
    pairs = [(rng.random((9, 11)) > 0.5, rng.random((9, 11)) > 0.6) for _ in range(20)]
    whole, left, right = RefSegMeter(), RefSegMeter(), RefSegMeter()
    for index, (predicted, reference) in enumerate(pairs):
        whole.update(predicted, reference)
        (left if index % 3 else right).update(predicted, reference)
    left.merge(right)
    assert left.compute() == pytest.approx(whole.compute())


def test_update_counts_equals_update_from_masks():
    predicted, reference = _mask(["##.", "#.."]), _mask([".##", "..#"])
    from_masks, from_counts = RefSegMeter(), RefSegMeter()
    from_masks.update(predicted, reference)
    from_counts.update_counts(intersection=1, union=5, predicted_area=3, reference_area=3)
    assert from_masks.compute() == from_counts.compute()


def test_inconsistent_counts_are_refused():
    with pytest.raises(ValueError, match="inconsistent"):
        RefSegMeter().update_counts(intersection=5, union=3, predicted_area=4, reference_area=4)


def test_masks_of_different_sizes_are_refused():
    with pytest.raises(MaskFormatError, match="differ in size"):
        RefSegMeter().update(np.zeros((2, 3), bool), np.zeros((3, 2), bool))


def test_reset_forgets_samples():
    meter = RefSegMeter()
    meter.update(_mask(["#"]), _mask(["#"]))
    meter.reset()
    assert meter.compute()["samples"] == 0
    assert meter.compute()["gIoU"] is None
