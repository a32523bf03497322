"""``AttriBoTPostprocessor``: leave-one-out citations for LlamaIndex query and chat engines."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from attribot_rag import CitationOptions, Citations, shared_attributor
from attribot_rag.api.protocol import AttributorLike
from attribot_rag.core.messages import Messages

from .citations import CitationResult, document
from .events import AttributionEndEvent, AttributionStartEvent
from .hook import Hook

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)


class AttriBoTPostprocessor(BaseNodePostprocessor):
    """Attach faithful leave-one-out (LOO) citations to the answers of a query or chat engine.

    Put it last in ``node_postprocessors``: it passes the nodes on (the first ``top_n``) and
    records them for the running call, with the messages its LLM then reads. Each sentence of
    those nodes is scored by how much the answer's log-probability drops without it;
    ``response.metadata["citation_result"]`` and ``wait(response)`` (any response, streaming chat
    too) give the ``CitationResult``, the error form if attribution failed: the answer is never
    lost. Attribution never runs on an event loop: there, and with ``background=True``, it runs
    in this postprocessor's worker thread. Its instrumentation handlers and worker live until
    ``close()`` (or the end of a ``with`` block).

    Options: ``options=CitationOptions(...)`` and/or its fields as keywords (keywords win). Scores come
    from ``attributor`` (e.g. a ``RemoteAttributor``), else from the process's shared local
    model ``model`` (default: the embedded SmolLM2-135M-Instruct) on ``device`` in ``dtype``,
    loaded on first use.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not ignored

    options: CitationOptions = Field(default_factory=CitationOptions, description="attribot_rag.CitationOptions")
    top_n: int | None = Field(default=None, ge=1, description="Keep only the first top_n nodes (None: all).")
    background: bool = Field(default=False, description="Attribute sync calls in the worker thread too.")
    model: str | None = Field(default=None, description="Attribution model: HF id or path (None: the embedded one).")
    device: str | None = Field(default=None, description="Device of the attribution model (None: automatic).")
    dtype: str | None = Field(default=None, description="dtype of the attribution model (None: automatic).")

    _attributor: AttributorLike | None = PrivateAttr(default=None)
    _hook: Hook = PrivateAttr()

    def __init__(
        self, attributor: AttributorLike | None = None, options: CitationOptions | None = None, **kwargs: Any
    ) -> None:
        fields = {name: kwargs.pop(name) for name in CitationOptions.model_fields if name in kwargs}
        super().__init__(options=CitationOptions.merged(options, **fields), **kwargs)
        if attributor is not None and not isinstance(attributor, AttributorLike):
            raise TypeError(f"attributor must be an Attributor or RemoteAttributor, not {type(attributor).__name__}")
        self._attributor = attributor
        self._hook = Hook(self)
        self._hook.open()

    @classmethod
    def class_name(cls) -> str:
        return "AttriBoTPostprocessor"

    @property
    def attributor(self) -> AttributorLike:
        """The attributor passed, else the shared one of ``model``/``device``/``dtype``."""
        if self._attributor is None:
            self._attributor = shared_attributor(self.model, self.device, self.dtype)
        return self._attributor

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes = nodes if self.top_n is None else nodes[: self.top_n]
        if not self._hook.record(query_bundle.query_str if query_bundle is not None else None, nodes):
            logger.debug("attribot: postprocess_nodes called outside a query or chat engine call; nothing to cite")
        return nodes

    @dispatcher.span
    def attribute(
        self, nodes: list[NodeWithScore], answer: str, messages: Messages | None, question: str | None = None
    ) -> CitationResult:
        """Citations of ``answer`` to the ``nodes`` the LLM read in ``messages`` (chat messages
        as ``{"role", "content"}`` dicts, or a completion prompt); nodes not in them are
        ``unseen``, all of them without an LLM call (``None``). Never raises: a failure is logged
        and gives the error form."""
        options = self.options
        shown = [n for n in nodes if n.node.get_content(metadata_mode=MetadataMode.NONE).strip()]
        if not shown or not answer.strip() or messages is None:
            uncited = Citations(answer=answer, claims=[], sources=[])
            unseen = shown if messages is None else []
            return CitationResult(
                question=question, answer=answer, citations=uncited, documents=shown, unseen=unseen, options=options
            )
        dispatcher.event(
            AttributionStartEvent(method=options.plan().method, budget=options.budget, nodes=len(shown), answer=answer)
        )
        try:
            documents = [document(node) for node in shown]
            result = self.attributor.attribute_messages_with(messages, answer, documents, options.attribution())
            citations = CitationResult(
                question=question,
                answer=answer,
                citations=result.citations(options.per_claim, options.min_score, options.min_share),
                attribution=result,
                documents=shown,
                unseen=[shown[i] for i in result.unseen_documents],
                options=options,
            )
        except Exception as error:  # never break the user's query
            logger.exception("attribot: attribution failed; the answer is returned without citations")
            citations = CitationResult.failed(answer, error, question, options)
        dispatcher.event(AttributionEndEvent(result=citations))
        return citations

    def wait(self, response: Any, timeout: float | None = None) -> CitationResult:
        """The citations of a response of an engine this postprocessor is in, waiting for a
        background or async attribution, or for its stream to be consumed, at most ``timeout`` s."""
        job = self._hook.job_of(response)
        try:
            return job.future.result(timeout)
        except FutureTimeout:
            why = "its stream has not been consumed yet" if job.streaming else "the attribution is still running"
            raise TimeoutError(f"no citations after {timeout} s: {why}") from None

    async def await_result(self, response: Any) -> CitationResult:
        """``wait`` for async code: awaits the attribution without blocking the event loop."""
        return await asyncio.wrap_future(self._hook.job_of(response).future)

    def close(self) -> None:
        """Remove the instrumentation handlers and stop the worker (after the attributions under
        way); a stream consumed later is attributed by its consumer. A ``with`` reopens it."""
        self._hook.close()

    def __enter__(self) -> AttriBoTPostprocessor:
        self._hook.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
