"""Citation models, and the translation between LlamaIndex nodes and the core: a node as the
LLM read it (``MetadataMode.LLM``) in, citations with offsets into the node and its source
document out. No attribution logic lives here."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from llama_index.core.bridge.pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WrapSerializer,
)
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore
from pydantic_core import PydanticSerializationError, to_jsonable_python

from attribot_rag import AttributionResult, Document, SpanScore
from attribot_rag.html import notebook_frame
from attribot_rag.spans import split_sentences


def _json_or_repr(value: Any, handler: Any) -> Any:
    """JSON as usual; where a value (user metadata) has no JSON form, its ``repr``."""
    try:
        return handler(value)
    except PydanticSerializationError:
        return to_jsonable_python(value, fallback=repr)


# Node metadata may hold anything (datetimes, sets, the user's objects): ``model_dump_json``
# must still work, as the core result's does.
JsonOrRepr = WrapSerializer(_json_or_repr, when_used="json")


class SentenceCitation(BaseModel):
    """A sentence of a retrieved node and its leave-one-out score.

    ``start``/``end`` are character offsets in the source document when the node knows where
    it lies in it (``node.start_char_idx``; ``offsets_in == "document"``), else offsets in the
    node's text (``offsets_in == "node"``). ``node_start``/``node_end`` are always offsets in
    the node's text. ``score`` is log p(answer | prompt) − log p(answer | prompt without this
    sentence), computed by the attribution (proxy) model.
    """

    model_config = ConfigDict(frozen=True)

    node_id: str
    ref_doc_id: str | None
    metadata: Annotated[dict[str, Any], JsonOrRepr]
    text: str
    start: int
    end: int
    node_start: int
    node_end: int
    offsets_in: Literal["document", "node"]
    score: float


class NodeCitation(SentenceCitation):
    """A numbered source (``[number]`` in ``cited_answer``) and the indices of the answer
    sentences (``answer_citations``) that cite it; ``score`` is over the whole answer."""

    number: int
    claims: list[int]


class AnswerSentenceCitations(BaseModel):
    """One sentence (claim) of the answer, at ``answer[start:end]``, and the sources it cites,
    scored on that sentence's own tokens."""

    model_config = ConfigDict(frozen=True)

    text: str
    start: int
    end: int
    numbers: list[int]
    citations: list[SentenceCitation]


class CitationResult(BaseModel):
    """The citations of one query or chat answer (``response.metadata["citation_result"]``).

    ``attribution`` is the core's full ``AttributionResult``: its ``prompt`` is the proxy's
    rendering of the messages the LLM received. ``unseen_nodes``: nodes the postprocessor
    passed on that the LLM never read (dropped by a later postprocessor, or no LLM call);
    they get no score. When attribution failed, ``error`` says why and there are no citations.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    question: str | None = None
    answer: str = ""
    citations: list[NodeCitation] = Field(default_factory=list)
    answer_citations: list[AnswerSentenceCitations] = Field(default_factory=list)
    cited_answer: str = ""
    attribution: AttributionResult | None = None
    unseen_nodes: Annotated[list[NodeWithScore], JsonOrRepr] = Field(default_factory=list)
    error: str | None = None
    per_claim: int = 1
    min_score: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def metadata(self) -> dict[str, Any]:
        """The entries this result adds to ``response.metadata``."""
        if self.error is not None:
            return {"citations_error": self.error, "citation_result": self}
        return {
            "citations": self.citations,
            "answer_citations": self.answer_citations,
            "cited_answer": self.cited_answer,
            "attribution": self.attribution,
            "unseen_nodes": self.unseen_nodes,
            "citation_result": self,
        }

    def to_html(self, heading: str | None = None) -> str:
        """The answer with these citations as one self-contained HTML page
        (``AttributionResult.to_html``); without an attribution, the answer and the error."""
        if self.attribution is not None:
            return self.attribution.to_html(heading, per_claim=self.per_claim, min_score=self.min_score)
        title = f"<h2>{html.escape(heading)}</h2>" if heading else ""
        note = f"<p><em>no citations: {html.escape(self.error)}</em></p>" if self.error else ""
        return f"<!DOCTYPE html><html><body>{title}<p>{html.escape(self.answer)}</p>{note}</body></html>"

    def _repr_html_(self) -> str:
        """Jupyter: the same page, in a sandboxed iframe."""
        return notebook_frame(self.to_html())


@dataclass(frozen=True)
class ShownNode:
    """A node as the LLM read it: its ``MetadataMode.LLM`` content (metadata header such as
    the title, then the text; stripped, as the synthesizers and chat engines join it) and
    where the node's own text starts in it. Only sentences of the node's text are scored."""

    node: NodeWithScore
    shown: str
    text_start: int

    @classmethod
    def of(cls, node: NodeWithScore) -> ShownNode | None:
        """``None`` for a node without text (nothing to cite)."""
        text = node.node.get_content(metadata_mode=MetadataMode.NONE)
        body = text.strip()
        if not body:
            return None
        shown = node.node.get_content(metadata_mode=MetadataMode.LLM).strip()
        at = shown.rfind(body)
        if at < 0:  # a text template that does not show the text verbatim: locate the text alone
            shown, at = body, 0
        return cls(node, shown, at - (len(text) - len(text.lstrip())))

    def document(self) -> Document:
        body_start = max(self.text_start, 0)
        body = self.shown[body_start:]
        return Document(
            text=self.shown,
            id=self.node.node.ref_doc_id or self.node.node.node_id,
            sentences=[body[start:end] for start, end in split_sentences(body)],
        )


def _sentence(span: SpanScore, shown: ShownNode, score: float) -> dict[str, Any]:
    node: BaseNode = shown.node.node
    base = node.start_char_idx
    node_start, node_end = span.start - shown.text_start, span.end - shown.text_start
    return {
        "node_id": node.node_id,
        "ref_doc_id": node.ref_doc_id,
        "metadata": dict(node.metadata),
        "text": span.text,
        "start": node_start + (base or 0),
        "end": node_end + (base or 0),
        "node_start": node_start,
        "node_end": node_end,
        "offsets_in": "node" if base is None else "document",
        "score": score,
    }


def citation_result(
    result: AttributionResult, shown: Sequence[ShownNode], per_claim: int, min_score: float, question: str | None = None
) -> CitationResult:
    """The citations of ``result``, whose document ``i`` is ``shown[i]``."""
    citations = result.citations(per_claim=per_claim, min_score=min_score)
    node_citations = [
        NodeCitation(
            number=c.number, claims=list(c.claims), **_sentence(c.source, shown[c.source.doc_index], c.source.score)
        )
        for c in citations
    ]
    answer_citations = []
    for claim, answer_sentence in enumerate(result.answer_sentences):
        cited = [c for c in citations if claim in c.claims]
        own = [answer_sentence.sentences[c.sentence] for c in cited]
        answer_citations.append(
            AnswerSentenceCitations(
                text=answer_sentence.text,
                start=answer_sentence.start,
                end=answer_sentence.end,
                numbers=[c.number for c in cited],
                citations=[SentenceCitation(**_sentence(s, shown[s.doc_index], s.score)) for s in own],
            )
        )
    return CitationResult(
        question=question,
        answer=result.answer,
        citations=node_citations,
        answer_citations=answer_citations,
        cited_answer=result.cited_answer(per_claim=per_claim, min_score=min_score),
        attribution=result,
        unseen_nodes=[shown[i].node for i in result.unseen_documents],
        per_claim=per_claim,
        min_score=min_score,
    )
