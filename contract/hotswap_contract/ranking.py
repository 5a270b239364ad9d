"""Ranking-quality metrics for the quality gate: nDCG@k and MRR@k, torch-free, on plain lists.

One case is a query's documents with their scores (what a version gave them) and their graded
relevance (what a person said: 0 = not relevant, higher = more relevant). Documents are ranked by
score, highest first; ties keep input order (as the data plane ranks them).

- **nDCG@k**: ``DCG@k / IDCG@k`` with linear gain, ``DCG@k = sum(rel_i / log2(i + 1))`` over the
  top ``k`` ranks ``i = 1..k`` (the trec_eval and scikit-learn convention). IDCG ranks by relevance.
- **MRR@k**: ``1 / rank`` of the first document with relevance > 0 within the top ``k``, else 0.

``k = None`` means every document. A case without any relevant document has no meaningful value
for either metric: :func:`check_case` refuses it, so a labelled set must not hold one.
The score of a set is the mean over its cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Metric = Literal["ndcg", "mrr"]
METRICS: tuple[Metric, ...] = ("ndcg", "mrr")


def check_case(scores: Sequence[float], relevance: Sequence[float]) -> None:
    """``ValueError`` unless ``scores`` and ``relevance`` are equally long, finite, with a relevant document."""
    if len(scores) != len(relevance):
        raise ValueError(f"{len(scores)} scores for {len(relevance)} relevance grades")
    if not relevance:
        raise ValueError("a case needs at least one document")
    if any(not math.isfinite(r) or r < 0 for r in relevance):
        raise ValueError("relevance grades must be finite and >= 0")
    if not any(r > 0 for r in relevance):
        raise ValueError("a case needs at least one relevant document (relevance > 0)")
    if any(not math.isfinite(s) for s in scores):
        raise ValueError("scores must be finite")


def ranking(scores: Sequence[float]) -> list[int]:
    """Document indices by score, highest first; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _cut(n: int, k: int | None) -> int:
    if k is not None and k < 1:
        raise ValueError("k must be at least 1")
    return n if k is None else min(k, n)


def dcg(gains: Sequence[float], k: int | None = None) -> float:
    """Discounted cumulative gain of ``gains`` in rank order (rank 1 first)."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains[: _cut(len(gains), k)]))


def ndcg_at_k(scores: Sequence[float], relevance: Sequence[float], k: int | None = 10) -> float:
    check_case(scores, relevance)
    ranked = [relevance[i] for i in ranking(scores)]
    ideal = sorted(relevance, reverse=True)
    return dcg(ranked, k) / dcg(ideal, k)


def mrr_at_k(scores: Sequence[float], relevance: Sequence[float], k: int | None = None) -> float:
    check_case(scores, relevance)
    order = ranking(scores)
    for rank, i in enumerate(order[: _cut(len(order), k)], start=1):
        if relevance[i] > 0:
            return 1.0 / rank
    return 0.0


def case_metric(metric: Metric, scores: Sequence[float], relevance: Sequence[float], k: int | None) -> float:
    if metric == "ndcg":
        return ndcg_at_k(scores, relevance, k)
    if metric == "mrr":
        return mrr_at_k(scores, relevance, k)
    raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")


def set_metric(
    metric: Metric, scores: Sequence[Sequence[float]], relevance: Sequence[Sequence[float]], k: int | None
) -> tuple[float, list[float]]:
    """(mean over the cases, the value of each case)."""
    if len(scores) != len(relevance) or not scores:
        raise ValueError("one list of scores per case, and at least one case")
    per_case = [case_metric(metric, s, r, k) for s, r in zip(scores, relevance, strict=True)]
    return sum(per_case) / len(per_case), per_case
