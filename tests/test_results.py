"""Ranking and citations of a result built by hand (no model): several citations per claim,
the citation bar, unsupported claims, numbering in order of first citation, unscored spans,
the number-and-name check."""

from __future__ import annotations

import pytest

from attribot_rag import AnswerSentence, AttributionResult, AttributionSettings, SpanScore
from attribot_rag.api.citations import UNSUPPORTED, mismatch
from attribot_rag.core.spans import split_claims

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
        settings=AttributionSettings(
            method="exact", options={}, model="hand-made", device="cpu", dtype="float32", version="0"
        ),
        context_gain=None,
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


def _cited(result: AttributionResult, **bar: float) -> list[tuple[int, str, list[int]]]:
    citations = result.citations(**bar)  # type: ignore[arg-type]
    return [(s.number, s.span.text, s.claims) for s in citations.sources]


def test_several_citations_per_claim_above_the_bar() -> None:
    result = _result([[3.0, 0.2, 1.0, 0.05], [0.5, 4.0, 0.0, 2.0]])
    citations = result.citations(per_claim=2, min_score=0.1, min_share=0.0)
    # claim 0 cites sources 0 and 2; claim 1 cites sources 1 and 3, numbered in that order
    assert [(s.number, s.span.text, s.claims) for s in citations.sources] == [
        (1, "Ann wrote it.", [0]),
        (2, "Cats purr.", [0]),
        (3, "Bob read it.", [1]),
        (4, "Dogs bark.", [1]),
    ]
    assert [[m.score for m in claim.markers] for claim in citations.claims] == [[3.0, 1.0], [4.0, 2.0]]
    assert [s.sentence for s in citations.sources] == [0, 2, 1, 3]
    assert [claim.score for claim in citations.claims] == [3.0, 4.0]
    assert result.cited_answer(per_claim=2, min_score=0.1, min_share=0.0) == (
        "Ann wrote it.[1][2] Bob read it.[3][4]\n\nSources:\n[1] d0: Ann wrote it.\n[2] d1: Cats purr.\n[3] d0: Bob read it.\n[4] d1: Dogs bark."
    )
    assert result.cited_answer(per_claim=2, min_score=0.1, min_share=0.0, scores=True).startswith(
        "Ann wrote it.[1 3.00][2 1.00] Bob read it.[3 4.00][4 2.00]"
    )


def test_a_source_cited_by_two_claims_keeps_its_number() -> None:
    result = _result([[3.0, 0.0, 1.0, 0.0], [2.5, 0.0, 0.0, 0.0]])
    (source,) = result.citations(per_claim=1).sources
    assert (source.number, source.claims) == (1, [0, 1])
    assert result.cited_answer().startswith("Ann wrote it.[1] Bob read it.[1]\n\nSources:\n[1] d0: Ann wrote it.")


