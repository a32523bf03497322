"""The instrumentation hook that pairs a query's retrieved nodes with its synthesized answer.

Node postprocessors run before synthesis, so ``AttriBoTPostprocessor`` only *records* the nodes
it passes on, keyed by the id of the enclosing query or chat span (never by node id: concurrent
queries may retrieve the same nodes). Two handlers on the root dispatcher, registered once:

* ``AttriBoTSpanHandler`` tracks which open span belongs to which query/chat span (the
  "owner": the nearest enclosing ``BaseQueryEngine.query``/``aquery`` or
  ``BaseChatEngine.chat``/``achat``/``stream_chat``/``astream_chat`` span), attaches
  citations to chat engine responses when the chat span exits, and to streaming chat
  responses when their history writer (``write_response_to_history``) finishes;
* ``AttriBoTEventHandler`` attaches citations to query engine responses on ``QueryEndEvent``.

Streaming query responses get a wrapped token generator that attaches the citations when it is
exhausted. The dispatcher swallows handler exceptions silently, so every handler here catches,
logs and records (``response.metadata["citations_error"]``) its own errors.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    StreamingResponse,
)
from llama_index.core.chat_engine.types import (
    BaseChatEngine,
    StreamingAgentChatResponse,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.query import QueryEndEvent
from llama_index.core.instrumentation.span import BaseSpan, active_span_id
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.schema import NodeWithScore

logger = logging.getLogger(__name__)

_QUERY_METHODS = frozenset({"query", "aquery"})
_CHAT_METHODS = frozenset({"chat", "achat", "stream_chat", "astream_chat"})
_STREAM_WRITERS = frozenset({"write_response_to_history", "awrite_response_to_history"})
_PENDING = "_attribot_pending"  # attribute of a StreamingAgentChatResponse still streaming


class _Attributes(Protocol):
    def attribute_nodes(self, question: str, nodes: list[NodeWithScore], answer: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Record:
    """What one postprocessor call saw: who attributes, the question, the nodes passed on."""

    postprocessor: _Attributes
    question: str | None
    nodes: list[NodeWithScore]


def _method(span_id: str) -> str:
    """The method name of a dispatcher span id, ``"{Class}.{method}-{uuid4}"``."""
    return span_id[:-37].rsplit(".", 1)[-1] if len(span_id) > 37 else ""


class _Registry:
    """Open spans inside a query or chat span, and the records of those queries."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owners: dict[str, str] = {}
        self.records: dict[str, Record] = {}

    def enter(self, span_id: str, instance: Any, parent_id: str | None) -> None:
        method = _method(span_id)
        if (method in _QUERY_METHODS and isinstance(instance, BaseQueryEngine)) or (
            method in _CHAT_METHODS and isinstance(instance, BaseChatEngine)
        ):
            with self.lock:
                self.owners[span_id] = span_id
        elif parent_id is not None:
            with self.lock:
                owner = self.owners.get(parent_id)
                if owner is not None:
                    self.owners[span_id] = owner

    def leave(self, span_id: str) -> Record | None:
        """Forget a span; the record it owned, if it was a query or chat span."""
        with self.lock:
            if self.owners.pop(span_id, None) == span_id:
                return self.records.pop(span_id, None)
        return None

    def current_owner(self) -> str | None:
        span_id = active_span_id.get()
        with self.lock:
            return self.owners.get(span_id) if span_id is not None else None

    def put(self, owner: str, record: Record) -> None:
        with self.lock:
            if owner in self.owners:
                self.records[owner] = record

    def take(self, owner: str) -> Record | None:
        with self.lock:
            return self.records.pop(owner, None)


REGISTRY = _Registry()


def record_nodes(postprocessor: _Attributes, question: str | None, nodes: list[NodeWithScore]) -> bool:
    """Record ``nodes`` for the query or chat span this call runs in; ``False`` if none."""
    owner = REGISTRY.current_owner()
    if owner is None:
        return False
    REGISTRY.put(owner, Record(postprocessor, question, list(nodes)))
    return True


def _set_metadata(response: Any, entries: dict[str, Any]) -> None:
    metadata = getattr(response, "metadata", None)
    if metadata is None:
        metadata = {}
        # StreamingAgentChatResponse has no metadata field: it gets one.
        response.metadata = metadata
    metadata.update(entries)


