"""The result type, and what LangChain's events carry read as the core's inputs: messages, the
question, documents. Ranking, HTML and JSON are the core's."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, ToolMessage
from pydantic import Field

from attribot_rag import Document as AttribotDocument
from attribot_rag.api.citation_result import BaseCitationResult

logger = logging.getLogger("langchain_attribot")

#: The custom event carrying each ``CitationResult`` (``on_custom_event``, ``astream_events``).
CITATIONS_EVENT = "attribot_citations"
QUESTION_KEYS = ("question", "query", "input")  # where a dict input holds the question
ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}


class CitationResult(BaseCitationResult[Document]):
    """The citations of one RAG invocation (``attribot_rag.api.citation_result``): ``documents``,
    the retrieved ``Document`` objects (deduplicated) in the order of the LLM's prompt, those it
    lacks last; ``run_id``, ``tags``, ``metadata``: the root run's."""

    run_id: UUID | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


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
    if isinstance(inputs, Mapping):
        keys = (question_key,) if question_key else QUESTION_KEYS
        return next((t for t in (text_of(inputs.get(k)) for k in keys) if t is not None), None)
    return text_of(inputs)


def chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as chat-template messages: their text, and the tool calls an AI
    message made as ``name(arguments)`` (the closest text to what the LLM read)."""
    out = []
    for message in messages:
        role = message.role if isinstance(message, ChatMessage) else ROLES.get(message.type, "user")
        calls = message.tool_calls if isinstance(message, AIMessage) else []
        text = [str(message.text)] if message.text else []
        content = "\n".join(text + [f"{c['name']}({json.dumps(c['args'], ensure_ascii=False)})" for c in calls])
        out.append({"role": role, "content": content})
    return out


def documents_in(value: Any, depth: int = 3) -> list[Document]:
    """The ``Document`` objects a run returned: the value itself, the items of a list, the
    values of a dict, a tool message's artifact (a few levels deep)."""
    if isinstance(value, Document):
        return [value]
    if isinstance(value, ToolMessage):
        value = [value.artifact]
    if isinstance(value, Mapping):
        value = list(value.values())
    if depth == 0 or not isinstance(value, (list, tuple)):
        return []
    return [d for item in value for d in documents_in(item, depth - 1)]


def unique_documents(documents: Iterable[Document]) -> list[Document]:
    """Documents in retrieval order without repeats (same text) and without empty ones: a text
    the prompt holds once can be one document only."""
    first: dict[str, Document] = {}
    for document in documents:
        if document.page_content.strip():
            first.setdefault(document.page_content, document)
    return list(first.values())


def core_document(document: Document) -> AttribotDocument:
    """The core's document: the text, ``Document.id`` or ``metadata["source"]`` as its id (else
    the core names it by its title or place), a string ``metadata["title"]`` as its title."""
    title, source = document.metadata.get("title"), document.metadata.get("source")
    return AttribotDocument(
        text=document.page_content,
        id=str(name) if (name := document.id or source) is not None and str(name) else None,
        title=title if isinstance(title, str) and title.strip() else None,
    )
