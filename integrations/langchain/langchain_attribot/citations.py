"""Citation models and the one translation step: the LLM's messages and the LangChain
documents in, one ``attribute_messages_with`` call, citations out. No attribution logic lives
here."""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, ToolMessage
from pydantic import BaseModel, ConfigDict

from attribot_rag import AttributionResult, CitationOptions
from attribot_rag import Document as AttribotDocument

logger = logging.getLogger("langchain_attribot")

#: Name of the custom event carrying each ``CitationResult`` (``on_custom_event``,
#: ``astream_events``), sent by ``with_citations`` and by the handlers.
CITATIONS_EVENT = "attribot_citations"

#: Keys tried, in order, to find the question in a dict input.
QUESTION_KEYS = ("question", "query", "input")

#: Message types of LangChain and the chat-template roles they read as.
ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}


class _Model(BaseModel):
    """Frozen; ``model_dump_json`` writes values JSON cannot hold (metadata objects) as their
    ``repr`` instead of failing."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    def model_dump_json(self, **kwargs: Any) -> str:
        kwargs.setdefault("fallback", repr)
        return super().model_dump_json(**kwargs)


class Citation(_Model):
    """A numbered source sentence of one document the LLM read, and the answer sentences citing it.

    ``document.page_content[start:end] == text``. ``score`` is the sentence's leave-one-out
    score on the whole answer (nats of log-probability the answer loses without it);
    ``claim_scores[i]`` is its score on the tokens of answer sentence ``claims[i]`` only.
    """

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


class AnswerSentenceCitations(_Model):
    """One sentence (claim) of the answer, ``answer[start:end]``, and the citations it carries,
    best first."""

    index: int
    text: str
    start: int
    end: int
    citations: tuple[Citation, ...]


class CitationResult(_Model):
    """The citations of one RAG invocation.

    ``context``: the retrieved documents the LLM read, in the order of its prompt
    (``Citation.document_index`` points into it); ``unseen``: those it retrieved but did not
    read (filtered out, say). ``attribution`` is the core's full ``AttributionResult`` (every
    document and sentence score; ``attribution.prompt`` is the proxy's rendering of the LLM's
    messages). ``tags`` and ``metadata``: the root run's. When attribution failed, ``error``
    says why, ``attribution`` is ``None``, there are no citations and ``context`` holds every
    retrieved document.
    """

    run_id: UUID | None = None
    question: str | None = None
    answer: str | None = None
    context: tuple[Document, ...] = ()
    unseen: tuple[Document, ...] = ()
    citations: tuple[Citation, ...] = ()
    answer_sentences: tuple[AnswerSentenceCitations, ...] = ()
    attribution: AttributionResult | None = None
    error: str | None = None
    per_claim: int = 1
    min_score: float = 0.0
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = {}

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
        """The document a citation points into."""
        return self.context[citation.document_index]

    def to_html(self, heading: str | None = None) -> str:
        """The attribution as one self-contained HTML page (``AttributionResult.to_html``)."""
        if self.attribution is None:
            return f"<!doctype html><meta charset='utf-8'><p>{html.escape(self.answer or '')}</p><p>{html.escape(self.error or '')}</p>"
        return self.attribution.to_html(heading, per_claim=self.per_claim, min_score=self.min_score)

    def _repr_html_(self) -> str:
        return self.attribution._repr_html_() if self.attribution is not None else self.to_html()


def citation_options(
    method: str = "auto",
    budget: str = "balanced",
    keep_documents: int = 2,
    keep_sentences: int = 5,
    per_claim: int = 1,
    min_score: float = 0.0,
    attribute_kwargs: Mapping[str, Any] | None = None,
) -> CitationOptions:
    """The ``CitationOptions`` of the integration's keyword arguments (``attribute_kwargs``:
    any further fields, e.g. ``doc_method``); invalid settings fail here, at construction."""
    return CitationOptions(
        method=method,
        budget=budget,
        keep_documents=keep_documents,
        keep_sentences=keep_sentences,
        per_claim=per_claim,
        min_score=min_score,
        **(attribute_kwargs or {}),
    )


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
    if isinstance(inputs, Mapping):
        for key in (question_key,) if question_key else QUESTION_KEYS:
            text = text_of(inputs.get(key))
            if text is not None:
                return text
    return None


def chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as chat-template messages: their text (tool calls an AI message
    made written after it as ``name(arguments)``, the closest text to what the LLM read)."""
    out = []
    for message in messages:
        role = message.role if isinstance(message, ChatMessage) else ROLES.get(message.type, "user")
        content = str(message.text)
        if isinstance(message, AIMessage) and message.tool_calls:
            calls = "\n".join(
                f"{call['name']}({json.dumps(call['args'], ensure_ascii=False)})" for call in message.tool_calls
            )
            content = f"{content}\n{calls}" if content else calls
        out.append({"role": role, "content": content})
    return out


