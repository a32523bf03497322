"""The typed rows of a faithfulness run, as written to its JSON (fields left unset are left out,
so that rows measured by older code, without the newer fields, read back and write out as
they were), and the metrics of one method on one question."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from benchmarks import evaluation as ev
from benchmarks.measure import Measured

Scores = list[float | None]
Metrics = dict[str, float | None]


class Estimate(BaseModel):
    """A method's scores, parallel to the spans (``documents``: ``None`` where the method
    scores no documents, unset where it was never recorded)."""

    sentences: Scores
    documents: Scores | None = None


class SettingRow(BaseModel):
    """One method on one question: its cost, speed-ups over the reference, metrics and scores."""

    seconds: float
    speedup: float
    tokens: int
    token_speedup: float
    sentences: Metrics
    documents: Metrics | None = None
    scores: Estimate


class TargetExact(BaseModel):
    """The second model's exact LOO on a question: the cross-family block's reference."""

    seconds: float
    tokens: int
    full_logprob: float
    scores: Estimate


class QuestionRow(BaseModel):
    """One question: its answer and, unless ``skipped``, every setting measured on it."""

    id: str
    question: str
    answer: str
    raw_answer: str | None
    generate_seconds: float
    skipped: str | None = None
    documents: int | None = None
    sentences: int | None = None
    prompt_tokens: int | None = None
    answer_tokens: int | None = None
    gold: list[int] = []
    gold_documents: list[int] = []
    full_logprob: float | None = None
    context_gain: float | None = None
    reference: bool = True  # exact LOO ran on this question (rows older than --reference-n: True)
    settings: dict[str, SettingRow] | None = None
    # "exact:<target>" -> TargetExact, "proxy:..."/"pruned:..." -> SettingRow
    cross: dict[str, SettingRow | TargetExact] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


def evaluate(
    reference: Estimate | None,
    estimate: Estimate,
    gold: list[int],
    gold_docs: list[int],
    cost: Measured[Any],
    reference_cost: Measured[Any] | None,
    layout: tuple[list[int], set[int]],
) -> SettingRow:
    """Metrics of one method on one question; without a ``reference`` (exact LOO not run on
    this question: ``--reference-n``) only the gold metrics and the cost."""
    reference_seconds, reference_tokens = (
        (reference_cost.seconds, reference_cost.tokens) if reference_cost else (math.nan, 0)
    )
    sentences = ev.compare(reference.sentences if reference else None, estimate.sentences, k=3, gold=gold)
    span_documents, titles = layout
    sentences.update(ev.gold_metrics(estimate.sentences, gold, span_documents, gold_docs, titles))
    row = SettingRow(
        seconds=cost.seconds,
        speedup=reference_seconds / cost.seconds if cost.seconds > 0 else math.nan,
        tokens=cost.tokens,
        token_speedup=reference_tokens / cost.tokens if cost.tokens > 0 and reference_tokens else math.nan,
        sentences=sentences,
        scores=estimate,
    )
    if estimate.documents is not None and reference is not None:
        row.documents = ev.compare(reference.documents, estimate.documents, k=2, gold=gold_docs)
    return row
