"""The callback handler: LangChain's public callback events only. Per root run it records each
model call's input and answer, every ``Document`` a run returned and the root's input; when the
root ends it attributes the last model call's answer with one core call."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager, CallbackManager
from langchain_core.documents import Document
from langchain_core.outputs import LLMResult
from langchain_core.runnables import ensure_config

from attribot_rag import CitationOptions, Citations, shared_attributor
from attribot_rag.api.protocol import AttributorLike

from .citations import (
    CITATIONS_EVENT,
    CitationResult,
    chat_messages,
    core_document,
    documents_in,
    logger,
    question_of,
    text_of,
    unique_documents,
)

_MODEL_ONLY = (
    "; the handler is attached to the model only and sees no retrieval: attach it to the chain or graph "
    "(invoke(..., config={'callbacks': [handler]}))"
)


@dataclass
class _Run:
    """What the events of one root run told so far."""

    inputs: Any
    tags: list[str]
    metadata: dict[str, Any]
    model_only: bool  # the root is a model call: no retrieval in sight
    prompts: dict[UUID, Any] = field(default_factory=dict)  # model calls under way: their input
    call: tuple[Any, str] | None = None  # the last model call to end: its input and answer
    documents: list[Document] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    handlers: list[BaseCallbackHandler] | None = None  # the invocation's other handlers


class AttriBoTCallbackHandler(BaseCallbackHandler):
    """Leave-one-out citations for every invocation of a RAG chain or LangGraph graph.

    ``chain.invoke(q, config={"callbacks": [handler]})``, then ``handler.last_result``, or
    ``handler.results[run_id]`` / ``handler.wait(run_id)`` with ``config={"run_id": ...}``.
    Sync and async, streams and batches; one handler may serve concurrent invocations. An
    invocation ends after its attribution; with ``background=True`` the handler's own worker
    thread attributes (``shutdown()``, or ``with handler: ...``).

    Knobs: ``attributor`` (any ``AttributorLike``), else ``model``/``device``/``dtype`` of
    ``attribot_rag.shared_attributor``, loaded on first use; ``options`` and/or
    ``CitationOptions`` fields as keywords (keywords win). ``question_key``: the input key
    holding the question (reported only). ``raise_error``: attribution errors propagate
    (through the chain, or ``wait()``). ``on_result``: called with every result.
    ``max_results``: results kept, oldest dropped.
    """

    def __init__(
        self,
        attributor: AttributorLike | None = None,
        *,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        options: CitationOptions | None = None,
        question_key: str | None = None,
        background: bool = False,
        raise_error: bool = False,
        on_result: Callable[[CitationResult], Any] | None = None,
        max_results: int = 1000,
        **fields: Any,
    ) -> None:
        if attributor is not None and (model, device, dtype) != (None, None, None):
            raise ValueError("pass either attributor or model/device/dtype, not both")
        self.options = CitationOptions.merged(options, **fields)
        self.model, self.device, self.dtype, self._attributor = model, device, dtype, attributor
        self.question_key, self.background, self.on_result = question_key, background, on_result
        self.raise_error, self.max_results = raise_error, max_results  # LangChain reads raise_error
        self._lock, self._loading = threading.Lock(), threading.Lock()  # runs' records; the model load
        self._roots: dict[UUID, UUID] = {}  # runs under way -> their root
        self._runs: dict[UUID, _Run] = {}  # roots under way
        self._results: OrderedDict[UUID, CitationResult] = OrderedDict()
        self._futures: OrderedDict[UUID, Future[CitationResult]] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None
        self.last_run_id: UUID | None = None  # the root that ended last with an answer

    @property
    def attributor(self) -> AttributorLike:
        with self._loading:
            if self._attributor is None:
                self._attributor = shared_attributor(self.model, self.device, self.dtype)
            return self._attributor

    @property
    def results(self) -> Mapping[UUID, CitationResult]:
        return MappingProxyType(self._results)

    @property
    def last_result(self) -> CitationResult | None:
        """The last root's result (``None`` while attributed in the background: ``wait()``)."""
        return self._results.get(self.last_run_id) if self.last_run_id else None

    def wait(self, run_id: UUID | None = None, timeout: float | None = None) -> CitationResult:
        """The result of root run ``run_id`` (default: the last), once run and attribution end.
        ``KeyError``: a run never seen, or one that ended without a result (no model call, or
        it failed); ``TimeoutError`` says which of the two is still going."""
        run_id = run_id or self.last_run_id
        future = self._futures.get(run_id) if run_id else None
        if future is None:
            raise KeyError(
                f"unknown run {run_id}: this handler never saw it start (pass config={{'callbacks': [handler], "
                f"'run_id': ...}}), or its result was dropped (max_results={self.max_results})"
            )
        try:
            return future.result(timeout)
        except FutureTimeout:
            state = "still running" if run_id in self._runs else "ended; its attribution is still going"
            raise TimeoutError(f"run {run_id} {state} after {timeout} s") from None

    def pop(self, run_id: UUID, timeout: float | None = None) -> CitationResult:
        """``wait()``, then forget the run: what a long-lived caller takes, the handler drops."""
        try:
            return self.wait(run_id, timeout)
        finally:
            with self._lock:
                self._results.pop(run_id, None)
                self._futures.pop(run_id, None)

    async def await_result(self, run_id: UUID | None = None, timeout: float | None = None) -> CitationResult:
        """``wait()`` for async code, off the event loop."""
        return await asyncio.to_thread(self.wait, run_id, timeout)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the background worker (after the queued attributions when ``wait``)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
            self._executor = None

    def __enter__(self) -> AttriBoTCallbackHandler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._start(run_id, kwargs, inputs=inputs)

    def on_llm_start(self, serialized: Any, prompts: list[str], *, run_id: UUID, **kwargs: Any) -> None:
        self._start(run_id, kwargs, prompt=prompts[0] if prompts else "")

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], *, run_id: UUID, **kwargs: Any) -> None:
        self._start(run_id, kwargs, prompt=messages[0] if messages else [])

    def on_retriever_start(self, serialized: Any, query: str, *, run_id: UUID, **kwargs: Any) -> None:
        self._start(run_id, kwargs, inputs=query, query=query)

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, **kwargs: Any) -> None:
        self._start(run_id, kwargs, inputs=input_str)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, outputs=outputs, inputs=kwargs.get("inputs"))  # a stream's input comes at its end

    on_retriever_end = on_tool_end = on_chain_end

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        generations = response.generations[0] if response.generations else []
        self._end(run_id, answer=generations[0].text if generations else "")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error=error)

    on_llm_error = on_retriever_error = on_tool_error = on_chain_error

    def _start(
        self, run_id: UUID, kwargs: dict[str, Any], inputs: Any = None, prompt: Any = None, query: Any = None
    ) -> None:
        """Record a run under its root; a run whose parent this handler never saw is a root."""
        with self._lock:
            root = self._roots.setdefault(run_id, self._roots.get(kwargs.get("parent_run_id"), run_id))
            if root == run_id:
                tags, metadata = list(kwargs.get("tags") or []), dict(kwargs.get("metadata") or {})
                self._runs[root] = _Run(inputs, tags, metadata, prompt is not None, documents=documents_in(inputs))
                self._futures[root] = Future()
                if len(self._futures) > self.max_results:
                    self._futures.popitem(last=False)
            run = self._runs[root]
            if prompt is not None:
                run.prompts[run_id] = prompt
            if query:
                run.queries.append(query)
            callbacks = ensure_config().get("callbacks") if root != run_id and run.handlers is None else None
            if isinstance(callbacks, BaseCallbackManager):
                # in a descendant the running config holds the invocation's handlers (tracers such
                # as Langfuse or Phoenix): they get the result as a custom event of the root
                run.handlers = [h for h in callbacks.inheritable_handlers if h is not self]

    def _end(
        self,
        run_id: UUID,
        outputs: Any = None,
        answer: str = "",
        error: BaseException | None = None,
        inputs: Any = None,
    ) -> None:
        """Record what a run gave; when it is a root, attribute it (or say why not)."""
        with self._lock:
            root = self._roots.pop(run_id, None)
            run = self._runs.get(root) if root else None
            if run is None:
                return
            if run_id == root and inputs is not None:
                run.inputs, run.documents[:0] = inputs, documents_in(inputs)
            prompt = run.prompts.pop(run_id, None)
            if error is None and prompt is not None:
                run.call = (prompt, answer)
            elif error is None:
                run.documents += documents_in(outputs)
            if run_id != root:
                return
            del self._runs[root]
            self._roots = {k: r for k, r in self._roots.items() if r != root}  # branches that never ended
            future = self._futures.get(root)
            if error is None and run.call is not None:
                self.last_run_id = root
        if error is not None or run.call is None:
            why = f"failed ({type(error).__name__}: {error})" if error else "ended without an LLM or chat model call"
            if future is not None:
                future.set_exception(KeyError(f"run {root} {why}: nothing to attribute"))
        elif self.background:
            with self._lock:
                self._executor = self._executor or ThreadPoolExecutor(1, thread_name_prefix="attribot")
                self._executor.submit(self._attribute, root, run, future)
        else:
            result = self._attribute(root, run, future)
            if run.handlers:
                manager = CallbackManager(run.handlers, parent_run_id=root, tags=run.tags, metadata=run.metadata)
                manager.on_custom_event(CITATIONS_EVENT, result, run_id=root)

    def _attribute(self, root: UUID, run: _Run, future: Future[CitationResult] | None) -> CitationResult:
        """Attribute the root's last model call: its answer to the documents its input holds
        (the error form on a failure, raised too when strict)."""
        messages, answer = run.call or ("", "")
        documents, result, failure = unique_documents(run.documents), None, None
        try:
            if not documents:
                raise ValueError("no documents retrieved: nothing to cite" + (_MODEL_ONLY if run.model_only else ""))
            chat = messages if isinstance(messages, str) else chat_messages(messages)
            prompt = chat if isinstance(chat, str) else "\n".join(m["content"] for m in chat)
            # prompt order, those it lacks last, so that doc_index numbers them as read
            documents.sort(key=lambda d: (d.page_content not in prompt, prompt.find(d.page_content)))
            core = [core_document(d) for d in documents]
            result = self.attributor.attribute_messages_with(chat, answer, core, self.options.attribution())
            citations = result.citations(self.options.per_claim, self.options.min_score, self.options.min_share)
        except Exception as error:  # noqa: BLE001 - attribution must never break the user's chain
            result, failure, citations = None, error, Citations.failed(answer, error)
            logger.warning("attribution of run %s failed: %s", root, citations.error)
        question = question_of(run.inputs, self.question_key) or next(filter(None, run.queries), text_of(messages))
        found = {"documents": documents, "unseen": [documents[i] for i in result.unseen_documents] if result else []}
        about = {"run_id": root, "tags": run.tags, "metadata": run.metadata, "options": self.options}
        outcome = CitationResult(
            question=question, answer=answer, citations=citations, attribution=result, **found, **about
        )
        with self._lock:
            self._results[root] = outcome
            if len(self._results) > self.max_results:
                self._results.popitem(last=False)
        if future is not None and failure is not None and self.raise_error:
            future.set_exception(failure)
        elif future is not None:
            future.set_result(outcome)
        if self.on_result is not None:
            try:
                self.on_result(outcome)
            except Exception:
                if self.raise_error:
                    raise
                logger.exception("on_result callback failed for run %s", root)
        if failure is not None and self.raise_error:
            raise failure
        return outcome
