"""Citation models and the one translation step: LangChain documents in, ``Attributor``
call, citations out. No attribution logic lives here."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ConfigDict

from attribot_rag import AttributionResult
from attribot_rag import Document as AttribotDocument

logger = logging.getLogger("langchain_attribot")

#: Name of the custom event that ``with_citations`` dispatches with each ``CitationResult``.
CITATIONS_EVENT = "attribot_citations"

#: Keys tried, in order, to find the question in a dict input.
QUESTION_KEYS = ("question", "query", "input")


_default_lock = threading.Lock()
_default: Any = None


def default_attributor() -> Any:
    """One ``Attributor()`` (the embedded model) per process, shared by every handler and
    chain created without an ``attributor``."""
    global _default
    with _default_lock:
        if _default is None:
            from attribot_rag import Attributor

            _default = Attributor()
        return _default


class Citation(BaseModel):
    """A numbered source sentence of one retrieved document and the answer sentences citing it.

    ``document.page_content[start:end] == text``. ``score`` is the sentence's leave-one-out
    score on the whole answer (nats of log-probability the answer loses without it);
    ``claim_scores[i]`` is its score on the tokens of answer sentence ``claims[i]`` only.
    """

    model_config = ConfigDict(frozen=True)

    number: int
    document_id: str
    document_index: int
    metadata: dict[str, Any]
    text: str
    start: int
    end: int
    score: float | None
    claims: tuple[int, ...]
    claim_scores: tuple[float, ...]


class AnswerSentenceCitations(BaseModel):
    """One sentence (claim) of the answer, ``answer[start:end]``, and the citations it carries,
    best first."""

    model_config = ConfigDict(frozen=True)

    index: int
    text: str
    start: int
    end: int
    citations: tuple[Citation, ...]


class CitationResult(BaseModel):
    """The citations of one RAG invocation.

    ``context`` holds the retrieved documents the attribution saw (deduplicated, in retrieval
    order; ``Citation.document_index`` points into it). ``attribution`` is the core's full
    ``AttributionResult`` (every document and sentence score). When attribution failed,
    ``error`` says why, ``attribution`` is ``None`` and there are no citations.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    run_id: UUID | None = None
    question: str | None = None
    answer: str | None = None
    context: tuple[Document, ...] = ()
    citations: tuple[Citation, ...] = ()
    answer_sentences: tuple[AnswerSentenceCitations, ...] = ()
    attribution: AttributionResult | None = None
    error: str | None = None
    per_claim: int = 1
    min_score: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def cited_answer(self, per_claim: int | None = None, min_score: float | None = None) -> str:
        """The answer with ``[n]`` after each answer sentence and a numbered source list
        (the answer unchanged when attribution failed)."""
        if self.attribution is None:
            return self.answer or ""
        return self.attribution.cited_answer(
            self.per_claim if per_claim is None else per_claim,
            self.min_score if min_score is None else min_score,
        )

    def cited_document(self, citation: Citation) -> Document:
        """The retrieved document a citation points into."""
        return self.context[citation.document_index]


def text_of(value: Any) -> str | None:
    """The text of a string, message, or the last message of a list of messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return str(value.text)
    if isinstance(value, Sequence) and value and isinstance(value[-1], BaseMessage):
        return str(value[-1].text)
    return None


def question_of(inputs: Any, question_key: str | None = None) -> str | None:
    """The question in a chain's input: the input itself when it is text, else the first of
    ``question_key`` or ``QUESTION_KEYS`` that holds text."""
    text = text_of(inputs)
    if text is not None:
        return text
    if isinstance(inputs, dict):
        for key in (question_key,) if question_key else QUESTION_KEYS:
            text = text_of(inputs.get(key))
            if text is not None:
                return text
    return None


def document_id(document: Document, position: int) -> str:
    """``Document.id``, else ``metadata["source"]``, else the retrieval position."""
    if document.id:
        return str(document.id)
    source = document.metadata.get("source")
    if source is not None and str(source):
        return str(source)
    return str(position)


def unique_documents(documents: Iterable[Document]) -> list[Document]:
    """Documents in retrieval order without repeats (same ``page_content``: a second copy in
    the context would make leave-one-out scores of both copies vanish) and without empty ones."""
    seen: set[str] = set()
    out = []
    for document in documents:
        if document.page_content.strip() and document.page_content not in seen:
            seen.add(document.page_content)
            out.append(document)
    return out


def _to_attribot(document: Document, position: int) -> AttribotDocument:
    title = document.metadata.get("title")
    return AttribotDocument(
        text=document.page_content,
        id=document_id(document, position),
        title=title if isinstance(title, str) and title.strip() else None,
        metadata=dict(document.metadata),
    )


def _citations(result: AttributionResult, context: Sequence[Document], per_claim: int, min_score: float) -> tuple[list[Citation], list[AnswerSentenceCitations]]:
    citations = []
    for core in result.citations(per_claim, min_score):
        source = core.source
        citations.append(
            Citation(
                number=core.number,
                document_id=source.doc_id,
                document_index=source.doc_index,
                metadata=dict(context[source.doc_index].metadata),
                text=source.text,
                start=source.start,
                end=source.end,
                score=source.score,
                claims=tuple(core.claims),
                claim_scores=tuple(core.claim_scores),
            )
        )
    sentences = []
    for index, claim in enumerate(result.answer_sentences):
        cited = [(c.claim_scores[c.claims.index(index)], c) for c in citations if index in c.claims]
        cited.sort(key=lambda pair: (-pair[0], pair[1].number))
        sentences.append(
            AnswerSentenceCitations(index=index, text=claim.text, start=claim.start, end=claim.end, citations=tuple(c for _, c in cited))
        )
    return citations, sentences


def attribute(
    attributor: Any,
    question: str | None,
    documents: Iterable[Document],
    answer: str | None,
    *,
    run_id: UUID | None = None,
    method: str = "hierarchical",
    keep_documents: int = 2,
    keep_sentences: int = 5,
    per_claim: int = 1,
    min_score: float = 0.0,
    attribute_kwargs: dict[str, Any] | None = None,
) -> tuple[CitationResult, Exception | None]:
    """Attribute ``answer`` to ``documents`` with ``attributor`` and build the citations.

    Never raises for a failed attribution: returns the result (``error`` set) and the
    exception, which the caller re-raises in strict mode."""
    context = unique_documents(documents)
    common = dict(run_id=run_id, question=question, answer=answer, context=tuple(context), per_claim=per_claim, min_score=min_score)
    try:
        if question is None:
            raise ValueError("no question: the run's input is not text and no retriever query was seen")
        if answer is None:
            raise ValueError("no answer: the run produced no LLM or chat model output")
        if not context:
            raise ValueError("no documents retrieved: nothing to cite")
        result = attributor.attribute(
            question,
            [_to_attribot(document, position) for position, document in enumerate(context)],
            answer,
            method=method,
            keep_documents=keep_documents,
            keep_sentences=keep_sentences,
            **(attribute_kwargs or {}),
        )
        citations, sentences = _citations(result, context, per_claim, min_score)
    except Exception as error:  # noqa: BLE001 - attribution must never break the user's chain
        message = f"{type(error).__name__}: {error}"
        logger.warning("attribution of run %s failed: %s", run_id, message)
        return CitationResult(**common, error=message), error
    return CitationResult(**common, citations=tuple(citations), answer_sentences=tuple(sentences), attribution=result), None
