"""Ranking and citations of a result built by hand (no model): several citations per claim,
the score threshold, numbering in order of first citation, unscored spans."""

from __future__ import annotations

import pytest

from attribot_rag import AnswerSentence, AttributionResult, SpanScore

SOURCES = ["Ann wrote it.", "Bob read it.", "Cats purr.", "Dogs bark."]
ANSWER = "Ann wrote it. Bob read it."


def _spans(scores: list[float | None]) -> list[SpanScore]:
    return [
        SpanScore(
            doc_index=i // 2,
            doc_id=f"d{i // 2}",
            text=t,
            start=0,
            end=len(t),
            prompt_start=10 * i,
            prompt_end=10 * i + len(t),
            score=s,
        )
        for i, (t, s) in enumerate(zip(SOURCES, scores, strict=True))
    ]


def _result(claims: list[list[float | None]]) -> AttributionResult:
    """A result whose answer sentences score the four sources with ``claims``; the whole
    answer's scores are their sums, as a real result's are."""
    totals = [None if any(c[i] is None for c in claims) else sum(c[i] for c in claims) for i in range(len(SOURCES))]
    bounds = [(0, 13), (14, 26)]
    return AttributionResult(
        method="exact",
        model="hand-made",
        prompt="",
        answer=ANSWER,
        full_logprob=-3.0,
        documents=[],
        sentences=_spans(totals),
        answer_sentences=[
            AnswerSentence(text=ANSWER[a:b], start=a, end=b, documents=[], sentences=_spans(scores))
            for (a, b), scores in zip(bounds, claims, strict=True)
        ],
        timings={},
    )


def test_top_ranks_by_score_and_skips_unscored_spans() -> None:
    result = _result([[0.5, None, 2.0, -1.0], [0.1, None, 0.0, 0.0]])
    assert [s.text for s in result.top(None)] == ["Cats purr.", "Ann wrote it.", "Dogs bark."]
    assert [s.text for s in result.top(1)] == ["Cats purr."]
    assert [s.text for s in result.answer_sentences[1].top(2)] == ["Ann wrote it.", "Cats purr."]


def test_several_citations_per_claim_above_the_threshold() -> None:
    result = _result([[3.0, 0.2, 1.0, 0.05], [0.5, 4.0, 0.0, 2.0]])
    citations = result.citations(per_claim=2, min_score=0.1)
    # claim 0 cites sources 0 and 2; claim 1 cites sources 1 and 3, numbered in that order
    assert [(c.number, c.source.text, c.claims) for c in citations] == [
        (1, "Ann wrote it.", [0]),
        (2, "Cats purr.", [0]),
        (3, "Bob read it.", [1]),
        (4, "Dogs bark.", [1]),
    ]
    assert [c.claim_scores for c in citations] == [[3.0], [1.0], [4.0], [2.0]]
    assert [c.sentence for c in citations] == [0, 2, 1, 3]
    assert result.cited_answer(per_claim=2, min_score=0.1) == (
        "Ann wrote it.[1][2] Bob read it.[3][4]\n\nSources:\n[1] d0: Ann wrote it.\n[2] d1: Cats purr.\n[3] d0: Bob read it.\n[4] d1: Dogs bark."
    )


def test_a_source_cited_by_two_claims_keeps_its_number() -> None:
    result = _result([[3.0, 0.0, 1.0, 0.0], [2.5, 0.0, 0.0, 0.0]])
    (citation,) = result.citations(per_claim=1)
    assert (citation.number, citation.claims, citation.claim_scores) == (1, [0, 1], [3.0, 2.5])
    assert result.cited_answer().startswith("Ann wrote it.[1] Bob read it.[1]\n\nSources:\n[1] d0: Ann wrote it.")


def test_min_score_is_strict_and_can_leave_a_claim_uncited() -> None:
    result = _result([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert [c.source.text for c in result.citations(per_claim=3, min_score=0.5)] == ["Ann wrote it."]
    assert [c.source.text for c in result.citations(per_claim=3, min_score=0.0)] == ["Ann wrote it.", "Bob read it."]
    assert result.citations(min_score=1.0) == []
    assert result.cited_answer(min_score=1.0) == ANSWER


def test_result_round_trips_through_json() -> None:
    result = _result([[1.0, None, 0.0, 0.0], [0.0, None, 0.0, 0.0]])
    assert AttributionResult.model_validate_json(result.model_dump_json()) == result
    with pytest.raises(ValueError, match="method"):
        AttributionResult.model_validate({**result.model_dump(), "method": "bogus"})
