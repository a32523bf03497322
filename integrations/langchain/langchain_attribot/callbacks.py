"""Callback handlers that attach citations to every invocation of a RAG chain or graph.

They are LangChain tracers: LangChain builds the run tree of each root run (the invocation),
and when the root ends the handler reads it: the input of the last LLM or chat model call
(the exact messages the LLM read) and every ``Document`` any run returned (retrievers,
lambdas, tools). It attributes the LLM's answer to the documents found in its messages and
keeps the ``CitationResult`` per root run id (``handler.results``), as
``handler.last_result``, through ``on_result`` and as the custom event ``attribot_citations``.
A callback handler cannot change a chain's output: it only watches.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from types import MappingProxyType
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackManager, CallbackManager
from langchain_core.runnables import ensure_config
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer
from langchain_core.tracers.schemas import Run

from attribot_rag import CitationOptions, shared_attributor

from .citations import (
    CITATIONS_EVENT,
    CitationResult,
    citation_options,
    cite,
    documents_in,
    logger,
    question_of,
    text_of,
)

_MESSAGES = "attribot_messages"  # Run.extra key: the chat model's own messages, as it read them
_HANDLERS = "attribot_handlers"  # Run.extra key of a root: the handlers of its invocation
_MODELS = ("llm", "chat_model")


def _runs(root: Run) -> Iterator[Run]:
    """``root`` and its descendants, children before their parent (retrieval order first)."""
    for child in root.child_runs:
        yield from _runs(child)
    yield root


class _Citations:
    """The state and logic both handlers share; each adds only its sync or async entry points."""

    def __init__(
        self,
        attributor: Any = None,
        *,
        method: str = "auto",
        budget: str = "balanced",
        keep_documents: int = 2,
        keep_sentences: int = 5,
        per_claim: int = 1,
        min_score: float = 0.0,
        attribute_kwargs: dict[str, Any] | None = None,
        options: CitationOptions | None = None,
        question_key: str | None = None,
        background: bool = False,
        raise_error: bool = False,
        on_result: Callable[[CitationResult], Any] | None = None,
        max_results: int | None = 1000,
    ) -> None:
        super().__init__(_schema_format="original+chat")  # chat models report their messages
        self.attributor = attributor if attributor is not None else shared_attributor()
        self.options = options or citation_options(
            method, budget, keep_documents, keep_sentences, per_claim, min_score, attribute_kwargs
        )
        self.question_key = question_key
        self.background = background
        self.raise_error = raise_error  # read by LangChain: strict handlers' errors propagate
        self.on_result = on_result
        self.max_results = max_results
        self._lock = threading.Lock()
        self._results: OrderedDict[UUID, CitationResult] = OrderedDict()
        self._futures: OrderedDict[UUID, Future[CitationResult]] = OrderedDict()
        self._open: set[UUID] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._last_run_id: UUID | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def results(self) -> Mapping[UUID, CitationResult]:
        """Finished results by root run id (a read-only view; oldest dropped past ``max_results``)."""
        return MappingProxyType(self._results)

    @property
    def last_run_id(self) -> UUID | None:
        """The id of the root run that ended last with an LLM answer to attribute."""
        return self._last_run_id

    @property
    def last_result(self) -> CitationResult | None:
        """The result of the root run that ended last; ``None`` while it is still being
        attributed in the background (use ``wait()``)."""
        with self._lock:
            return self._results.get(self._last_run_id) if self._last_run_id else None

    def wait(self, run_id: UUID | None = None, timeout: float | None = None) -> CitationResult:
        """The result of root run ``run_id`` (default: the last one), waiting up to ``timeout``
        seconds for a run still going or being attributed. Raises ``KeyError`` for a run this
        handler never saw start and for one that ended without a result (no LLM call, or it
        failed), ``TimeoutError`` saying whether the run or its attribution is still going;
        strict handlers (``raise_error=True``) re-raise the attribution's error."""
        future = self._future(run_id)
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise TimeoutError(self._timeout_message(run_id, timeout)) from None

    def shutdown(self, wait: bool = True) -> None:
        """Stop the background worker (after finishing queued attributions when ``wait``)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
            self._executor = None

    # -- the run tree -------------------------------------------------------------------------

    def _future(self, run_id: UUID | None) -> Future[CitationResult]:
        with self._lock:
            run_id = run_id or self._last_run_id
            if run_id is None:
                raise KeyError("no run has ended yet")
            future = self._futures.get(run_id)
        if future is None:
            raise KeyError(
                f"unknown run {run_id}: this handler never saw it start (pass config={{'callbacks': [handler], 'run_id': ...}}), "
                f"or its result was dropped (max_results={self.max_results})"
            )
        return future

    def _timeout_message(self, run_id: UUID | None, timeout: float | None) -> str:
        state = (
            "still running" if (run_id or self._last_run_id) in self._open else "ended; its attribution is still going"
        )
        return f"run {run_id or self._last_run_id} {state} after {timeout} s"

    def _created(self, run: Run) -> None:
        """A root gets its future; a descendant tells the root which handlers its invocation
        has (read from the running config), so that the result can be sent to them as an event."""
        if run.parent_run_id is None:
            with self._lock:
                self._futures[run.id] = Future()
                self._open.add(run.id)
                while self.max_results is not None and len(self._futures) > self.max_results:
                    self._futures.popitem(last=False)
            return
        root = self.run_map.get(str(run.trace_id))
        if root is not None and _HANDLERS not in root.extra:
            callbacks = ensure_config().get("callbacks")
            if isinstance(callbacks, BaseCallbackManager):
                root.extra[_HANDLERS] = [h for h in callbacks.inheritable_handlers if h is not self]

    def _keep_messages(self, run: Run, messages: list[list[Any]]) -> None:
        run.extra[_MESSAGES] = messages[0] if messages else []

    def _job(self, root: Run) -> Callable[[], CitationResult] | None:
        """The attribution of a finished root run, or ``None`` (failed, or no LLM call: its
        future then says so)."""
        with self._lock:
            self._open.discard(root.id)
            future = self._futures.get(root.id)
        runs = list(_runs(root))
        for run in runs:  # LangChain keeps these for the tracer's lifetime; the tree is done
            self.order_map.pop(run.id, None)
        models = [r for r in runs if r.run_type in _MODELS and r.outputs and not r.error]
        if root.error or not models:
            why = f"failed ({root.error.splitlines()[0]})" if root.error else "ended without an LLM or chat model call"
            if future is not None:
                future.set_exception(KeyError(f"run {root.id} {why}: nothing to attribute"))
            return None
        last = max(models, key=lambda r: r.end_time)
        messages = last.extra.get(_MESSAGES) if last.run_type == "chat_model" else last.inputs["prompts"][0]
        answer = last.outputs["generations"][0][0]["text"] if last.outputs.get("generations") else None
        documents = [d for r in runs if r.run_type not in _MODELS for d in documents_in(r.outputs)]
        queries = [r.inputs.get("query") for r in runs if r.run_type == "retriever"]
        inputs = root.inputs.get("input") if set(root.inputs) == {"input"} else root.inputs
        question = question_of(inputs, self.question_key) or next(filter(None, queries), None) or text_of(messages)
        no_documents = "no documents retrieved: nothing to cite"
        if root.run_type in _MODELS:
            no_documents += (
                "; the handler is attached to the model only and sees no retrieval: "
                "attach it to the chain or graph (invoke(..., config={'callbacks': [handler]}))"
            )
        info = {
            "run_id": root.id,
            "question": question,
            "tags": tuple(root.tags or ()),
            "metadata": dict(root.extra.get("metadata") or {}),
            "no_documents": no_documents,
        }
        with self._lock:
            self._last_run_id = root.id
        return partial(self._attribute, future, messages, documents, answer, info)

    def _attribute(
        self,
        future: Future[CitationResult] | None,
        messages: Any,
        documents: list,
        answer: str | None,
        info: dict[str, Any],
    ) -> CitationResult:
        result, error = cite(self.attributor, messages, documents, answer, self.options, **info)
        with self._lock:
            self._results[result.run_id] = result
            while self.max_results is not None and len(self._results) > self.max_results:
                self._results.popitem(last=False)
        if future is not None:
            if error is not None and self.raise_error:
                future.set_exception(error)
            else:
                future.set_result(result)
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                if self.raise_error:
                    raise
                logger.exception("on_result callback failed for run %s", result.run_id)
        if error is not None and self.raise_error:
            raise error
        return result

    def _submit(self, job: Callable[[], CitationResult]) -> None:
        """Attribute in the background worker (errors stay on the run's future)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attribot")
            self._executor.submit(job)

    def _event(self, root: Run, manager_type: type[BaseCallbackManager]) -> BaseCallbackManager | None:
        """A callback manager that sends the result, as a custom event of the root run, to the
        other handlers of its invocation (tracers such as Langfuse or Phoenix)."""
        handlers = root.extra.get(_HANDLERS)
        if not handlers:
            return None
        return manager_type(
            handlers=handlers, parent_run_id=root.id, tags=root.tags, metadata=root.extra.get("metadata")
        )


class AttriBoTCallbackHandler(_Citations, BaseTracer):
    """Attach leave-one-out citations to every invocation of a RAG chain or LangGraph graph.

    ``chain.invoke(q, config={"callbacks": [handler]})`` then ``handler.last_result`` or
    ``handler.results[run_id]`` (pass ``config={"run_id": ...}`` to choose the id). The handler
    attributes the input of the invocation's last LLM or chat model call, with the documents
    that any run of the invocation returned and the LLM read. Works with ``invoke``,
    ``batch``, ``stream`` and, run off the event loop by LangChain, ``ainvoke``/``astream``;
    one handler may serve concurrent invocations. A sync invocation (and a sync stream) ends
    after attribution; ``background=True`` attributes in a worker thread instead.

    ``attributor``: any object with ``attribute_messages_with`` (an ``attribot_rag.Attributor``
    or ``RemoteAttributor``; default: ``attribot_rag.shared_attributor()``, the embedded model).
    ``method`` (default ``"auto"``), ``budget``, ``keep_documents``, ``keep_sentences``,
    ``per_claim``, ``min_score`` and ``attribute_kwargs`` (further ``CitationOptions`` fields,
    e.g. ``{"doc_method": "fast"}``), or all of them as ``options=CitationOptions(...)``.
    ``question_key``: the input key holding the question when the chain's input is a dict
    (default: ``question``, ``query`` or ``input``; else the first retriever query; reported as
    ``result.question``, attribution does not need it). ``background``: attribute in a worker thread;
    ``handler.wait(run_id)`` returns the result. ``raise_error``: let attribution errors
    propagate (through the chain, or ``wait()`` in the background) instead of recording them
    on ``result.error``. ``on_result``: called with every result.
    """

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], *, run_id: UUID, **kwargs: Any) -> Run:
        run = super().on_chat_model_start(serialized, messages, run_id=run_id, **kwargs)
        self._keep_messages(run, messages)
        return run

    def _on_run_create(self, run: Run) -> None:
        self._created(run)

    def _persist_run(self, run: Run) -> None:
        job = self._job(run)
        if job is None:
            return
        if self.background:
            self._submit(job)
            return
        result = job()
        manager = self._event(run, CallbackManager)
        if manager is not None:
            manager.on_custom_event(CITATIONS_EVENT, result, run_id=run.id)


