"""Callback handlers that attach citations to every invocation of a RAG chain.

A callback handler cannot change a chain's output, so the handler only watches: within one
root run it pairs the question, the documents of every retriever call and the final LLM
answer, attributes the answer when the root run ends, and keeps the ``CitationResult`` per
root run id (``handler.results``), as ``handler.last_result`` and through ``on_result``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.outputs import LLMResult

from .citations import (
    CitationResult,
    attribute,
    default_attributor,
    logger,
    question_of,
    text_of,
)


@dataclass
class _Root:
    """What one root run has shown so far."""

    question: str | None = None
    queries: list[str] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    answer: str | None = None
    saw_llm: bool = False
    runs: set[UUID] = field(default_factory=set)


class _Tracker:
    """Run pairing, attribution and result storage shared by the sync and async handlers."""

    def __init__(
        self,
        attributor: Any = None,
        *,
        method: str = "hierarchical",
        keep_documents: int = 2,
        keep_sentences: int = 5,
        per_claim: int = 1,
        min_score: float = 0.0,
        question_key: str | None = None,
        background: bool = False,
        raise_error: bool = False,
        on_result: Callable[[CitationResult], Any] | None = None,
        max_results: int | None = 1000,
        attribute_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.attributor = attributor if attributor is not None else default_attributor()
        self.method = method
        self.keep_documents = keep_documents
        self.keep_sentences = keep_sentences
        self.per_claim = per_claim
        self.min_score = min_score
        self.question_key = question_key
        self.background = background
        self.raise_error = raise_error  # read by LangChain: strict handlers' errors propagate
        self.on_result = on_result
        self.max_results = max_results
        self.attribute_kwargs = dict(attribute_kwargs or {})
        self._lock = threading.Lock()
        self._roots: dict[UUID, _Root] = {}
        self._root_of: dict[UUID, UUID] = {}
        self._results: OrderedDict[UUID, CitationResult] = OrderedDict()
        self._futures: OrderedDict[UUID, Future[CitationResult]] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None
        self._last_run_id: UUID | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def results(self) -> Mapping[UUID, CitationResult]:
        """Finished results by root run id (a read-only view; oldest dropped past ``max_results``)."""
        return MappingProxyType(self._results)

    @property
    def last_run_id(self) -> UUID | None:
        """The id of the root run that ended last (and had an answer to attribute)."""
        return self._last_run_id

    @property
    def last_result(self) -> CitationResult | None:
        """The result of the root run that ended last; ``None`` while it is still being
        attributed in the background (use ``wait()``)."""
        with self._lock:
            return self._results.get(self._last_run_id) if self._last_run_id else None

    def wait(self, run_id: UUID | None = None, timeout: float | None = None) -> CitationResult:
        """The result of root run ``run_id`` (default: the last one), waiting for a background
        attribution to finish. Strict handlers (``raise_error=True``) re-raise its error."""
        with self._lock:
            run_id = run_id or self._last_run_id
            if run_id is None:
                raise KeyError("no run has ended yet")
            future = self._futures.get(run_id)
            result = self._results.get(run_id)
        if future is not None:
            return future.result(timeout)
        if result is None:
            raise KeyError(f"no citations for run {run_id}: unknown, still running, or without an LLM answer")
        return result

    def shutdown(self, wait: bool = True) -> None:
        """Stop the background worker (after finishing queued attributions when ``wait``)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
            self._executor = None

    # -- run pairing ------------------------------------------------------------------------

    def _start(self, run_id: UUID, parent_run_id: UUID | None) -> tuple[_Root, bool]:
        """Register a run under its root; a run whose parent this handler has not seen is a
        root (the handler may be attached to an inner part of a larger chain)."""
        with self._lock:
            root_id = self._root_of.get(parent_run_id) if parent_run_id is not None else None
            is_root = root_id is None or root_id not in self._roots
            if is_root:
                root_id = run_id
                self._roots[root_id] = _Root()
            root = self._roots[root_id]
            root.runs.add(run_id)
            self._root_of[run_id] = root_id
            return root, is_root

    def _root(self, run_id: UUID) -> _Root | None:
        with self._lock:
            root_id = self._root_of.get(run_id)
            return self._roots.get(root_id) if root_id is not None else None

    def _chain_start(self, inputs: Any, run_id: UUID, parent_run_id: UUID | None) -> None:
        root, is_root = self._start(run_id, parent_run_id)
        if is_root:
            with self._lock:
                root.question = question_of(inputs, self.question_key)

    def _retriever_start(self, query: str, run_id: UUID, parent_run_id: UUID | None) -> None:
        root, _ = self._start(run_id, parent_run_id)
        with self._lock:
            root.queries.append(query)

    def _retriever_end(self, documents: Sequence[Document], run_id: UUID) -> None:
        root = self._root(run_id)
        if root is not None:
            with self._lock:
                root.documents.extend(documents)

    def _llm_start(self, prompt: Any, run_id: UUID, parent_run_id: UUID | None) -> None:
        root, is_root = self._start(run_id, parent_run_id)
        with self._lock:
            root.saw_llm = True
            if is_root:  # a bare LLM call: its (last) message is the question
                root.question = text_of(prompt)

    def _llm_end(self, response: LLMResult, run_id: UUID) -> None:
        root = self._root(run_id)
        if root is None or not response.generations or not response.generations[0]:
            return
        generation = response.generations[0][0]
        message = getattr(generation, "message", None)
        answer = text_of(message) if message is not None else generation.text
        with self._lock:
            root.answer = answer  # the last LLM to finish gives the answer

    def _forget(self, run_id: UUID) -> _Root | None:
        """Drop the state of ``run_id`` if it is a root (call with the lock held)."""
        if self._root_of.get(run_id) != run_id:
            return None
        root = self._roots.pop(run_id)
        for child in root.runs:
            self._root_of.pop(child, None)
        return root

    def _pop(self, run_id: UUID, inputs: Any = None) -> _Root | None:
        """Forget a finished root run; hand back what it showed if it has an answer to attribute."""
        with self._lock:
            root = self._forget(run_id)
            if root is None or not root.saw_llm:
                return None  # no generation in this run (a bare retriever call, say)
            if inputs is not None:  # streamed runs report their input only at the end
                root.question = question_of(inputs, self.question_key) or root.question
            self._last_run_id = run_id
            return root

    def _end(self, run_id: UUID, inputs: Any = None) -> Callable[[], CitationResult] | None:
        """The attribution job of a finished root run, or ``None``."""
        root = self._pop(run_id, inputs)
        if root is None:
            return None
        question = root.question or (root.queries[0] if root.queries else None)
        return lambda: self._attribute(run_id, question, root.documents, root.answer)

    def _error(self, error: BaseException, run_id: UUID) -> None:
        """A failed root run records nothing: the chain itself raises."""
        with self._lock:
            self._forget(run_id)

    # -- attribution ------------------------------------------------------------------------

    def _attribute(self, run_id: UUID, question: str | None, documents: list[Document], answer: str | None) -> CitationResult:
        result, error = attribute(
            self.attributor,
            question,
            documents,
            answer,
            run_id=run_id,
            method=self.method,
            keep_documents=self.keep_documents,
            keep_sentences=self.keep_sentences,
            per_claim=self.per_claim,
            min_score=self.min_score,
            attribute_kwargs=self.attribute_kwargs,
        )
        with self._lock:
            self._results[run_id] = result
            while self.max_results is not None and len(self._results) > self.max_results:
                self._results.popitem(last=False)
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                if self.raise_error:
                    raise
                logger.exception("on_result callback failed for run %s", run_id)
        if error is not None and self.raise_error:
            raise error
        return result

    def _submit(self, run_id: UUID, job: Callable[[], CitationResult]) -> Future[CitationResult]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attribot")
            future = self._executor.submit(job)
            self._futures[run_id] = future
            while self.max_results is not None and len(self._futures) > self.max_results:
                self._futures.popitem(last=False)
        return future


