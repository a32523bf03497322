"""Faithfulness metrics on small cases computed by hand (no model)."""

import math

import pytest

from attribot_rag import evaluation as ev


def test_ranking_puts_none_last_and_breaks_ties_by_index():
    assert ev.ranking([1.0, 3.0, None, 3.0, 2.0]) == [1, 3, 4, 0, 2]
    assert ev.top_k([None, 1.0, None], 2) == [1, 0]
    assert ev.top_k([0.5, 0.1], 5) == [0, 1]


def test_spearman_by_hand():
    assert ev.spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    # ranks (3, 1, 2) vs (1, 2, 3): 1 - 6 * (4 + 1 + 1) / (3 * 8) = -0.5
    assert ev.spearman([3, 1, 2], [1, 2, 3]) == pytest.approx(-0.5)
    # None ranks last, tied: est ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4) -> 3 / sqrt(10)
    assert ev.spearman([1, 2, 3, 4], [None, None, 3, 4]) == pytest.approx(3 / math.sqrt(10))


def test_pearson_uses_pairs_scored_by_both():
    # pairs (1, 2), (3, 6), (10, 4): covariance 4, variances 402/9 and 8 (sums of squares)
    assert ev.pearson([1, 2, 3, 10], [2, None, 6, 4]) == pytest.approx(12 / math.sqrt(3216))
    assert ev.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_correlations_undefined_are_nan():
    assert math.isnan(ev.spearman([1, 2, 3], [5, 5, 5]))
    assert math.isnan(ev.pearson([1, 2, 3], [None, None, 1.0]))
    assert math.isnan(ev.spearman([1], [1]))


def test_top1_and_topk_recall():
    # ties: the lower index wins
    assert ev.top1_agreement([1, 5, 5], [5, 5, 1]) == 0.0
    assert ev.top1_agreement([1, 5, 5], [0, 9, None]) == 1.0
    # reference top 3 {0, 1, 2}; estimate top 3 {3, 1, 2}
    assert ev.topk_recall([5, 4, 3, 2, 1], [1, 4, 3, 5, 2], 3) == pytest.approx(2 / 3)
    # k capped at the number of spans
    assert ev.topk_recall([1, 2], [2, 1], 3) == 1.0
    assert ev.topk_recall([1, 2, 3, 4], [None, None, None, 0.0], 1) == 1.0


def test_gold_recall():
    estimate = [0.1, None, 0.5, 0.2]
    assert ev.gold_recall(estimate, [0, 1]) == 0.0  # top 2 is {2, 3}
    assert ev.gold_recall(estimate, [2]) == 1.0
    assert ev.gold_recall(estimate, [2, 0]) == 0.5
    assert ev.gold_recall(estimate, []) is None
    with pytest.raises(ValueError):
        ev.gold_recall(estimate, [4])


def test_compare_and_summarize():
    result = ev.compare([3, 2, 1], [3, 2, 1], k=3, gold=[0])
    assert result == {"spearman": 1.0, "pearson": 1.0, "top1": 1.0, "top3_recall": 1.0, "gold_recall": 1.0}
    assert ev.summarize([1.0, None, float("nan"), 3.0, 2.0]) == {"median": 2.0, "mean": 2.0, "n": 3}
    assert ev.summarize([None]) == {"median": None, "mean": None, "n": 0}


def test_bad_input():
    with pytest.raises(ValueError):
        ev.spearman([1, 2], [1])
    with pytest.raises(ValueError):
        ev.top1_agreement([float("nan"), 1.0], [1.0, 2.0])