def test_the_bar_is_strict_and_a_claim_none_clears_is_marked_unsupported() -> None:
    result = _result([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert _cited(result, per_claim=3, min_score=0.5, min_share=0.0) == [(1, "Ann wrote it.", [0])]
    assert _cited(result, per_claim=3, min_score=0.0, min_share=0.0) == [
        (1, "Ann wrote it.", [0]),
        (2, "Bob read it.", [0]),
    ]
    citations = result.citations(min_score=1.0)
    assert citations.sources == [] and not any(claim.supported for claim in citations.claims)
    assert result.cited_answer(min_score=1.0) == f"Ann wrote it. ({UNSUPPORTED}) Bob read it. ({UNSUPPORTED})"
    # a near-zero or negative best score never cites
    weak = _result([[3.0, 0.0, 0.0, 0.0], [0.02, -0.03, 0.01, 0.0]])
    assert [claim.supported for claim in weak.citations().claims] == [True, False]
    assert weak.cited_answer().startswith(f"Ann wrote it.[1] Bob read it. ({UNSUPPORTED})")


def test_the_share_of_the_largest_claim_score_raises_the_bar() -> None:
    result = _result([[8.0, 0.0, 0.0, 0.0], [0.0, 0.6, 0.0, 0.0]])
    assert [c.supported for c in result.citations(min_score=0.5, min_share=0.0).claims] == [True, True]
    assert [c.supported for c in result.citations(min_score=0.5, min_share=0.1).claims] == [True, False]


def test_bad_arguments_are_refused() -> None:
    result = _result([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    for call in (
        lambda: result.top(-1),
        lambda: result.top_documents(-2),
        lambda: result.citations(per_claim=-1),
        lambda: result.citations(per_claim=0),
        lambda: result.citations(min_score=float("nan")),
        lambda: result.citations(min_share=1.5),
    ):
        with pytest.raises(ValueError, match=r"k must|per_claim|min_score|min_share"):
            call()


def test_a_leading_short_reply_is_a_claim_of_its_own() -> None:
    answer = "No. Vinegar damages the rubber seals and voids the warranty."
    assert [answer[a:b] for a, b in split_claims(answer)] == [
        "No.",
        "Vinegar damages the rubber seals and voids the warranty.",
    ]
    assert split_claims("Yes, it does.") == [(0, 13)]
    assert split_claims("Tulsa") == [(0, 5)]


def test_a_cited_source_that_states_another_number_or_name_is_flagged() -> None:
    assert (
        mismatch("It needs 40 minutes to heat up.", "The machine needs 15 minutes to heat up.")
        == "the source says 15, not 40"
    )
    assert mismatch("Descaling takes 40 minutes.", "Descaling takes about 40 minutes.") is None
    assert mismatch("It has 1,400 rooms.", "The hotel has 1400 rooms.") is None
    assert mismatch("It was designed by John Smith.", "The engineer Mira Quell designed it.") == (
        "the source names Mira Quell, not John Smith"
    )
    assert mismatch("Mira Quell designed the Veltrana Bridge.", "The engineer Mira Quell designed it.") is None
    assert mismatch("It was completed in 1742.", "It spans the river Osk.") is None  # nothing stated to disagree with
    result = _result([[3.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]).model_copy(
        update={"answer": "Ann wrote it. Bob read it."}
    )
    assert all(m.mismatch is None for claim in result.citations().claims for m in claim.markers)


def test_the_error_form_keeps_the_answer() -> None:
    from attribot_rag import Citations

    failed = Citations.failed("The answer.", ValueError("document 1 is empty"))
    assert failed.error == "ValueError: document 1 is empty" and failed.cited_answer() == "The answer."
    assert Citations.model_validate_json(failed.model_dump_json()) == failed


def test_result_round_trips_through_json() -> None:
    result = _result([[1.0, None, 0.0, 0.0], [0.0, None, 0.0, 0.0]])
    assert result.schema_version == 1 and result.method == "exact" and result.model == "hand-made"
    assert "method" not in result.model_dump()  # one source of truth: settings
    assert AttributionResult.model_validate_json(result.model_dump_json()) == result
    with pytest.raises(ValueError, match="method"):
        AttributionResult.model_validate(
            {**result.model_dump(), "settings": {**result.settings.model_dump(), "method": "bogus"}}
        )


def test_the_default_bar_is_the_one_the_claim_benchmark_chose() -> None:
    """The defaults are measured, not picked: they are the bar ``python -m benchmarks.claims``
    chose (benchmarks/results/claims_hotpotqa.json); a rerun that chooses another fails here."""
    import json
    from pathlib import Path

    from attribot_rag.api.citations import DEFAULT_MIN_SCORE, DEFAULT_MIN_SHARE

    report = json.loads((Path(__file__).parents[1] / "benchmarks/results/claims_hotpotqa.json").read_text())
    assert report["chosen_bar"] == {"min_score": DEFAULT_MIN_SCORE, "min_share": DEFAULT_MIN_SHARE}
