"""The result type, and the one translation step between LlamaIndex and the core: a node as the
LLM read it in, the core's citation view out (ranking, HTML and JSON are all the core's)."""

from __future__ import annotations

from llama_index.core.schema import MetadataMode, NodeWithScore

from attribot_rag import Document
from attribot_rag.api.citation_result import BaseCitationResult
from attribot_rag.api.citations import Source
from attribot_rag.core.spans import split_sentences


class CitationResult(BaseCitationResult[NodeWithScore]):
    """The citations of one query or chat answer (``response.metadata["citation_result"]``;
    ``attribot_rag.api.citation_result``): ``documents``, the nodes with text the postprocessor
    passed on, in order; ``node_range``/``document_range`` place a source in its node's text and
    its source document."""

    def node_range(self, source: Source) -> tuple[int, int]:
        """Where the source's sentence lies in its node's text (``node.get_content()``)."""
        text_start = shown(self.document_of(source))[1]
        return source.span.start - text_start, source.span.end - text_start

    def document_range(self, source: Source) -> tuple[int, int] | None:
        """Where it lies in the document the node was parsed from (``ref_doc_id``); ``None`` if
        the node does not know where it starts in it (``start_char_idx``)."""
        base = self.document_of(source).node.start_char_idx
        start, end = self.node_range(source)
        return None if base is None else (base + start, base + end)


def shown(node: NodeWithScore) -> tuple[str, int]:
    """The node as the LLM read it (``MetadataMode.LLM``: a metadata header such as the title,
    then the text, stripped as synthesizers join it) and where the node's own text starts in it."""
    text = node.node.get_content(metadata_mode=MetadataMode.NONE)
    body = text.strip()
    content = node.node.get_content(metadata_mode=MetadataMode.LLM).strip()
    at = content.rfind(body)
    if at < 0:  # a text template that does not show the text verbatim: locate the text alone
        content, at = body, 0
    return content, at - (len(text) - len(text.lstrip()))


def document(node: NodeWithScore) -> Document:
    """The node as the core locates it in the LLM's messages: all it showed; only the sentences
    of its own text are cited (without them, its header goes with the whole node)."""
    content, text_start = shown(node)
    body = content[max(text_start, 0) :]
    sentences = [body[start:end] for start, end in split_sentences(body)]
    return Document(text=content, id=node.node.ref_doc_id or node.node.node_id, sentences=sentences)
