"""The instrumentation hook of one ``AttriBoTPostprocessor``: it pairs each query or chat call's
nodes and its LLM's input with the call's answer, then hands the citations over.

A call is the span a ``QueryStartEvent`` fires in, or a chat engine span called with a
``message``; every open span inside it points at it, so the ``span_id`` of an event (the LLM's
start) leads to it. When the call's span exits, its response gets a ``Job``: attributed at once,
in the worker thread (in the background, on an event loop), or at the end of its stream. A
streaming synthesizer calls its LLM only when its stream is pulled, after the call: the stream
is wrapped so that the LLM events it causes go to its call (``_capturing``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from inspect import BoundArguments
from typing import TYPE_CHECKING, Any

from llama_index.core.base.response.schema import AsyncStreamingResponse, PydanticResponse, Response, StreamingResponse
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine, StreamingAgentChatResponse
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent, LLMCompletionStartEvent
from llama_index.core.instrumentation.events.query import QueryStartEvent
from llama_index.core.instrumentation.span import BaseSpan, active_span_id
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.schema import NodeWithScore

from attribot_rag.core.messages import Messages

from .citations import CitationResult

if TYPE_CHECKING:
    from .base import AttriBoTPostprocessor

logger = logging.getLogger(__name__)

KEY = "citation_result"  # the entry of response.metadata that receives the CitationResult
_WITH_METADATA = (Response, PydanticResponse, StreamingResponse, AsyncStreamingResponse, AgentChatResponse)
_STREAMS = (StreamingResponse, AsyncStreamingResponse)


@dataclass(eq=False)
class Call:
    """The nodes the postprocessor passed on in one call (``None``: none) and its last LLM input."""

    span_id: str
    question: str | None = None
    nodes: list[NodeWithScore] | None = None
    messages: Messages | None = None


@dataclass(eq=False)
class Job:
    """The attribution of one response, held weakly: a dropped response needs no citations."""

    call: Call
    response: weakref.ref[Any]
    future: Future[CitationResult] = field(default_factory=Future)
    streaming: bool = False  # waits for its stream to be consumed


class _CallSpan(BaseSpan):
    call: Call


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Hook(BaseSpanHandler[_CallSpan], BaseEventHandler):
    """The span and event handler of one postprocessor (on the root dispatcher from ``open`` to
    ``close``, which swallows handler errors: each logs its own), its jobs and worker thread."""

    _postprocessor: AttriBoTPostprocessor = PrivateAttr()
    _jobs: dict[int, Job] = PrivateAttr(default_factory=dict)  # by id() of a live response
    _executor: ThreadPoolExecutor | None = PrivateAttr(default=None)  # None: closed
    _capturing: contextvars.ContextVar[Call | None] = PrivateAttr()

    def __init__(self, postprocessor: AttriBoTPostprocessor) -> None:
        super().__init__()
        self._postprocessor = postprocessor
        self._capturing = contextvars.ContextVar("attribot_call", default=None)

    def open(self) -> None:
        with self.lock:
            if self._executor is not None:
                return
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attribot")
        get_dispatcher().add_span_handler(self)
        get_dispatcher().add_event_handler(self)

    def close(self) -> None:
        with self.lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            root = get_dispatcher()
            root.span_handlers[:] = [h for h in root.span_handlers if h is not self]
            root.event_handlers[:] = [h for h in root.event_handlers if h is not self]
            self.open_spans.clear()
            executor.shutdown(wait=True)

    def new_span(self, id_: str, bound_args: BoundArguments, instance: Any = None, **kwargs: Any) -> _CallSpan | None:
        parent_span_id = kwargs.get("parent_span_id")
        if isinstance(instance, BaseChatEngine) and "message" in bound_args.arguments:
            return _CallSpan(id_=id_, parent_id=parent_span_id, call=Call(id_))
        parent = self.open_spans.get(parent_span_id or "")
        return None if parent is None else _CallSpan(id_=id_, parent_id=parent_span_id, call=parent.call)

    def prepare_to_exit_span(self, id_: str, instance: Any = None, result: Any = None, **_: Any) -> _CallSpan | None:
        self._guarded(self._exited, self.open_spans.get(id_), instance, result, None)
        return self.open_spans.get(id_)

    def prepare_to_drop_span(self, id_: str, instance: Any = None, err: BaseException | None = None, **_: Any) -> Any:
        self._guarded(self._exited, None, instance, None, err)
        return self.open_spans.get(id_)

    def handle(self, event: BaseEvent, **_: Any) -> None:
        self._guarded(self._event, event)

    @staticmethod
    def _guarded(handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            logger.exception("attribot: instrumentation handler failed; no citations for this call")

    def call_of(self, span_id: str | None) -> Call | None:
        span = self.open_spans.get(span_id or "")
        return None if span is None else span.call

    def record(self, question: str | None, nodes: list[NodeWithScore]) -> bool:
        """Record ``nodes`` for the call this runs in; ``False`` if none."""
        call = self.call_of(active_span_id.get())
        if call is not None:
            call.question, call.nodes = question, list(nodes)
        return call is not None

    def _event(self, event: BaseEvent) -> None:
        if isinstance(event, QueryStartEvent) and event.span_id is not None:
            with self.lock:  # the query's own call, even inside another call
                self.open_spans[event.span_id] = _CallSpan(id_=event.span_id, call=Call(event.span_id))
        elif isinstance(event, (LLMChatStartEvent, LLMCompletionStartEvent)):
            call = self.call_of(event.span_id) or self._capturing.get()
            if call is not None and isinstance(event, LLMChatStartEvent):
                call.messages = [{"role": m.role.value, "content": m.content or ""} for m in event.messages]
            elif call is not None and isinstance(event, LLMCompletionStartEvent):
                call.messages = event.prompt

    def _exited(self, span: _CallSpan | None, instance: Any, result: Any, error: BaseException | None) -> None:
        if span is not None and span.call.span_id == span.id_ and span.call.nodes is not None and result is not None:
            self._attach(span.call, result)
        elif span is not None and isinstance(result, _STREAMS):  # a synthesizer's: its LLM runs when pulled
            self._wrap(result, span.call, None)
        if isinstance(instance, StreamingAgentChatResponse):  # its history writer ended
            self._written(instance, error)

    def _wrap(self, response: StreamingResponse | AsyncStreamingResponse, call: Call, job: Job | None) -> None:
        """Pull ``response``'s stream with its LLM events going to ``call``; with a ``job``,
        attribute what it yielded at its end."""
        if isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
            response.response_gen = self._apull(call, response.response_gen, job)
        elif isinstance(response, StreamingResponse) and response.response_gen is not None:
            response.response_gen = self._pull(call, response.response_gen, job)

    def _pull(self, call: Call, tokens: Iterator[str], job: Job | None) -> Iterator[str]:
        iterator, parts = iter(tokens), []
        while True:
            token = self._capturing.set(call)
            try:
                item = next(iterator)
            except StopIteration:
                break
            finally:
                self._capturing.reset(token)
            parts.append(item)
            yield item
        if job is not None:
            self._finish(job, "".join(parts))

    async def _apull(self, call: Call, tokens: AsyncIterator[str], job: Job | None) -> AsyncIterator[str]:
        iterator, parts = aiter(tokens), []
        while True:
            token = self._capturing.set(call)
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                break
            finally:
                self._capturing.reset(token)
            parts.append(item)
            yield item
        later = self._finish(job, "".join(parts)) if job is not None else None
        if later is not None and not self._postprocessor.background:
            await asyncio.wrap_future(later)  # the citations are there when the stream ends

    def _written(self, response: StreamingAgentChatResponse, error: BaseException | None) -> None:
        with self.lock:
            job = self._jobs.get(id(response))
            if job is None or not job.streaming or not (response.is_done or error):
                return
            job.streaming = False
        if error is None:
            self._finish(job, response.response)
        else:
            self._settle(job, self._failed(job, response.response, f"the chat stream failed: {error}"))

    def _attach(self, call: Call, response: Any) -> None:
        """Attribute ``response`` now, later, or when its stream has been consumed."""
        job = Job(call, weakref.ref(response))
        with self.lock:
            self._jobs[id(response)] = job
        weakref.finalize(response, self._jobs.pop, id(response), None)
        if isinstance(response, _STREAMS) and response.response_gen is not None:
            job.streaming = True
            self._wrap(response, call, job)
        elif isinstance(response, StreamingAgentChatResponse):
            with self.lock:
                job.streaming = not response.is_done  # then its history writer finishes it
            if not job.streaming:
                self._finish(job, response.response)
        else:  # Response, PydanticResponse, AgentChatResponse
            self._finish(job, str(response))

    def _finish(self, job: Job, answer: str) -> Future[None] | None:
        """Attribute ``answer`` in this thread, or in the worker thread: in the background, or
        when this thread runs an event loop (never block it)."""
        if not (self._postprocessor.background or _on_event_loop()):
            self._complete(job, answer)
            return None
        job.streaming = False
        with self.lock:
            if self._executor is not None:
                return self._executor.submit(contextvars.copy_context().run, self._complete, job, answer)
        self._settle(job, self._failed(job, answer, "the postprocessor was closed"))
        return None

    def _complete(self, job: Job, answer: str) -> None:
        call = job.call
        self._settle(job, self._postprocessor.attribute(call.nodes or [], answer, call.messages, call.question))

    def _settle(self, job: Job, result: CitationResult) -> None:
        """Hand ``result`` over: to the response's ``metadata`` (where it has one), and to ``wait``."""
        with self.lock:
            response = job.response()
            if isinstance(response, _WITH_METADATA):
                if response.metadata is None:
                    response.metadata = {}
                response.metadata[KEY] = result
            job.future.set_result(result)

    def _failed(self, job: Job, answer: str, error: str) -> CitationResult:
        logger.error("attribot: %s; the answer is returned without citations", error)
        return CitationResult.failed(answer, error, job.call.question, self._postprocessor.options)

    def job_of(self, response: Any) -> Job:
        job = self._jobs.get(id(response))
        if job is None or job.response() is not response:
            raise ValueError(
                f"no citations are coming for this {type(response).__name__}: it is not the response of a "
                "query or chat engine call whose node_postprocessors include this AttriBoTPostprocessor"
            )
        return job
