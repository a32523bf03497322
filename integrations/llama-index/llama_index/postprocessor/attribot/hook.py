"""The instrumentation hook that pairs a query's nodes and its LLM's input with its answer.

Node postprocessors run before synthesis, so ``AttriBoTPostprocessor`` only *records* the nodes
it passes on, keyed by the id of the enclosing query or chat span (never by node id: concurrent
queries may retrieve the same nodes). Two handlers on the root dispatcher, registered once:

* ``AttriBoTSpanHandler`` tracks which open span belongs to which query/chat span (the
  "owner": the nearest enclosing ``BaseQueryEngine.query``/``aquery`` or
  ``BaseChatEngine.chat``/``achat``/``stream_chat``/``astream_chat`` span), attaches
  citations to chat engine responses when the chat span exits, and to streaming chat
  responses when their history writer (``write_response_to_history``) finishes;
* ``AttriBoTEventHandler`` records the input of the owner's last LLM call
  (``LLMChatStartEvent`` messages, ``LLMCompletionStartEvent`` prompt: for a completion model
  driven through ``chat``, the flattened prompt it really got) and attaches citations to query
  engine responses on ``QueryEndEvent``.

Streaming synthesizers call the LLM only when their stream is consumed, after the query or
chat span has ended (chat engines consume it in a history-writer thread or task): the stream a
synthesizer returns inside a call gets a wrapper that, while it pulls tokens, sends the LLM
events it causes to that call (``_CAPTURE``). Streaming query responses also get a wrapper
that attributes when the stream is exhausted.
Every response with citations coming carries a ``_Job`` whose future ``wait``/``await_result``
read. Attribution never runs on an event loop: there, and with ``background=True``, it runs in
one worker thread. The dispatcher swallows handler exceptions silently, so every handler here
catches, logs and records (``response.metadata["citations_error"]``) its own errors.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from llama_index.core.instrumentation.events.llm import (
    LLMChatStartEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.events.query import QueryEndEvent
from llama_index.core.instrumentation.span import BaseSpan, active_span_id
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.schema import NodeWithScore

from .citations import CitationResult

if TYPE_CHECKING:
    from .base import AttriBoTPostprocessor

logger = logging.getLogger(__name__)

#: What an LLM received: chat messages (``{"role", "content"}``) or a completion prompt.
Messages = list[dict[str, str]] | str

_QUERY_METHODS = frozenset({"query", "aquery"})
_CHAT_METHODS = frozenset({"chat", "achat", "stream_chat", "astream_chat"})
_STREAM_WRITERS = frozenset({"write_response_to_history", "awrite_response_to_history"})
_JOB = "_attribot_job"  # attribute of a response whose citations are coming
_CAPTURED = "_attribot_captured"  # attribute of a synthesizer stream whose LLM events are captured

# The call whose synthesizer stream is being pulled: the LLM events of a lazy stream go to it.
_CAPTURE: contextvars.ContextVar[Call | None] = contextvars.ContextVar("attribot_capture", default=None)


@dataclass
class Call:
    """What one query or chat call has shown so far: the nodes the postprocessor passed on
    (and which postprocessor) and the input of its last LLM call."""

    postprocessor: AttriBoTPostprocessor | None = None
    question: str | None = None
    nodes: list[NodeWithScore] = field(default_factory=list)
    messages: Messages | None = None


@dataclass
class _Job:
    """The attribution of one response: its call, the future of its ``CitationResult``, and
    whether it still waits for its stream to be consumed."""

    call: Call
    response: Any
    question: str | None
    future: Future = field(default_factory=Future)
    streaming: bool = False


def _method(span_id: str) -> str:
    """The method name of a dispatcher span id, ``"{Class}.{method}-{uuid4}"``."""
    return span_id[:-37].rsplit(".", 1)[-1] if len(span_id) > 37 else ""


class _Registry:
    """Open spans inside a query or chat span, and what those calls have shown."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owners: dict[str, str] = {}
        self.calls: dict[str, Call] = {}

    def enter(self, span_id: str, instance: Any, parent_id: str | None) -> None:
        method = _method(span_id)
        if (method in _QUERY_METHODS and isinstance(instance, BaseQueryEngine)) or (
            method in _CHAT_METHODS and isinstance(instance, BaseChatEngine)
        ):
            with self.lock:
                self.owners[span_id] = span_id
                self.calls[span_id] = Call()
        elif parent_id is not None:
            with self.lock:
                owner = self.owners.get(parent_id)
                if owner is not None:
                    self.owners[span_id] = owner

    def leave(self, span_id: str) -> Call | None:
        """Forget a span; the call it owned, if it was a query or chat span."""
        with self.lock:
            if self.owners.pop(span_id, None) == span_id:
                return self.calls.pop(span_id, None)
        return None

    def call_of(self, span_id: str | None) -> Call | None:
        """The call that span ``span_id`` runs in (caller holds the lock)."""
        owner = self.owners.get(span_id) if span_id is not None else None
        return self.calls.get(owner) if owner is not None else None

    def take(self, owner: str) -> Call | None:
        with self.lock:
            return self.calls.pop(owner, None)