def _finish(record: Record, response: Any, answer: str | None, question: str | None = None) -> None:
    """Attribute ``answer`` and attach the result; on failure attach and log the error."""
    try:
        question = record.question or question
        if not question:
            raise ValueError("the query string is unknown: the postprocessor was called without a query bundle")
        entries = record.postprocessor.attribute_nodes(question, record.nodes, answer or "")
    except Exception as error:  # never break the query
        logger.exception("attribot: attribution failed; the response is returned without citations")
        entries = {"citations_error": f"{type(error).__name__}: {error}"}
    try:
        _set_metadata(response, entries)
    except Exception:
        logger.exception("attribot: could not attach citations to a %s", type(response).__name__)


def attach(record: Record, response: Any, question: str | None = None) -> None:
    """Attach citations to ``response`` now, or when its stream is consumed."""
    if isinstance(response, StreamingResponse) and response.response_gen is not None:
        response.response_gen = _stream(record, response, response.response_gen, question)
    elif isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
        response.response_gen = _astream(record, response, response.response_gen, question)
    elif isinstance(response, StreamingAgentChatResponse):
        with REGISTRY.lock:
            done = response.is_done
            if not done:  # the history writer attaches them when it finishes
                response.__dict__[_PENDING] = (record, question)
        if done:
            _finish(record, response, response.response, question)
    else:  # Response, PydanticResponse, AgentChatResponse
        _finish(record, response, str(response), question)


def _stream(record: Record, response: StreamingResponse, tokens, question: str | None):
    parts = []
    for token in tokens:
        parts.append(token)
        yield token
    _finish(record, response, "".join(parts), question)


async def _astream(record: Record, response: AsyncStreamingResponse, tokens, question: str | None):
    parts = []
    async for token in tokens:
        parts.append(token)
        yield token
    await asyncio.to_thread(_finish, record, response, "".join(parts), question)


def _stream_written(response: StreamingAgentChatResponse) -> None:
    with REGISTRY.lock:
        pending = response.__dict__.pop(_PENDING, None)
    if pending is not None:
        record, question = pending
        _finish(record, response, response.response, question)


class AttriBoTSpanHandler(BaseSpanHandler[BaseSpan]):
    """Tracks query/chat span ownership; attaches citations to chat engine responses."""

    @classmethod
    def class_name(cls) -> str:
        return "AttriBoTSpanHandler"

    def span_enter(self, id_: str, bound_args: Any, instance: Any = None, parent_id: str | None = None, tags: Any = None, **kwargs: Any) -> None:
        try:
            REGISTRY.enter(id_, instance, parent_id)
        except Exception:
            logger.exception("attribot: span handler failed on entering %s", id_)

    def span_exit(self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kwargs: Any) -> None:
        try:
            record = REGISTRY.leave(id_)
            if record is not None and result is not None:
                # Chat engines (and any query engine whose QueryEndEvent did not come).
                attach(record, result)
            if isinstance(instance, StreamingAgentChatResponse) and _method(id_) in _STREAM_WRITERS:
                _stream_written(instance)
        except Exception:
            logger.exception("attribot: span handler failed on exiting %s", id_)

    def span_drop(self, id_: str, bound_args: Any, instance: Any = None, err: BaseException | None = None, **kwargs: Any) -> None:
        try:
            REGISTRY.leave(id_)
            if isinstance(instance, StreamingAgentChatResponse) and _method(id_) in _STREAM_WRITERS:
                with REGISTRY.lock:  # the stream failed: its consumer gets the exception
                    instance.__dict__.pop(_PENDING, None)
        except Exception:
            logger.exception("attribot: span handler failed on dropping %s", id_)

    # The base class's own span bookkeeping is not used.
    def new_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None


class AttriBoTEventHandler(BaseEventHandler):
    """Attaches citations to query engine responses on ``QueryEndEvent``."""

    @classmethod
    def class_name(cls) -> str:
        return "AttriBoTEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if not isinstance(event, QueryEndEvent) or event.span_id is None:
            return
        try:
            record = REGISTRY.take(event.span_id)
            if record is not None:
                query = event.query if isinstance(event.query, str) else getattr(event.query, "query_str", None)
                attach(record, event.response, query)
        except Exception:
            logger.exception("attribot: event handler failed on %s", event.class_name())


_install_lock = threading.Lock()


def install() -> None:
    """Register both handlers on the root dispatcher, once (idempotent, thread-safe)."""
    root = get_dispatcher()
    with _install_lock:
        if not any(type(h).__name__ == "AttriBoTSpanHandler" for h in root.span_handlers):
            root.add_span_handler(AttriBoTSpanHandler())
        if not any(type(h).__name__ == "AttriBoTEventHandler" for h in root.event_handlers):
            root.add_event_handler(AttriBoTEventHandler())
