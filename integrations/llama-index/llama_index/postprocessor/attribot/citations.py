"""Citation models and the translation of an ``AttributionResult`` back to LlamaIndex nodes."""

from __future__ import annotations

from typing import Any, Literal, Sequence

from llama_index.core.bridge.pydantic import BaseModel, ConfigDict
from llama_index.core.schema import BaseNode

from attribot_rag import AttributionResult, SpanScore


class SentenceCitation(BaseModel):
    """A sentence of a retrieved node and its leave-one-out score.

    ``start``/``end`` are character offsets in the source document when the node knows where
    it lies in it (``node.start_char_idx``; ``offsets_in == "document"``), else offsets in the
    node's text (``offsets_in == "node"``). ``node_start``/``node_end`` are always offsets in
    the node's text. ``score`` is log p(answer | all nodes) − log p(answer | without this
    sentence), computed by the attribution (proxy) model.
    """

    model_config = ConfigDict(frozen=True)

    node_id: str
    ref_doc_id: str | None
    metadata: dict[str, Any]
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


def _sentence(span: SpanScore, node: BaseNode, score: float) -> dict[str, Any]:
    base = node.start_char_idx
    return {
        "node_id": node.node_id,
        "ref_doc_id": node.ref_doc_id,
        "metadata": dict(node.metadata),
        "text": span.text,
        "start": span.start + (base or 0),
        "end": span.end + (base or 0),
        "node_start": span.start,
        "node_end": span.end,
        "offsets_in": "node" if base is None else "document",
        "score": score,
    }


def citations_metadata(
    result: AttributionResult, nodes: Sequence[BaseNode], per_claim: int, min_score: float
) -> dict[str, Any]:
    """``response.metadata`` entries for ``result``, whose document ``i`` is ``nodes[i]``."""
    citations = result.citations(per_claim=per_claim, min_score=min_score)
    node_citations = [
        NodeCitation(
            number=c.number,
            claims=list(c.claims),
            **_sentence(c.source, nodes[c.source.doc_index], c.source.score),
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
                citations=[SentenceCitation(**_sentence(s, nodes[s.doc_index], s.score)) for s in own],
            )
        )
    return {
        "citations": node_citations,
        "answer_citations": answer_citations,
        "cited_answer": result.cited_answer(per_claim=per_claim, min_score=min_score),
        "attribution": result,
    }


def empty_metadata(answer: str) -> dict[str, Any]:
    """Nothing to attribute (no nodes, or an empty answer): no citations, the answer as is."""
    return {"citations": [], "answer_citations": [], "cited_answer": answer, "attribution": None}