REGISTRY = _Registry()


def record_nodes(postprocessor: AttriBoTPostprocessor, question: str | None, nodes: list[NodeWithScore]) -> bool:
    """Record ``nodes`` for the query or chat call this runs in; ``False`` if none."""
    with REGISTRY.lock:
        call = REGISTRY.call_of(active_span_id.get())
        if call is None:
            return False
        call.postprocessor, call.question, call.nodes = postprocessor, question, list(nodes)
    return True


def _messages_of(event: BaseEvent) -> Messages | None:
    if isinstance(event, LLMChatStartEvent):
        return [{"role": str(getattr(m.role, "value", m.role)), "content": m.content or ""} for m in event.messages]
    if isinstance(event, LLMCompletionStartEvent):
        return event.prompt
    return None


def _capture(response: StreamingResponse | AsyncStreamingResponse, call: Call) -> None:
    """Send the LLM events that pulling ``response``'s stream causes to ``call``."""
    if response.__dict__.get(_CAPTURED) or response.response_gen is None:
        return
    response.__dict__[_CAPTURED] = True
    tokens = response.response_gen
    response.response_gen = (
        _acaptured(call, tokens) if isinstance(response, AsyncStreamingResponse) else _captured(call, tokens)
    )


def _captured(call: Call, tokens):
    iterator, end = iter(tokens), object()
    while True:
        token = _CAPTURE.set(call)
        try:
            item = next(iterator, end)
        finally:
            _CAPTURE.reset(token)
        if item is end:
            return
        yield item


async def _acaptured(call: Call, tokens):
    iterator = aiter(tokens)
    while True:
        token = _CAPTURE.set(call)
        try:
            item = await anext(iterator)
        except StopAsyncIteration:
            return
        finally:
            _CAPTURE.reset(token)
        yield item


# -- attribution --------------------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _submit(function: Callable[..., None], *args: Any) -> None:
    """Run ``function`` in the process's attribution worker thread, in the current context
    (so that its span is a child of the query's)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attribot")
        _executor.submit(contextvars.copy_context().run, function, *args)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _set_metadata(response: Any, entries: dict[str, Any]) -> None:
    metadata = getattr(response, "metadata", None)
    if metadata is None:
        metadata = {}
        # StreamingAgentChatResponse has no metadata field: it gets one.
        response.metadata = metadata
    metadata.update(entries)


def _complete(job: _Job, answer: str | None) -> None:
    """Attribute ``answer`` and attach the result (on failure: the error, logged)."""
    call = job.call
    question = call.question or job.question
    try:
        assert call.postprocessor is not None
        result = call.postprocessor.attribute(call.nodes, answer or "", call.messages, question)
    except Exception as error:  # never break the query
        logger.exception("attribot: attribution failed; the response is returned without citations")
        result = CitationResult(
            question=question, answer=answer or "", cited_answer=answer or "", error=f"{type(error).__name__}: {error}"
        )
    try:
        _set_metadata(job.response, result.metadata())
    except Exception:
        logger.exception("attribot: could not attach citations to a %s", type(job.response).__name__)
    job.future.set_result(result)


def _finish(job: _Job, answer: str | None) -> None:
    """Attribute now in this thread, or in the worker thread: in the background, or when this
    thread runs an event loop (never block it)."""
    assert job.call.postprocessor is not None
    if job.call.postprocessor.background or _on_event_loop():
        job.streaming = False
        _submit(_complete, job, answer)
    else:
        _complete(job, answer)


def attach(call: Call, response: Any, question: str | None = None) -> None:
    """Attach citations to ``response`` now, later, or when its stream is consumed."""
    if call.postprocessor is None:  # no AttriBoTPostprocessor ran in this call
        return
    job = _Job(call, response, question)
    response.__dict__[_JOB] = job
    if isinstance(response, StreamingResponse) and response.response_gen is not None:
        job.streaming = True
        response.response_gen = _stream(job, response.response_gen)
    elif isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
        job.streaming = True
        response.response_gen = _astream(job, response.response_gen)
    elif isinstance(response, StreamingAgentChatResponse):
        with REGISTRY.lock:
            done = response.is_done
            job.streaming = not done  # the history writer finishes it
        if done:
            _finish(job, response.response)
    else:  # Response, PydanticResponse, AgentChatResponse
        _finish(job, str(response))


def _stream(job: _Job, tokens):
    parts = []
    for token in tokens:
        parts.append(token)
        yield token
    _finish(job, "".join(parts))


async def _astream(job: _Job, tokens):
    parts = []
    async for token in tokens:
        parts.append(token)
        yield token
    if job.call.postprocessor is not None and job.call.postprocessor.background:
        _finish(job, "".join(parts))
    else:  # the citations are there when the stream ends, without blocking the loop
        job.streaming = False
        await asyncio.to_thread(_complete, job, "".join(parts))


def _stream_written(response: StreamingAgentChatResponse) -> None:
    with REGISTRY.lock:
        job = response.__dict__.get(_JOB)
        ready = job is not None and job.streaming
        if ready:
            job.streaming = False
    if ready:
        _finish(job, response.response)


def future_of(response: Any) -> Future:
    """The future of ``response``'s ``CitationResult``."""
    job = getattr(response, "__dict__", {}).get(_JOB)
    if job is None:
        raise ValueError(
            f"no citations are coming for this {type(response).__name__}: it is not the response "
            "of a query or chat engine call whose node_postprocessors include AttriBoTPostprocessor"
        )
    return job.future


