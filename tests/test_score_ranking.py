"""The score-ranking figures against a case worked by hand, scipy, and every order of tied scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from mlcdseg.evaluation.score_ranking import (
    ScoreRankingMeter,
    auroc_of_low_score,
    found_in_lowest,
    ranking_figures,
    review_curve,
    spearman,
)

# The case worked by hand (score, IoU):
#   A 0.2 0.30  redrawn, needs a fix
#   B 0.4 0.95  kept
#   C 0.4 0.60  needs a fix
#   D 0.4 0.40  redrawn, needs a fix
#   E 0.9 1.00  kept
HAND_SCORES = np.array([0.2, 0.4, 0.4, 0.4, 0.9])
HAND_IOUS = np.array([0.30, 0.95, 0.60, 0.40, 1.00])


def test_auroc_counts_ties_as_half_in_the_hand_worked_case():
    # redrawn (A, D) against the rest (B, C, E): A scores below all three (3); D ties B and C (1/2 each)
    # and scores below E (1): 5 of the 6 pairs
    figures = ranking_figures(HAND_SCORES, HAND_IOUS)
    assert figures["auroc"] == {"value": pytest.approx(5 / 6), "reason": None}


def test_spearman_uses_average_ranks_in_the_hand_worked_case():
    # score ranks 1, 3, 3, 3, 5; IoU ranks 1, 4, 3, 2, 5; centred: (-2, 0, 0, 0, 2) . (-2, 1, 0, -1, 2) = 8
    # over sqrt(8 * 10)
    assert ranking_figures(HAND_SCORES, HAND_IOUS)["spearman"]["value"] == pytest.approx(8 / np.sqrt(80))


def test_review_curve_of_the_hand_worked_case_takes_a_tie_at_the_cut_in_proportion():
    curve = ranking_figures(HAND_SCORES, HAND_IOUS)["review_curve"]
    assert curve["needs_fixing"] == 3  # A, C, D
    # 10 % and 20 % of 5: ceil(0.5) = ceil(1) = 1 sample, A: 1 of 3; 50 %: 3 samples, A and two of the
    # tie B, C, D, which holds 2 of the 3 to fix: (1 + 2 * 2/3) / 3
    assert [(p["percent"], p["reviewed"], p["random"]) for p in curve["points"]] == [(10, 1, 0.2), (20, 1, 0.2), (50, 3, 0.6)]
    found = [p["found"]["value"] for p in curve["points"]]
    assert found == pytest.approx([1 / 3, 1 / 3, (1 + 4 / 3) / 3])


def test_iou_by_score_bin_of_the_hand_worked_case():
    bins = ranking_figures(HAND_SCORES, HAND_IOUS)["iou_by_score_bin"]
    assert len(bins) == 10 and (bins[0]["from"], bins[-1]["to"]) == (0.0, 1.0)
    assert [(b["samples"], b["mean_iou"]) for b in bins if b["samples"]] == [
        (1, pytest.approx(0.30)), (3, pytest.approx((0.95 + 0.60 + 0.40) / 3)), (1, pytest.approx(1.0))]
    assert bins[9]["samples"] == 1 and bins[1]["mean_iou"] is None
    assert ranking_figures(np.array([1.0, 0.0]), np.array([0.5, 0.5]))["iou_by_score_bin"][9]["samples"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_spearman_equal_scipy_on_data_full_of_ties(seed):
    generator = np.random.default_rng(seed)
    scores = np.round(generator.random(300), 1)  # 11 distinct values: many ties
    ious = np.clip(np.round(scores * 0.6 + generator.normal(0, 0.25, 300), 2), 0, 1)
    redrawn = ious < 0.5
    # Mann-Whitney's U of "1 - score" of the redrawn against the kept, over the pairs, is the AUROC
    u_statistic = stats.mannwhitneyu(1 - scores[redrawn], 1 - scores[~redrawn]).statistic
    expected_auroc = u_statistic / (redrawn.sum() * (~redrawn).sum())
    figures = ranking_figures(scores, ious)
    assert figures["auroc"]["value"] == pytest.approx(expected_auroc, abs=1e-12)
    assert figures["spearman"]["value"] == pytest.approx(stats.spearmanr(scores, ious).statistic, abs=1e-12)


def _mean_found_over_every_tie_order(scores: list[float], targets: list[bool], reviewed: int) -> float:
    """The targets among the first `reviewed`, averaged over every order that sorts the scores."""
    totals = []
    for order in itertools.permutations(range(len(scores))):
        if all(scores[a] <= scores[b] for a, b in zip(order, order[1:])):
            totals.append(sum(targets[index] for index in order[:reviewed]))
    return sum(totals) / len(totals)


def test_found_in_lowest_is_the_mean_over_every_order_of_tied_scores():
    scores = [0.5, 0.1, 0.5, 0.3, 0.5, 0.3, 0.9]
    targets = [True, False, False, True, True, False, True]
    for reviewed in range(len(scores) + 1):
        expected = _mean_found_over_every_tie_order(scores, targets, reviewed)
        assert found_in_lowest(np.array(scores), np.array(targets), reviewed) == pytest.approx(expected), reviewed


def test_a_perfect_score_finds_everything_first_and_random_is_the_share_reviewed():
    ious = np.linspace(0, 1, 20)
    curve = review_curve(ious.copy(), ious < 0.9)  # the score equals the IoU
    # 18 of 20 need a fix; 10 % = 2 samples: 2 of 18
    assert [p["found"]["value"] for p in curve["points"]] == pytest.approx([2 / 18, 4 / 18, 10 / 18])
    assert [p["random"] for p in curve["points"]] == [0.1, 0.2, 0.5]
    assert auroc_of_low_score(ious, ious < 0.5).value == 1.0 and spearman(ious, ious).value == pytest.approx(1.0)


def test_undefined_figures_are_none_with_a_reason_never_an_error():
    kept_only = ranking_figures(np.array([0.3, 0.8]), np.array([0.95, 1.0]))
    assert kept_only["auroc"] == {"value": None, "reason": "no sample is a positive; the AUROC needs both kinds"}
    assert kept_only["review_curve"]["points"][0]["found"] == {"value": None, "reason": "no mask needed fixing"}
    all_redrawn = ranking_figures(np.array([0.3, 0.8]), np.array([0.1, 0.2]))
    assert all_redrawn["auroc"]["reason"] == "every sample is a positive; the AUROC needs both kinds"
    same_score = ranking_figures(np.array([0.5, 0.5, 0.5]), np.array([0.1, 0.6, 1.0]))
    assert same_score["spearman"]["value"] is None and "the same" in same_score["spearman"]["reason"]
    one = ranking_figures(np.array([0.5]), np.array([0.1]))
    assert one["spearman"] == {"value": None, "reason": "fewer than two scored samples"}
    empty = ranking_figures(np.array([]), np.array([]))
    assert empty["scored_samples"] == 0
    assert empty["auroc"]["value"] is None and empty["spearman"]["value"] is None
    assert empty["review_curve"]["points"][0] == {
        "percent": 10, "reviewed": 0, "found": {"value": None, "reason": "no sample's prediction carries a score"},
        "random": None}


def test_the_meter_keeps_model_versions_apart_and_counts_unscored_samples():
    meter = ScoreRankingMeter()
    for score, iou in zip(HAND_SCORES, HAND_IOUS):
        meter.update("v1", float(score), float(iou))
    meter.update("v1", None, 0.2)
    meter.update("official", None, 0.9)
    result = meter.compute()
    assert result["thresholds"] == {"redrawn_iou_below": 0.5, "needs_fixing_iou_below": 0.9}
    v1, official = result["by_model_version"]["v1"], result["by_model_version"]["official"]
    assert (v1["scored_samples"], v1["unscored_samples"]) == (5, 1)
    assert v1["auroc"]["value"] == pytest.approx(5 / 6)
    assert (official["scored_samples"], official["unscored_samples"]) == (0, 1)
    assert official["auroc"]["value"] is None and official["auroc"]["reason"]