class AsyncAttriBoTCallbackHandler(_Citations, AsyncBaseTracer):
    """``AttriBoTCallbackHandler`` for async apps (``ainvoke``, ``astream``, ``abatch``,
    ``astream_events``): attribution runs in a worker thread (``asyncio.to_thread``), never
    on the event loop. ``await handler.await_result(run_id)`` waits for a background one."""

    async def on_chat_model_start(
        self, serialized: Any, messages: list[list[Any]], *, run_id: UUID, **kwargs: Any
    ) -> Run:
        run = await super().on_chat_model_start(serialized, messages, run_id=run_id, **kwargs)
        self._keep_messages(run, messages)
        return run

    async def _on_run_create(self, run: Run) -> None:
        self._created(run)

    async def _persist_run(self, run: Run) -> None:
        job = self._job(run)
        if job is None:
            return
        if self.background:
            self._submit(job)
            return
        result = await asyncio.to_thread(job)
        manager = self._event(run, AsyncCallbackManager)
        if manager is not None:
            await manager.on_custom_event(CITATIONS_EVENT, result, run_id=run.id)

    async def await_result(self, run_id: UUID | None = None, timeout: float | None = None) -> CitationResult:
        """``wait()`` for async code: awaits the result without blocking the loop."""
        future = self._future(run_id)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(self._timeout_message(run_id, timeout)) from None
