"""The scores of one attribution: each span's leave-one-out score, over the whole answer and
over each of its claims."""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel, ConfigDict

from ..core.spans import SpanPart


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


def ranked(spans: list[SpanScore], k: int | None) -> list[SpanScore]:
    """The scored spans of ``spans``, best first, the first ``k`` (``None``: all)."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise ValueError(f"k must be a non-negative integer or None, not {k!r}")
    scored = sorted((s for s in spans if s.score is not None), key=lambda s: cast(float, s.score), reverse=True)
    return scored[:k] if k is not None else scored


class AnswerSentence(BaseModel):
    """One claim of the answer (a sentence; a leading "Yes." or "No." is a claim of its own)
    and the LOO scores of its own tokens, parallel to the result's ``documents`` and
    ``sentences``."""

    model_config = ConfigDict(frozen=True)

    text: str
    start: int
    end: int
    documents: list[SpanScore]
    sentences: list[SpanScore]

    def top(self, k: int | None = 3) -> list[SpanScore]:
        return ranked(self.sentences, k)
