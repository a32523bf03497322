"""``with_citations``: an LCEL chain whose output carries the citations of its answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import uuid4

from langchain_core.documents import Document
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough

from .callbacks import AttriBoTCallbackHandler
from .citations import CitationResult, text_of


def format_documents(documents: Sequence[Document]) -> str:
    """The default ``context`` handed to the answer chain: numbered documents, the layout of
    the attribution prompt."""
    return "".join(f"Document [{i}]\n{d.page_content}\n\n" for i, d in enumerate(documents, start=1))


def with_citations(
    retriever: Runnable[str, list[Document]],
    answer_chain: Runnable[dict[str, Any], Any],
    *,
    format_context: Callable[[list[Document]], Any] | None = format_documents,
    **knobs: Any,
) -> Runnable[str, dict[str, Any]]:
    """A RAG chain returning ``{"question", "context", "answer", "attribution", "citations"}``.

    ``retriever`` gets the question; ``answer_chain`` gets ``{"question", "context":
    format_context(documents)}`` (the documents when ``format_context`` is ``None``) and
    returns the answer. ``context``: the retrieved documents; ``attribution``: the
    ``CitationResult`` of the answer on the prompt its LLM read, also sent as the custom event
    ``"attribot_citations"``; ``citations``: its ``Citations``. A stream gives the answer as
    generated and the citations last. ``knobs``: as for ``AttriBoTCallbackHandler``, which
    attributes the answer step (``raise_error=True``: a failed attribution raises).
    """
    handler = AttriBoTCallbackHandler(**knobs)

    def answer_input(inputs: dict[str, Any]) -> dict[str, Any]:
        context = inputs["context"]
        return {"question": inputs["question"], "context": format_context(context) if format_context else context}

    def answer(inputs: dict[str, Any]) -> Runnable:
        # a root run to the handler, which finds the documents in its input
        step = RunnableLambda(answer_input, name="format_context") | answer_chain
        return step.with_config(callbacks=[handler], run_id=inputs["run_id"], run_name="answer")

    def attribution(inputs: dict[str, Any]) -> CitationResult:
        try:
            return handler.pop(inputs["run_id"])
        except KeyError as error:  # the answer step made no model call: nothing to attribute
            answer = text_of(inputs["answer"]) or ""
            return CitationResult.failed(answer, error.args[0], options=handler.options)

    chain = (
        RunnableParallel(context=retriever, question=RunnablePassthrough(), run_id=RunnableLambda(lambda _: uuid4()))
        .assign(answer=RunnableLambda(answer, name="answer"))
        .assign(attribution=RunnableLambda(attribution, name="attribot_citations"))
        .assign(citations=lambda inputs: inputs["attribution"].citations)
        .pick(["question", "context", "answer", "attribution", "citations"])
    )
    return chain.with_config(run_name="AttriBoTCitations")