def documents_in(value: Any, depth: int = 3) -> list[Document]:
    """The ``Document`` objects a run returned: the value itself, the items of a list, the
    values of a dict, a tool message's artifact (a few levels deep)."""
    if isinstance(value, Document):
        return [value]
    if depth == 0 or isinstance(value, (str, bytes)):
        return []
    if isinstance(value, ToolMessage):
        return documents_in(value.artifact, depth - 1)
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [d for item in value for d in documents_in(item, depth - 1)]
    return []


def document_id(document: Document, position: int) -> str:
    """``Document.id``, else ``metadata["source"]``, else the retrieval position."""
    if document.id:
        return str(document.id)
    source = document.metadata.get("source")
    if source is not None and str(source):
        return str(source)
    return str(position)


def unique_documents(documents: Iterable[Document]) -> list[Document]:
    """Documents in retrieval order without repeats (same ``page_content``) and without empty
    ones: a text the prompt holds once can be one document only."""
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
    )


def _citations(
    result: AttributionResult, documents: Sequence[Document], read: list[int], per_claim: int, min_score: float
) -> tuple[list[Citation], list[AnswerSentenceCitations]]:
    """Citations of ``result`` (its ``doc_index`` indexes ``documents``), with
    ``document_index`` the position in ``read`` (the context in prompt order)."""
    position = {index: k for k, index in enumerate(read)}
    citations = []
    for core in result.citations(per_claim, min_score):
        source = core.source
        citations.append(
            Citation(
                number=core.number,
                document_id=source.doc_id,
                document_index=position[source.doc_index],
                metadata=dict(documents[source.doc_index].metadata),
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
            AnswerSentenceCitations(
                index=index, text=claim.text, start=claim.start, end=claim.end, citations=tuple(c for _, c in cited)
            )
        )
    return citations, sentences


def cite(
    attributor: Any,
    messages: str | Sequence[BaseMessage] | None,
    documents: Iterable[Document],
    answer: str | None,
    options: CitationOptions,
    *,
    no_documents: str = "no documents retrieved: nothing to cite",
    **info: Any,
) -> tuple[CitationResult, Exception | None]:
    """Attribute ``answer`` to the ``documents`` found in ``messages`` (the LLM's input: chat
    messages or a completion prompt) with ``attributor.attribute_messages_with``, and build
    the citations. ``info``: further ``CitationResult`` fields (run id, question, tags, ...).

    Never raises for a failed attribution: returns the result (``error`` set) and the
    exception, which the caller re-raises in strict mode."""
    retrieved = unique_documents(documents)
    common = dict(info, answer=answer, per_claim=options.per_claim, min_score=options.min_score)
    try:
        if messages is None or answer is None:
            raise ValueError("no answer: the run made no LLM or chat model call")
        if not retrieved:
            raise ValueError(no_documents)
        chat = messages if isinstance(messages, str) else chat_messages(messages)
        result = attributor.attribute_messages_with(
            chat, answer, [_to_attribot(d, i) for i, d in enumerate(retrieved)], options.attribution()
        )
        read = list(dict.fromkeys(span.doc_index for span in result.documents))
        citations, sentences = _citations(result, retrieved, read, options.per_claim, options.min_score)
    except Exception as error:  # noqa: BLE001 - attribution must never break the user's chain
        message = f"{type(error).__name__}: {error}"
        logger.warning("attribution of run %s failed: %s", info.get("run_id"), message)
        return CitationResult(**common, context=tuple(retrieved), error=message), error
    return (
        CitationResult(
            **common,
            context=tuple(retrieved[i] for i in read),
            unseen=tuple(retrieved[i] for i in result.unseen_documents),
            citations=tuple(citations),
            answer_sentences=tuple(sentences),
            attribution=result,
        ),
        None,
    )
