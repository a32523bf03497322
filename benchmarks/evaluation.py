"""Faithfulness metrics: how well a method's span scores agree with a reference (exact LOO).

Scores are lists parallel to the spans (``None``: the method did not score that span, e.g. a
sentence outside the documents that ``hierarchical`` kept). Conventions, fixed so that
results are reproducible:

- Ranking: by score, highest first; ``None`` ranks last (as minus infinity); ties are broken
  by span index, lowest first. ``top_k`` and every top-k metric use this order.
- ``spearman``: rank correlation with ``None`` as minus infinity (so all unscored spans tie
  at the bottom, with averaged ranks).
- ``pearson``: linear correlation over the spans that both lists scored.
- Both correlations are ``nan`` when they are undefined (fewer than two spans, or a constant
  list); aggregate them with ``nanmedian``/``nanmean`` and report how many were defined.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

Scores = Sequence[float | None]


def _check(reference: Scores, estimate: Scores) -> None:
    if len(reference) != len(estimate):
        raise ValueError(f"score lists differ in length: {len(reference)} and {len(estimate)}")


def _value(score: float | None) -> float:
    if score is None:
        return -math.inf
    score = float(score)
    if math.isnan(score):
        raise ValueError("a score is NaN; use None for an unscored span")
    return score


def ranking(scores: Scores) -> list[int]:
    """Span indices from best to worst: score descending, ``None`` last, ties by index."""
    return sorted(range(len(scores)), key=lambda i: (-_value(scores[i]), i))


def top_k(scores: Scores, k: int) -> list[int]:
    """The ``k`` best span indices (all of them when there are fewer than ``k``)."""
    if k < 0:
        raise ValueError("k must be at least 0")
    return ranking(scores)[:k]


def spearman(reference: Scores, estimate: Scores) -> float:
    """Spearman rank correlation, ``None`` ranked last (tied), ``nan`` if undefined."""
    _check(reference, estimate)
    if len(reference) < 2:
        return math.nan
    a = stats.rankdata([_value(s) for s in reference])
    b = stats.rankdata([_value(s) for s in estimate])
    return _pearson(a, b)


def pearson(reference: Scores, estimate: Scores) -> float:
    """Pearson correlation over the spans both lists scored, ``nan`` if undefined."""
    _check(reference, estimate)
    pairs = [(float(a), float(b)) for a, b in zip(reference, estimate, strict=True) if a is not None and b is not None]
    if len(pairs) < 2:
        return math.nan
    a, b = (np.array(column, dtype=np.float64) for column in zip(*pairs, strict=True))
    return _pearson(a, b)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if denominator == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float((a * b).sum()) / denominator))


def top1_agreement(reference: Scores, estimate: Scores) -> float:
    """1.0 if both rank the same span first, else 0.0 (``nan`` for no spans)."""
    _check(reference, estimate)
    if not reference:
        return math.nan
    return float(ranking(reference)[0] == ranking(estimate)[0])


def topk_recall(reference: Scores, estimate: Scores, k: int = 3) -> float:
    """Share of the reference's top ``k`` found in the estimate's top ``k`` (``k`` capped at
    the number of spans; ``nan`` for no spans)."""
    _check(reference, estimate)
    k = min(k, len(reference))
    if k == 0:
        return math.nan
    return len(set(top_k(reference, k)) & set(top_k(estimate, k))) / k


def gold_recall(estimate: Scores, gold: Iterable[int]) -> float | None:
    """Share of the gold spans found in the estimate's top ``k``, ``k`` = number of gold spans;
    ``None`` when there is no gold span (the question is skipped for this metric)."""
    gold = set(gold)
    if not gold:
        return None
    if any(not 0 <= g < len(estimate) for g in gold):
        raise ValueError("a gold index is out of range")
    return len(set(top_k(estimate, len(gold))) & gold) / len(gold)


def significant_recall(reference: Scores, estimate: Scores, floor: float = 0.5, share: float = 0.25) -> float | None:
    """Share of the reference's significant spans (score >= max(``floor`` nats, ``share`` of
    the top score)) that the estimate ranks within as many places; ``None`` when the reference
    has none (an answer that rests on no span)."""
    _check(reference, estimate)
    values = [_value(s) for s in reference]
    if not values:
        return None
    threshold = max(floor, share * max(values))
    significant = {i for i, v in enumerate(values) if v >= threshold}
    if not significant:
        return None
    return len(set(top_k(estimate, len(significant))) & significant) / len(significant)


def gold_metrics(
    estimate: Scores,
    gold: Iterable[int],
    span_documents: Sequence[int],
    gold_documents: Iterable[int],
    titles: Iterable[int] = (),
) -> dict[str, float | None]:
    """Agreement with human-marked supporting spans: whether the top span is gold (top-1
    precision), recall of the gold spans in the top k (k = their number) and in the top 3,
    whether the top span lies in a gold document, and the share of gold documents with any
    span scored (below 1 where a document pass dropped one); top-1 and recall@k again over the
    sentences alone, the ``titles`` spans left out (HotpotQA never marks a title, and a title
    that repeats the question's entity draws the similarity baselines). ``None`` each when
    there is no gold."""
    gold, gold_documents, titles = set(gold), set(gold_documents), set(titles)
    names = ["gold_top1", "gold_recall", "gold_recall3", "top_in_gold_document", "gold_documents_scored"]
    if not gold or not estimate:
        return dict.fromkeys([*names, "gold_top1_sentences", "gold_recall_sentences"])
    first = ranking(estimate)[0]
    scored = {span_documents[i] for i, score in enumerate(estimate) if score is not None}
    sentences_only = [None if i in titles else score for i, score in enumerate(estimate)]
    return {
        "gold_top1": float(first in gold),
        "gold_recall": gold_recall(estimate, gold),
        "gold_recall3": len(set(top_k(estimate, 3)) & gold) / len(gold),
        "top_in_gold_document": float(span_documents[first] in gold_documents),
        "gold_documents_scored": len(scored & gold_documents) / len(gold_documents) if gold_documents else None,
        "gold_top1_sentences": float(
            any(score is not None for score in sentences_only) and ranking(sentences_only)[0] in gold
        ),
        "gold_recall_sentences": gold_recall(sentences_only, gold),
    }


def compare(
    reference: Scores | None, estimate: Scores, k: int = 3, gold: Iterable[int] = ()
) -> dict[str, float | None]:
    """Every metric of ``estimate`` against ``reference`` (``None`` each without one: exact
    LOO not run on this question) and against ``gold`` if given."""
    against_reference = {
        "spearman": spearman,
        "pearson": pearson,
        "top1": top1_agreement,
        f"top{k}_recall": lambda reference, estimate: topk_recall(reference, estimate, k),
        "significant_recall": significant_recall,
    }
    metrics = {
        name: metric(reference, estimate) if reference is not None else None
        for name, metric in against_reference.items()
    }
    return {**metrics, "gold_recall": gold_recall(estimate, gold)}


def bootstrap_interval(
    values: Iterable[float | None], samples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the mean over questions (``None``/``nan`` left
    out; ``None`` for fewer than two values)."""
    kept = np.array([float(v) for v in values if v is not None and not math.isnan(float(v))])
    if len(kept) < 2:
        return None
    means = np.random.default_rng(seed).choice(kept, size=(samples, len(kept))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve of a score telling ``positive`` from ``negative`` cases: the
    probability that a random positive outscores a random negative (ties count half)."""
    if not positive or not negative:
        return math.nan
    return float(stats.mannwhitneyu(positive, negative).statistic) / (len(positive) * len(negative))


def summarize(values: Iterable[float | None]) -> dict[str, float | int | list[float] | None]:
    """Median and mean over the defined values (``None`` and ``nan`` left out), their count,
    and the mean's 95% bootstrap interval (``ci``)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not kept:
        return {"median": None, "mean": None, "n": 0, "ci": None}
    interval = bootstrap_interval(kept)
    return {
        "median": float(np.median(kept)),
        "mean": float(np.mean(kept)),
        "n": len(kept),
        "ci": list(interval) if interval else None,
    }
