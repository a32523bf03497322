"""``with_citations``: an LCEL chain whose output carries the citations of its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)

from attribot_rag import CitationOptions, shared_attributor

from .citations import CITATIONS_EVENT, CitationResult, citation_options, cite, text_of


def format_documents(documents: Sequence[Document]) -> str:
    """The default ``context`` string handed to the answer chain: numbered documents, the
    same layout the attribution prompt uses."""
    return "".join(f"Document [{i}]\n{d.page_content}\n\n" for i, d in enumerate(documents, start=1))


class _ModelInput(BaseCallbackHandler):
    """Records the input of the last LLM or chat model call of one answer step: the prompt the
    citations are computed on."""

    run_inline = True

    def __init__(self) -> None:
        self.messages: Any = None

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], **kwargs: Any) -> None:
        self.messages = messages[0] if messages else None

    def on_llm_start(self, serialized: Any, prompts: list[str], **kwargs: Any) -> None:
        self.messages = prompts[0] if prompts else None

    def __deepcopy__(self, memo: Any = None) -> _ModelInput:
        return self  # configs are copied on the way down; the record must stay one object


def with_citations(
    retriever: Runnable[str, list[Document]],
    answer_chain: Runnable[dict[str, Any], Any],
    *,
    attributor: Any = None,
    method: str = "auto",
    budget: str = "balanced",
    keep_documents: int = 2,
    keep_sentences: int = 5,
    per_claim: int = 1,
    min_score: float = 0.0,
    attribute_kwargs: dict[str, Any] | None = None,
    options: CitationOptions | None = None,
    format_context: Callable[[list[Document]], Any] | None = format_documents,
    raise_error: bool = False,
) -> Runnable[str, dict[str, Any]]:
    """A RAG chain that returns ``{"question", "context", "answer", "attribution", "citations"}``.

    The input (a question string) goes to ``retriever``; ``answer_chain`` gets
    ``{"question": ..., "context": format_context(documents)}`` (the ``Document`` list itself
    when ``format_context`` is ``None``) and returns the answer (a string or a message).
    ``context`` is the list of retrieved documents, ``attribution`` the ``CitationResult`` of
    the answer on the prompt the answer chain's LLM read (``.cited_answer()``, ``.error``;
    its ``context`` holds the documents in that prompt) and ``citations`` its ``Citation``
    list. The result is also dispatched as the custom event ``"attribot_citations"``
    (``astream_events``, ``on_custom_event``). Streaming streams the answer; the citations
    come last. Settings as for ``AttriBoTCallbackHandler``. A failed attribution leaves the
    answer as it is and sets ``attribution.error``, unless ``raise_error=True``.
    """
    if attributor is None:
        attributor = shared_attributor()
    options = options or citation_options(
        method, budget, keep_documents, keep_sentences, per_claim, min_score, attribute_kwargs
    )

    def answer_input(inputs: dict[str, Any]) -> dict[str, Any]:
        context = inputs["context"]
        return {"question": inputs["question"], "context": format_context(context) if format_context else context}

    def answer(inputs: dict[str, Any]) -> Runnable:
        return (RunnableLambda(answer_input, name="format_context") | answer_chain).with_config(
            callbacks=[inputs["model_input"]]
        )

    def run(inputs: dict[str, Any]) -> CitationResult:
        result, error = cite(
            attributor,
            inputs["model_input"].messages,
            inputs["context"],
            text_of(inputs["answer"]),
            options,
            question=text_of(inputs["question"]),
        )
        if error is not None and raise_error:
            raise error
        return result

    def cite_step(inputs: dict[str, Any], config: RunnableConfig) -> CitationResult:
        result = run(inputs)
        dispatch_custom_event(CITATIONS_EVENT, result, config=config)
        return result

    async def acite_step(inputs: dict[str, Any], config: RunnableConfig) -> CitationResult:
        result = await asyncio.to_thread(run, inputs)
        await adispatch_custom_event(CITATIONS_EVENT, result, config=config)
        return result

    def citations(inputs: dict[str, Any]) -> list[Any]:
        return list(inputs["attribution"].citations)

    chain = (
        RunnableParallel(
            context=retriever,
            question=RunnablePassthrough(),
            model_input=RunnableLambda(lambda _: _ModelInput(), name="model_input"),
        )
        .assign(answer=RunnableLambda(answer, name="answer"))
        .assign(attribution=RunnableLambda(cite_step, afunc=acite_step, name="attribot_attribute"))
        .assign(citations=RunnableLambda(citations, name="citations"))
        .pick(["question", "context", "answer", "attribution", "citations"])
    )
    return chain.with_config(run_name="AttriBoTCitations")
