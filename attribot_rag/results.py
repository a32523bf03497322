"""Pydantic models of an attribution and its rendering as citations."""

from __future__ import annotations

from typing import Any, cast

from pydantic import BaseModel, ConfigDict

from .methods import MethodName
from .spans import SpanPart


class SpanScore(BaseModel):
    """A document or sentence of the context and its LOO score (``None``: not scored).
    ``start``/``end`` index the document's text, or with ``part="title"`` its title (a title
    the prompt shows is cited like a sentence)."""

    model_config = ConfigDict(frozen=True)

    doc_index: int
    doc_id: str
    text: str
    start: int
    end: int
    prompt_start: int
    prompt_end: int
    score: float | None
    part: SpanPart = "text"


def _ranked(spans: list[SpanScore], k: int | None) -> list[SpanScore]:
    scored = sorted((s for s in spans if s.score is not None), key=lambda s: cast(float, s.score), reverse=True)
    return scored[:k] if k is not None else scored


class AnswerSentence(BaseModel):
    """One sentence (claim) of the answer and the LOO scores of its own tokens."""

    model_config = ConfigDict(frozen=True)

    text: str
    start: int
    end: int
    documents: list[SpanScore]
    sentences: list[SpanScore]

    def top(self, k: int | None = 3) -> list[SpanScore]:
        return _ranked(self.sentences, k)


class Citation(BaseModel):
    """A numbered source sentence (``result.sentences[sentence]``), the answer sentences
    (claims) that cite it, and its score on each claim's tokens."""

    model_config = ConfigDict(frozen=True)

    number: int
    sentence: int
    source: SpanScore
    claims: list[int]
    claim_scores: list[float]


class AttributionSettings(BaseModel):
    """What produced a result, so that a stored result says how to reproduce it."""

    model_config = ConfigDict(frozen=True)

    method: MethodName
    options: dict[str, Any]
    budget: str | None = None
    model: str
    target: str | None = None
    device: str
    dtype: str
    version: str


class AttributionResult(BaseModel):
    """LOO attribution of an answer to its context; see the README for the exact contract."""

    model_config = ConfigDict(frozen=True)

    method: MethodName
    model: str
    target: str | None = None
    prompt: str
    answer: str
    full_logprob: float
    documents: list[SpanScore]
    sentences: list[SpanScore]
    answer_sentences: list[AnswerSentence]
    timings: dict[str, float]
    dropped_documents: list[int] = []
    unseen_documents: list[int] = []
    # log p(answer | prompt) - log p(answer | prompt without any document): does the answer
    # rest on the documents at all? (``None`` in results stored before it existed)
    context_gain: float | None = None
    settings: AttributionSettings | None = None

    def top(self, k: int | None = 3) -> list[SpanScore]:
        """The ``k`` highest-scoring sentences."""
        return _ranked(self.sentences, k)

    def top_documents(self, k: int | None = 3) -> list[SpanScore]:
        return _ranked(self.documents, k)

    def citations(self, per_claim: int = 1, min_score: float = 0.0) -> list[Citation]:
        """Each answer sentence cites its ``per_claim`` best source sentences scoring above
        ``min_score``; sources are numbered in order of first citation."""
        numbers: dict[int, int] = {}
        claims: dict[int, list[int]] = {}
        for claim, answer_sentence in enumerate(self.answer_sentences):
            # An answer sentence's spans are parallel to ``self.sentences``.
            scored = [
                (s.score, i)
                for i, s in enumerate(answer_sentence.sentences)
                if s.score is not None and s.score > min_score
            ]
            for _, key in sorted(scored, reverse=True)[:per_claim]:
                numbers.setdefault(key, len(numbers) + 1)
                claims.setdefault(key, []).append(claim)
        return [
            Citation(
                number=n,
                sentence=key,
                source=self.sentences[key],
                claims=claims[key],
                claim_scores=[self.answer_sentences[c].sentences[key].score for c in claims[key]],
            )
            for key, n in numbers.items()
        ]

    def cited_answer(self, per_claim: int = 1, min_score: float = 0.0) -> str:
        """The answer with ``[n]`` after each sentence and a numbered list of its sources."""
        citations = self.citations(per_claim, min_score)
        parts, cursor = [], 0
        for claim, answer_sentence in enumerate(self.answer_sentences):
            markers = "".join(f"[{c.number}]" for c in citations if claim in c.claims)
            parts.append(self.answer[cursor : answer_sentence.end] + markers)
            cursor = answer_sentence.end
        parts.append(self.answer[cursor:])
        sources = [f"[{c.number}] {c.source.doc_id}: {c.source.text}" for c in citations]
        return "".join(parts) + ("\n\nSources:\n" + "\n".join(sources) if sources else "")

    def to_html(self, heading: str | None = None, per_claim: int = 1, min_score: float = 0.0) -> str:
        """This result as one self-contained HTML page, safe on untrusted text (``attribot_rag.html``)."""
        from .html import render_html

        return render_html([self], [heading], per_claim=per_claim, min_score=min_score)

    def _repr_html_(self) -> str:
        """Jupyter: the same page, in a sandboxed iframe."""
        from .html import notebook_frame

        return notebook_frame(self.to_html())
