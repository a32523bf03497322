"""``AttriBoTPostprocessor``: leave-one-out citations for LlamaIndex query and chat engines."""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from attribot_rag import Attributor, Document

from . import hook
from .citations import citations_metadata, empty_metadata

logger = logging.getLogger(__name__)

_shared: dict[tuple[str | None, str | None, str | None], Attributor] = {}
_shared_lock = threading.Lock()


def _shared_attributor(model: str | None, device: str | None, dtype: str | None) -> Attributor:
    """One ``Attributor`` per (model, device, dtype) in this process, loaded on first use."""
    key = (model, device, dtype)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Attributor(model, device=device, dtype=dtype)
        return _shared[key]


class AttriBoTPostprocessor(BaseNodePostprocessor):
    """Attach faithful leave-one-out (LOO) citations to the answers of a query or chat engine.

    Add it (last) to ``node_postprocessors``. It passes the retrieved nodes through unchanged
    (``top_n`` keeps only the first ``top_n``) and records them for the running query; after
    synthesis an instrumentation handler scores every sentence of those nodes by how much the
    answer's log-probability drops without it, and adds to ``response.metadata``:
    ``citations`` (list of ``NodeCitation``), ``answer_citations`` (per answer sentence),
    ``cited_answer`` (the answer with ``[n]`` markers and a sources list) and ``attribution``
    (the full ``attribot_rag.AttributionResult``). A failed attribution leaves the response
    as it is and sets ``citations_error`` instead.

    The scores come from a local proxy model (``model``: Hugging Face id or local path; default:
    the embedded SmolLM2-135M-Instruct) that may differ from the LLM that wrote the answer. Pass
    ``attributor=`` to share a loaded ``attribot_rag.Attributor``.
    """

    method: Literal["hierarchical", "exact", "naive", "pruned"] = Field(
        default="hierarchical",
        description="Attribution method: 'hierarchical' (nodes, then sentences of the best nodes), "
        "'exact' (every sentence), 'naive' (no prefix cache), 'pruned' (needs an attributor with a target model).",
    )
    keep_documents: int = Field(default=2, ge=1, description="Nodes whose sentences 'hierarchical' scores.")
    keep_sentences: int = Field(default=5, ge=1, description="Sentences the target rescores with 'pruned'.")
    per_claim: int = Field(default=1, ge=1, description="Sources cited per answer sentence.")
    min_score: float = Field(default=0.0, description="Cite only sentences scoring above this (nats).")
    top_n: int | None = Field(default=None, ge=1, description="Keep only the first top_n nodes (None: all).")
    model: str | None = Field(default=None, description="Attribution model: HF id or local path (None: the embedded default).")
    device: str | None = Field(default=None, description="Device of the attribution model (None: automatic).")
    dtype: str | None = Field(default=None, description="dtype of the attribution model (None: automatic).")

    _attributor: Attributor | None = PrivateAttr(default=None)

    def __init__(self, attributor: Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if attributor is not None and not isinstance(attributor, Attributor):
            raise TypeError(f"attributor must be an attribot_rag.Attributor, not {type(attributor).__name__}")
        self._attributor = attributor
        hook.install()

    @classmethod
    def class_name(cls) -> str:
        return "AttriBoTPostprocessor"

    @property
    def attributor(self) -> Attributor:
        """The ``Attributor`` in use (loaded on first use unless one was passed)."""
        if self._attributor is None:
            self._attributor = _shared_attributor(self.model, self.device, self.dtype)
        return self._attributor

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if self.top_n is not None:
            nodes = nodes[: self.top_n]
        question = query_bundle.query_str if query_bundle is not None else None
        if not hook.record_nodes(self, question, nodes):
            logger.debug("attribot: postprocess_nodes called outside a query or chat engine call; nothing to cite")
        return nodes

    def attribute_nodes(self, question: str, nodes: list[NodeWithScore], answer: str) -> dict[str, Any]:
        """``response.metadata`` entries for ``answer`` to ``question`` from ``nodes``."""
        texts = [(n.node, n.node.get_content(metadata_mode=MetadataMode.NONE)) for n in nodes]
        texts = [(node, text) for node, text in texts if text.strip()]
        if not texts or not answer.strip():
            return empty_metadata(answer)
        documents = [Document(text=text, id=node.ref_doc_id or node.node_id) for node, text in texts]
        result = self.attributor.attribute(
            question,
            documents,
            answer,
            method=self.method,
            keep_documents=self.keep_documents,
            keep_sentences=self.keep_sentences,
        )
        return citations_metadata(result, [node for node, _ in texts], self.per_claim, self.min_score)
