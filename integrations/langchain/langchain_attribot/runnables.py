"""``with_citations``: an LCEL chain whose output carries the citations of its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)

from .citations import (
    CITATIONS_EVENT,
    CitationResult,
    attribute,
    default_attributor,
    text_of,
)


def format_documents(documents: Sequence[Document]) -> str:
    """The default ``context`` string handed to the answer chain: numbered documents, the
    same layout the attribution prompt uses."""
    return "".join(f"Document [{i}]\n{d.page_content}\n\n" for i, d in enumerate(documents, start=1))


def with_citations(
    retriever: Runnable[str, list[Document]],
    answer_chain: Runnable[dict[str, Any], Any],
    *,
    attributor: Any = None,
    method: str = "hierarchical",
    keep_documents: int = 2,
    keep_sentences: int = 5,
    per_claim: int = 1,
    min_score: float = 0.0,
    format_context: Callable[[list[Document]], Any] | None = format_documents,
    raise_error: bool = False,
    attribute_kwargs: dict[str, Any] | None = None,
) -> Runnable[str, dict[str, Any]]:
    """A RAG chain that returns ``{"question", "context", "answer", "attribution", "citations"}``.

    The input (a question string) goes to ``retriever``; ``answer_chain`` gets
    ``{"question": ..., "context": format_context(documents)}`` (the ``Document`` list itself
    when ``format_context`` is ``None``) and returns the answer (a string or a message).
    ``context`` is the list of retrieved documents, ``attribution`` the ``CitationResult``
    (``.cited_answer()``, ``.error``) and ``citations`` its ``Citation`` list. The result is
    also dispatched as the custom event ``"attribot_citations"`` (``astream_events``,
    ``on_custom_event``). Streaming streams the answer; the citations come last.
    ``attribute_kwargs`` go to ``Attributor.attribute`` as they are. A failed attribution
    leaves the answer as it is and sets ``attribution.error``, unless ``raise_error=True``.
    """
    if attributor is None:
        attributor = default_attributor()
    settings = dict(method=method, keep_documents=keep_documents, keep_sentences=keep_sentences, per_claim=per_claim, min_score=min_score, attribute_kwargs=attribute_kwargs)

    def answer_input(inputs: dict[str, Any]) -> dict[str, Any]:
        context = inputs["context"]
        return {"question": inputs["question"], "context": format_context(context) if format_context else context}

    def run(inputs: dict[str, Any], config: RunnableConfig) -> CitationResult:
        result, error = attribute(attributor, text_of(inputs["question"]), inputs["context"], text_of(inputs["answer"]), **settings)
        if error is not None and raise_error:
            raise error
        return result

    def cite(inputs: dict[str, Any], config: RunnableConfig) -> CitationResult:
        result = run(inputs, config)
        dispatch_custom_event(CITATIONS_EVENT, result, config=config)
        return result

    async def acite(inputs: dict[str, Any], config: RunnableConfig) -> CitationResult:
        result = await asyncio.to_thread(run, inputs, config)
        await adispatch_custom_event(CITATIONS_EVENT, result, config=config)
        return result

    def citations(inputs: dict[str, Any]) -> list[Any]:
        return list(inputs["attribution"].citations)

    chain = (
        RunnableParallel(context=retriever, question=RunnablePassthrough())
        .assign(answer=RunnableLambda(answer_input, name="format_context") | answer_chain)
        .assign(attribution=RunnableLambda(cite, afunc=acite, name="attribot_attribute"))
        .assign(citations=RunnableLambda(citations, name="citations"))
    )
    return chain.with_config(run_name="AttriBoTCitations")