class AttriBoTCallbackHandler(_Tracker, BaseCallbackHandler):
    """Attach leave-one-out citations to every invocation of a RAG chain.

    ``chain.invoke(q, config={"callbacks": [handler]})`` then ``handler.last_result`` or
    ``handler.results[run_id]`` (pass ``config={"run_id": ...}`` to choose the id). Works
    with ``invoke``, ``batch``, ``stream`` and, run off the event loop by LangChain,
    ``ainvoke``/``astream``; one handler may serve concurrent invocations.

    ``attributor``: an ``attribot_rag.Attributor`` (default: the embedded model).
    ``method``, ``keep_documents``, ``keep_sentences`` and ``attribute_kwargs`` (any further
    keyword arguments, e.g. ``{"truncate": "documents"}``): passed to ``Attributor.attribute``.
    ``per_claim``, ``min_score``: how citations are drawn from the scores.
    ``question_key``: the input key holding the question when the chain's input is a dict
    (default: ``question``, ``query`` or ``input``; else the first retriever query).
    ``background``: attribute in a worker thread, so the chain returns at once;
    ``handler.wait(run_id)`` returns the result. ``raise_error``: let attribution errors
    propagate (through the chain, or ``wait()`` in the background) instead of recording
    them on ``result.error``. ``on_result``: called with every result.
    """

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._chain_start(inputs, run_id, parent_run_id)

    def on_retriever_start(self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._retriever_start(query, run_id, parent_run_id)

    def on_retriever_end(self, documents: Sequence[Document], *, run_id: UUID, **kwargs: Any) -> None:
        self._retriever_end(documents, run_id)
        self._finish(run_id)

    def on_llm_start(self, serialized: Any, prompts: list[str], *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._llm_start(prompts[0] if prompts else None, run_id, parent_run_id)

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._llm_start(messages[0] if messages else None, run_id, parent_run_id)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._llm_end(response, run_id)
        self._finish(run_id)

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._start(run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, inputs: Any = None, **kwargs: Any) -> None:
        self._finish(run_id, inputs)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._finish(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(error, run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(error, run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(error, run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(error, run_id)

    def _finish(self, run_id: UUID, inputs: Any = None) -> None:
        job = self._end(run_id, inputs)
        if job is None:
            return
        if self.background:
            self._submit(run_id, job)
        else:
            job()


class AsyncAttriBoTCallbackHandler(_Tracker, AsyncCallbackHandler):
    """The async twin of ``AttriBoTCallbackHandler`` for ``ainvoke``/``astream``/``abatch``:
    attribution runs in a worker thread (``asyncio.to_thread``), never on the event loop.
    ``await handler.await_result(run_id)`` waits for a background attribution."""

    async def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._chain_start(inputs, run_id, parent_run_id)

    async def on_retriever_start(self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._retriever_start(query, run_id, parent_run_id)

    async def on_retriever_end(self, documents: Sequence[Document], *, run_id: UUID, **kwargs: Any) -> None:
        self._retriever_end(documents, run_id)
        await self._finish(run_id)

    async def on_llm_start(self, serialized: Any, prompts: list[str], *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._llm_start(prompts[0] if prompts else None, run_id, parent_run_id)

    async def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._llm_start(messages[0] if messages else None, run_id, parent_run_id)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._llm_end(response, run_id)
        await self._finish(run_id)

    async def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._start(run_id, parent_run_id)

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, inputs: Any = None, **kwargs: Any) -> None:
        await self._finish(run_id, inputs)

    async def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        await self._finish(run_id)

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(error, run_id)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(error, run_id)

    async def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(error, run_id)

    async def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error(error, run_id)

    async def _finish(self, run_id: UUID, inputs: Any = None) -> None:
        job = self._end(run_id, inputs)
        if job is None:
            return
        if self.background:
            self._submit(run_id, job)
        else:
            await asyncio.to_thread(job)

    async def await_result(self, run_id: UUID | None = None) -> CitationResult:
        """``wait()`` for async code: awaits a background attribution without blocking the loop."""
        with self._lock:
            run_id = run_id or self._last_run_id
            future = self._futures.get(run_id) if run_id is not None else None
        if future is not None:
            return await asyncio.wrap_future(future)
        return self.wait(run_id)
