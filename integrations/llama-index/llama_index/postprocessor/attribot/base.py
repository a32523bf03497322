"""``AttriBoTPostprocessor``: leave-one-out citations for LlamaIndex query and chat engines."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from attribot_rag import shared_attributor
from attribot_rag.options import Budget, CitationOptions, Method

from . import hook
from .citations import CitationResult, ShownNode, citation_result
from .events import AttributionEndEvent, AttributionStartEvent

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

_CORE = CitationOptions()  # the core's defaults, shared with the LangChain integration
# The CitationOptions fields that are fields of the postprocessor; the others go in attribute_kwargs.
_SETTINGS = ("method", "budget", "keep_documents", "keep_sentences", "per_claim", "min_score")


class AttriBoTPostprocessor(BaseNodePostprocessor):
    """Attach faithful leave-one-out (LOO) citations to the answers of a query or chat engine.

    Add it to ``node_postprocessors`` (last: it records the nodes it passes on). It passes
    them through unchanged (``top_n`` keeps only the first ``top_n``) and records them for
    the running query or chat call; the instrumentation hook records the messages that
    call's LLM received. After the answer, each sentence of those nodes, located in those
    messages, is scored by how much the answer's log-probability drops without it, and
    ``response.metadata`` gets ``citations``, ``answer_citations``, ``cited_answer``,
    ``attribution``, ``unseen_nodes`` and ``citation_result`` (a ``CitationResult``). A
    failed attribution leaves the response as it is and sets ``citations_error`` instead.

    Attribution never runs on an event loop: in async code (``aquery``, ``achat``,
    ``astream_chat``) it runs in a worker thread; ``await AttriBoTPostprocessor.await_result(
    response)`` waits for it. With ``background=True`` sync calls return at once too, and
    ``AttriBoTPostprocessor.wait(response)`` waits.

    The scores come from a local proxy model (``model``: Hugging Face id or local path; default:
    the embedded SmolLM2-135M-Instruct, shared by the whole process) that may differ from the
    LLM that wrote the answer. Pass ``attributor=`` to use an ``attribot_rag.Attributor`` of
    your own (e.g. with a ``target`` for ``method="pruned"``), or a ``RemoteAttributor`` (an
    ``attribot-rag serve`` service): anything with ``attribute_messages_with``.
    """

    method: Method = Field(
        default=_CORE.method,
        description="Attribution method: 'auto' (what budget maps to), or one of attribot_rag.METHODS.",
    )
    budget: Budget = Field(
        default=_CORE.budget, description="What method='auto' runs: 'fast', 'balanced' or 'faithful'."
    )
    keep_documents: int = Field(
        default=_CORE.keep_documents, ge=1, description="Nodes whose sentences 'hierarchical' scores."
    )
    keep_sentences: int = Field(
        default=_CORE.keep_sentences, ge=1, description="Sentences the target rescores with 'pruned'."
    )
    attribute_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Further attribot_rag.CitationOptions fields, e.g. {'doc_method': 'fast', 'max_forwards': 2000}.",
    )
    per_claim: int = Field(default=_CORE.per_claim, ge=1, description="Sources cited per answer sentence.")
    min_score: float = Field(default=_CORE.min_score, description="Cite only sentences scoring above this (nats).")
    top_n: int | None = Field(default=None, ge=1, description="Keep only the first top_n nodes (None: all).")
    background: bool = Field(
        default=False, description="Attribute sync calls in a worker thread too; wait() returns the result."
    )
    model: str | None = Field(
        default=None, description="Attribution model: HF id or local path (None: the embedded default)."
    )
    device: str | None = Field(default=None, description="Device of the attribution model (None: automatic).")
    dtype: str | None = Field(default=None, description="dtype of the attribution model (None: automatic).")

    _attributor: Any = PrivateAttr(default=None)

    def __init__(self, attributor: Any = None, options: CitationOptions | None = None, **kwargs: Any) -> None:
        if options is not None:
            clash = sorted(set(kwargs) & {*_SETTINGS, "attribute_kwargs"})
            if clash:
                raise TypeError(
                    f"{', '.join(clash)} given twice: pass the settings either as options= or as keyword arguments"
                )
            settings = options.model_dump()
            kwargs.update({name: settings.pop(name) for name in _SETTINGS})
            kwargs["attribute_kwargs"] = {
                name: value for name, value in settings.items() if value != CitationOptions.model_fields[name].default
            }
        super().__init__(**kwargs)
        if attributor is not None and not callable(getattr(attributor, "attribute_messages_with", None)):
            raise TypeError(
                f"attributor must be an attribot_rag.Attributor or RemoteAttributor, not {type(attributor).__name__}"
            )
        self._attributor = attributor
        hook.install()

    @model_validator(mode="after")
    def _valid_options(self) -> AttriBoTPostprocessor:
        self.options  # noqa: B018 - fail at construction, not at the first answer
        return self

    @classmethod
    def class_name(cls) -> str:
        return "AttriBoTPostprocessor"

    @property
    def options(self) -> CitationOptions:
        """The settings of every attribution this postprocessor runs, as the core validates them."""
        fields = {name: getattr(self, name) for name in _SETTINGS}
        repeated = sorted(set(fields) & set(self.attribute_kwargs))
        if repeated:
            raise ValueError(
                f"attribute_kwargs repeats {', '.join(repeated)}: set them as fields of AttriBoTPostprocessor"
            )
        return CitationOptions(**fields, **self.attribute_kwargs)

    @property
    def attributor(self) -> Any:
        """What attributes: the ``Attributor`` or ``RemoteAttributor`` passed, else the
        process-wide shared ``Attributor`` (loaded on first use)."""
        if self._attributor is None:
            self._attributor = shared_attributor(self.model, self.device, self.dtype)
        return self._attributor

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if self.top_n is not None:
            nodes = nodes[: self.top_n]
        question = query_bundle.query_str if query_bundle is not None else None
        if not hook.record_nodes(self, question, nodes):
            logger.debug("attribot: postprocess_nodes called outside a query or chat engine call; nothing to cite")
        return nodes

    @dispatcher.span
    def attribute(
        self, nodes: list[NodeWithScore], answer: str, messages: hook.Messages | None, question: str | None = None
    ) -> CitationResult:
        """Citations of ``answer`` to the ``nodes`` the LLM read in ``messages`` (a chat, as
        ``{"role", "content"}`` dicts, or a completion prompt). Nodes not found in them are
        ``unseen_nodes``; with ``messages=None`` (no LLM call) every node is."""
        shown = [s for s in map(ShownNode.of, nodes) if s is not None]
        if not shown or not answer.strip() or messages is None:
            unseen = [s.node for s in shown] if messages is None else []
            return CitationResult(question=question, answer=answer, cited_answer=answer, unseen_nodes=unseen)
        options = self.options
        dispatcher.event(
            AttributionStartEvent(
                method=options.resolved().method, budget=options.budget, nodes=len(shown), answer=answer
            )
        )
        result = self.attributor.attribute_messages_with(
            messages, answer, [s.document() for s in shown], options.attribution()
        )
        citations = citation_result(result, shown, options.per_claim, options.min_score, question)
        dispatcher.event(AttributionEndEvent(result=citations))
        return citations

    @staticmethod
    def wait(response: Any, timeout: float | None = None) -> CitationResult:
        """The citations of ``response`` (a query or chat engine's), waiting for a background
        or async attribution, or for a stream to be consumed, at most ``timeout`` seconds."""
        return hook.wait(response, timeout)

    @staticmethod
    async def await_result(response: Any) -> CitationResult:
        """``wait`` for async code: awaits the attribution without blocking the event loop."""
        return await asyncio.wrap_future(hook.future_of(response))