def wait(response: Any, timeout: float | None = None) -> CitationResult:
    """The ``CitationResult`` of ``response``, waiting at most ``timeout`` seconds."""
    future = future_of(response)
    try:
        return future.result(timeout)
    except FutureTimeout:
        job = response.__dict__[_JOB]
        why = (
            "its stream has not been consumed yet (citations come at its end)"
            if job.streaming
            else "the attribution is still running"
        )
        raise TimeoutError(f"no citations after {timeout} s: {why}") from None


# -- handlers -----------------------------------------------------------------------------


class AttriBoTSpanHandler(BaseSpanHandler[BaseSpan]):
    """Tracks query/chat span ownership; attaches citations to chat engine responses."""

    @classmethod
    def class_name(cls) -> str:
        return "AttriBoTSpanHandler"

    def span_enter(
        self,
        id_: str,
        bound_args: Any,
        instance: Any = None,
        parent_id: str | None = None,
        tags: Any = None,
        **kwargs: Any,
    ) -> None:
        try:
            REGISTRY.enter(id_, instance, parent_id)
        except Exception:
            logger.exception("attribot: span handler failed on entering %s", id_)

    def span_exit(self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kwargs: Any) -> None:
        try:
            if isinstance(result, (StreamingResponse, AsyncStreamingResponse)):
                with REGISTRY.lock:
                    inside = REGISTRY.call_of(id_)
                if inside is not None:  # a synthesizer's stream: its LLM runs when it is pulled
                    _capture(result, inside)
            call = REGISTRY.leave(id_)
            if call is not None and result is not None:
                # Chat engines (and any query engine whose QueryEndEvent did not come).
                attach(call, result)
            if isinstance(instance, StreamingAgentChatResponse) and _method(id_) in _STREAM_WRITERS:
                _stream_written(instance)
        except Exception:
            logger.exception("attribot: span handler failed on exiting %s", id_)

    def span_drop(
        self, id_: str, bound_args: Any, instance: Any = None, err: BaseException | None = None, **kwargs: Any
    ) -> None:
        try:
            REGISTRY.leave(id_)
            if isinstance(instance, StreamingAgentChatResponse) and _method(id_) in _STREAM_WRITERS:
                with REGISTRY.lock:  # the stream failed: its consumer gets the exception
                    job = instance.__dict__.get(_JOB)
                    failed = job is not None and job.streaming
                    if failed:
                        job.streaming = False
                if failed:
                    job.future.set_exception(RuntimeError(f"the chat stream failed, nothing to attribute: {err}"))
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
    """Records each call's last LLM input; attaches citations to query engine responses on
    ``QueryEndEvent``."""

    @classmethod
    def class_name(cls) -> str:
        return "AttriBoTEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        try:
            messages = _messages_of(event)
            if messages is not None:
                with REGISTRY.lock:
                    call = REGISTRY.call_of(event.span_id) or _CAPTURE.get()
                    if call is not None:
                        call.messages = messages
            elif isinstance(event, QueryEndEvent) and event.span_id is not None:
                call = REGISTRY.take(event.span_id)
                if call is not None:
                    query = event.query if isinstance(event.query, str) else getattr(event.query, "query_str", None)
                    attach(call, event.response, query)
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
