"""The result of an attribution: its scores, what produced it, and its citations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..core.methods import MethodName
from .citations import DEFAULT_MIN_SCORE, DEFAULT_MIN_SHARE, Citations, cite
from .scores import AnswerSentence, SpanScore, ranked

SCHEMA_VERSION: Literal[1] = 1


class Timing(BaseModel):
    """The time one stage took: wall-clock seconds (what a user waits) and CPU seconds of this
    process (the work done: on a busy machine wall time grows, CPU time does not)."""

    model_config = ConfigDict(frozen=True)

    wall_seconds: float
    cpu_seconds: float


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
    """LOO attribution of an answer to its context; see the README for the exact contract.
    ``settings`` says what produced it (method, model, target: read them there, or through
    the properties of the same names); ``context_gain`` is ``None`` where it was switched off."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    settings: AttributionSettings
    prompt: str
    answer: str
    full_logprob: float
    # log p(answer | prompt) - log p(answer | prompt without any document): does the answer
    # rest on the documents at all?
    context_gain: float | None
    documents: list[SpanScore]
    sentences: list[SpanScore]
    answer_sentences: list[AnswerSentence]
    timings: dict[str, Timing]
    dropped_documents: list[int] = []
    unseen_documents: list[int] = []

    @property
    def method(self) -> MethodName:
        return self.settings.method

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def target(self) -> str | None:
        return self.settings.target

    def top(self, k: int | None = 3) -> list[SpanScore]:
        """The ``k`` highest-scoring sentences."""
        return ranked(self.sentences, k)

    def top_documents(self, k: int | None = 3) -> list[SpanScore]:
        return ranked(self.documents, k)

    def citations(
        self, per_claim: int = 1, min_score: float = DEFAULT_MIN_SCORE, min_share: float = DEFAULT_MIN_SHARE
    ) -> Citations:
        """Each claim cites its ``per_claim`` best source sentences that clear the bar
        (``attribot_rag.api.citations``); a claim none clears is marked unsupported."""
        return cite(self.answer, self.sentences, self.answer_sentences, per_claim, min_score, min_share)

    def cited_answer(
        self,
        per_claim: int = 1,
        min_score: float = DEFAULT_MIN_SCORE,
        min_share: float = DEFAULT_MIN_SHARE,
        scores: bool = False,
    ) -> str:
        """The answer with ``[n]`` after each supported claim (its score too, with
        ``scores``), a mark on each unsupported one, and a numbered list of its sources."""
        return self.citations(per_claim, min_score, min_share).cited_answer(scores)

    def to_html(
        self,
        heading: str | None = None,
        per_claim: int = 1,
        min_score: float = DEFAULT_MIN_SCORE,
        min_share: float = DEFAULT_MIN_SHARE,
    ) -> str:
        """This result as one self-contained HTML page, safe on untrusted text (``attribot_rag.api.html``)."""
        from .html import render_html

        return render_html([self], [heading], per_claim=per_claim, min_score=min_score, min_share=min_share)

    def _repr_html_(self) -> str:
        """Jupyter: the same page, in a sandboxed iframe."""
        from .html import notebook_frame

        return notebook_frame(self.to_html())
