"""nDCG@k and MRR@k against values computed by hand."""

from __future__ import annotations

import math

import pytest
from hotswap_contract.ranking import mrr_at_k, ndcg_at_k, ranking, set_metric

L2 = math.log2


def test_ranking_is_by_score_with_ties_in_input_order() -> None:
    assert ranking([0.1, 0.9, 0.5, 0.9]) == [1, 3, 2, 0]


def test_ndcg_perfect_and_reversed() -> None:
    rel = [3, 2, 0]
    assert ndcg_at_k([0.9, 0.5, 0.1], rel, k=3) == pytest.approx(1.0)
    # reversed: ranks hold gains 0, 2, 3 -> DCG = 0/1 + 2/log2(3) + 3/log2(4); IDCG = 3/1 + 2/log2(3) + 0
    dcg = 2 / L2(3) + 3 / 2
    idcg = 3 + 2 / L2(3)
    assert ndcg_at_k([0.1, 0.5, 0.9], rel, k=3) == pytest.approx(dcg / idcg)  # ~0.7967


def test_ndcg_cut_at_k() -> None:
    # scores rank documents 1, 0, 2; gains in rank order 0, 1, 2; k = 2 keeps 0, 1
    dcg = 0 / 1 + 1 / L2(3)
    idcg = 2 / 1 + 1 / L2(3)
    assert ndcg_at_k([0.5, 0.9, 0.1], [1, 0, 2], k=2) == pytest.approx(dcg / idcg)
    assert ndcg_at_k([0.5, 0.9, 0.1], [1, 0, 2], k=1) == 0.0


def test_ndcg_ties_keep_input_order() -> None:
    # all scores equal: the input order is the ranking
    assert ndcg_at_k([1.0, 1.0], [0, 1], k=None) == pytest.approx((1 / L2(3)) / 1)


def test_mrr() -> None:
    assert mrr_at_k([0.9, 0.5, 0.1], [1, 0, 0]) == 1.0
    assert mrr_at_k([0.1, 0.9, 0.5], [1, 0, 0]) == pytest.approx(1 / 3)
    assert mrr_at_k([0.1, 0.9, 0.5], [1, 0, 1]) == pytest.approx(1 / 2)
    assert mrr_at_k([0.1, 0.9, 0.5], [1, 0, 0], k=2) == 0.0


def test_set_metric_is_the_mean() -> None:
    mean, per = set_metric("mrr", [[0.9, 0.1], [0.1, 0.9]], [[1, 0], [1, 0]], k=None)
    assert per == [1.0, 0.5] and mean == 0.75


@pytest.mark.parametrize(
    ("scores", "relevance", "message"),
    [
        ([0.1], [1, 0], "scores for"),
        ([0.1, 0.2], [0, 0], "relevant document"),
        ([0.1, 0.2], [1, -1], ">= 0"),
        ([float("nan"), 0.2], [1, 0], "finite"),
        ([], [], "at least one document"),
    ],
)
def test_refused_cases(scores: list[float], relevance: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ndcg_at_k(scores, relevance)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be"):
        mrr_at_k([0.1], [1], k=0)
