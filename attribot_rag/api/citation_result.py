"""``BaseCitationResult``: what an integration hands its user for one answer, written once.

Both integrations subclass it with their framework's document type (LangChain's ``Document``,
LlamaIndex's ``NodeWithScore``); all they add is how a document is found and read.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import Field
from typing_extensions import Self

from .citations import Citations, JsonSafeModel, Source
from .html import notebook_frame, render_failed
from .options import CitationOptions
from .results import AttributionResult

DocumentT = TypeVar("DocumentT")


class BaseCitationResult(JsonSafeModel, Generic[DocumentT]):
    """The citations of one answer.

    ``documents``: the documents the answer was attributed to, in the order of the LLM's
    prompt (``Source.span.doc_index`` indexes it); ``unseen``: those the prompt lacks.
    ``citations``: the core's view, or its error form (the answer uncited, ``error`` saying
    why, ``attribution`` ``None``): the answer is never lost. ``options``: what drew them.
    """

    question: str | None = None
    answer: str
    citations: Citations
    attribution: AttributionResult | None = None
    documents: list[DocumentT] = Field(default_factory=list)
    unseen: list[DocumentT] = Field(default_factory=list)
    options: CitationOptions = Field(default_factory=CitationOptions)

    @classmethod
    def failed(
        cls,
        answer: str,
        error: BaseException | str,
        question: str | None = None,
        options: CitationOptions | None = None,
    ) -> Self:
        """The error form: the answer kept, uncited, and why."""
        citations = Citations.failed(answer, error)
        return cls(question=question, answer=answer, citations=citations, options=options or CitationOptions())

    @property
    def error(self) -> str | None:
        return self.citations.error

    @property
    def ok(self) -> bool:
        return self.error is None

    def cited_answer(self, scores: bool = False) -> str:
        """The answer with ``[n]`` after each supported claim, and the numbered sources."""
        return self.citations.cited_answer(scores)

    def document_of(self, source: Source) -> DocumentT:
        """The document a numbered source is a sentence of."""
        return self.documents[source.span.doc_index]

    def to_html(self, heading: str | None = None) -> str:
        """One self-contained HTML page of the answer and its citations, or of why it has none."""
        if self.attribution is None:
            return render_failed(self.answer, self.error or "nothing to attribute", heading)
        o = self.options
        return self.attribution.to_html(heading, o.per_claim, o.min_score, o.min_share)

    def _repr_html_(self) -> str:
        return notebook_frame(self.to_html())
