"""Run pairing, concurrency, async, streaming, background and error paths of the LangChain
integration. The answering LLM is a fake (answers are fixed strings); the attribution model is
the real embedded one."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
from langchain_attribot import (
    CITATIONS_EVENT,
    AttriBoTCallbackHandler,
    CitationResult,
    format_documents,
    with_citations,
)
from langchain_attribot.citations import core_document, unique_documents
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import (
    BaseChatModel,
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableParallel, RunnablePassthrough
from pydantic import ValidationError

from attribot_rag import Citations, shared_attributor

TOWER = Document(page_content="The tower was built in 1889. It is painted red.", metadata={"source": "tower.txt"})
CATS = Document(id="cats", page_content="Cats purr when they are happy. Cats sleep a lot.", metadata={"kind": "pets"})
RIVER = Document(page_content="The river flows north. The river is long.")
DOCS = [TOWER, CATS, RIVER]

Q_TOWER, A_TOWER = "When was the tower built?", "It was built in 1889."
Q_CATS, A_CATS = "Why do cats purr?", "Cats purr when they are happy."
ANSWERS = {"tower": A_TOWER, "cats": A_CATS}

PROMPT = ChatPromptTemplate.from_messages(
    [("human", "Answer the question using the documents below. Be brief.\n\n{context}Question: {question}")]
)


def _words(text: str) -> set[str]:
    return {w.strip("?.,").lower() for w in text.split() if len(w.strip("?.,")) > 3}


class KeywordRetriever(BaseRetriever):
    """Documents sharing the most words (longer than 3 letters) with the query."""

    docs: list[Document]
    k: int = 2

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        scored = [(len(_words(query) & _words(d.page_content)), i) for i, d in enumerate(self.docs)]
        return [self.docs[i] for score, i in sorted(scored, key=lambda s: (-s[0], s[1])) if score > 0][: self.k]


class LookupChatModel(BaseChatModel):
    """Answers by a keyword of the question (thread-safe, deterministic)."""

    answers: dict[str, str]

    @property
    def _llm_type(self) -> str:
        return "lookup"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        question = str(messages[-1].text).rsplit("Question:", 1)[-1].lower()
        answer = next((a for key, a in self.answers.items() if key in question), "I do not know.")
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])


class GatedAttributor:
    """The real attributor, held back until ``gate`` opens."""

    def __init__(self, attributor: Any) -> None:
        self.attributor, self.gate = attributor, threading.Event()

    def attribute_messages_with(self, *args: Any) -> Any:
        assert self.gate.wait(120)
        return self.attributor.attribute_messages_with(*args)


class FailingAttributor:
    def attribute_messages_with(self, *args: Any) -> Any:
        raise RuntimeError("out of memory (simulated)")


def rag_chain(llm: Any = None, retriever: Any = None) -> Any:
    retriever = retriever or KeywordRetriever(docs=DOCS)
    llm = llm or LookupChatModel(answers=ANSWERS)
    return (
        {"context": retriever | format_documents, "question": RunnablePassthrough()} | PROMPT | llm | StrOutputParser()
    )


def check_offsets(result: CitationResult) -> None:
    assert result.citations.sources
    for source in result.citations.sources:
        assert result.document_of(source).page_content[source.span.start : source.span.end] == source.span.text


def check_tower(result: CitationResult) -> None:
    assert result.error is None, result.error
    assert (result.question, result.answer) == (Q_TOWER, A_TOWER)
    assert result.citations.sources[0].span.text == "The tower was built in 1889."
    assert result.citations.sources[0].span.doc_id == "tower.txt"
    check_offsets(result)


def check_cats(result: CitationResult) -> None:
    assert result.error is None, result.error
    assert (result.question, result.answer) == (Q_CATS, A_CATS)
    assert result.citations.sources[0].span.text == "Cats purr when they are happy."
    assert result.citations.sources[0].span.doc_id == "cats"
    check_offsets(result)


def check_clean(handler: Any) -> None:
    assert not handler._roots and not handler._runs  # nothing kept of runs that ended


def test_document_ids_and_dedup() -> None:
    docs = [TOWER, CATS, RIVER, Document(page_content=TOWER.page_content), Document(page_content="  ")]
    unique = unique_documents(docs)
    assert unique == [TOWER, CATS, RIVER]
    # Document.id, else metadata["source"], else none: the core names it by title or place
    assert [core_document(d).id for d in unique] == ["tower.txt", "cats", None]
    titled = core_document(Document(page_content="x", metadata={"title": "Rivers", "source": ""}))
    assert (titled.id, titled.title, titled.text) == (None, "Rivers", "x")


def test_invoke_pairs_question_documents_and_answer(attributor: Any) -> None:
    seen = []
    handler = AttriBoTCallbackHandler(attributor, on_result=seen.append)
    chain = rag_chain()
    run_id = uuid4()
    output = chain.invoke(Q_TOWER, config={"callbacks": [handler], "run_id": run_id})
    assert output == chain.invoke(Q_TOWER) == A_TOWER
    result = handler.results[run_id]
    assert result is handler.last_result is handler.wait(run_id) and seen == [result]
    assert result.run_id == run_id == handler.last_run_id
    check_tower(result)
    assert [d.page_content for d in result.documents] == [TOWER.page_content, CATS.page_content]
    assert result.unseen == []
    top = result.citations.sources[0]
    assert result.document_of(top).metadata == {"source": "tower.txt"} and top.claims == [0] and top.span.score > 0
    claim = result.citations.claims[0]
    assert claim.markers[0].number == top.number and claim.text == A_TOWER
    assert (
        result.cited_answer()
        == result.attribution.cited_answer()
        == f"{A_TOWER}[1]\n\nSources:\n[1] tower.txt: {top.span.text}"
    )
    with pytest.raises(ValidationError):
        result.error = "changed"  # type: ignore[misc]
    CitationResult.model_validate_json(result.model_dump_json())
    check_clean(handler)


def test_batch_and_concurrent_threads_share_one_handler(attributor: Any) -> None:
    handler = AttriBoTCallbackHandler(attributor, method="exact")
    chain = rag_chain()
    ids = [uuid4(), uuid4()]
    outputs = chain.batch([Q_TOWER, Q_CATS], config=[{"callbacks": [handler], "run_id": i} for i in ids])
    assert outputs == [A_TOWER, A_CATS]
    check_tower(handler.results[ids[0]])
    check_cats(handler.results[ids[1]])

    questions = [Q_TOWER, Q_CATS, Q_CATS, Q_TOWER]
    ids = [uuid4() for _ in questions]
    with ThreadPoolExecutor(4) as pool:
        outputs = list(
            pool.map(lambda q, i: chain.invoke(q, config={"callbacks": [handler], "run_id": i}), questions, ids)
        )
    assert outputs == [A_TOWER, A_CATS, A_CATS, A_TOWER]
    for question, run_id in zip(questions, ids, strict=True):
        (check_tower if question == Q_TOWER else check_cats)(handler.results[run_id])
    assert len(handler.results) == 6
    check_clean(handler)


def test_stream_gives_citations_when_the_stream_ends(attributor: Any) -> None:
    handler = AttriBoTCallbackHandler(attributor)
    chain = rag_chain(GenericFakeChatModel(messages=iter([A_TOWER])))
    chunks = list(chain.stream(Q_TOWER, config={"callbacks": [handler]}))
    assert len(chunks) > 1 and "".join(chunks) == A_TOWER
    check_tower(handler.last_result)
    check_clean(handler)


def test_async_invoke_stream_and_gather(attributor: Any) -> None:
    async def main() -> None:
        # The sync handler: LangChain runs it in a worker thread under ainvoke.
        handler = AttriBoTCallbackHandler(attributor)
        assert await rag_chain().ainvoke(Q_TOWER, config={"callbacks": [handler]}) == A_TOWER
        check_tower(handler.last_result)

        ahandler = AttriBoTCallbackHandler(attributor)  # one handler, sync and async
        chain = rag_chain(GenericFakeChatModel(messages=iter([A_CATS])))
        chunks = [c async for c in chain.astream(Q_CATS, config={"callbacks": [ahandler]})]
        assert "".join(chunks) == A_CATS
        check_cats(ahandler.last_result)
        check_cats(await ahandler.await_result())

        ids = [uuid4(), uuid4()]
        outputs = await asyncio.gather(
            *(
                rag_chain().ainvoke(q, config={"callbacks": [ahandler], "run_id": i})
                for q, i in zip((Q_TOWER, Q_CATS), ids, strict=True)
            )
        )
        assert outputs == [A_TOWER, A_CATS]
        check_tower(ahandler.results[ids[0]])
        check_cats(ahandler.results[ids[1]])
        check_clean(ahandler)

    asyncio.run(main())


def test_several_retrievers_and_multi_query_are_merged(attributor: Any) -> None:
    handler = AttriBoTCallbackHandler(attributor, method="exact")
    first, second = KeywordRetriever(docs=[TOWER, RIVER]), KeywordRetriever(docs=[CATS, TOWER], k=1)
    both = RunnableParallel(a=first, b=second) | (lambda r: unique_documents(r["a"] + r["b"]))  # as an ensemble merges
    chain = rag_chain(retriever=both)
    assert chain.invoke(Q_TOWER, config={"callbacks": [handler]}) == A_TOWER
    result = handler.last_result
    check_tower(result)
    assert [d.page_content for d in result.documents] == [TOWER.page_content]  # both retrievers' copy, once

    # Multi-query: an LLM rewrites the question, one retrieval per query, then the answer.
    rewrite = PROMPT.partial(context="") | FakeListChatModel(responses=["tower built\ncats happy"]) | StrOutputParser()
    retrieve = (
        rewrite
        | (lambda text: text.splitlines())
        | KeywordRetriever(docs=DOCS, k=1).map()
        | (lambda lists: [d for docs in lists for d in docs])
    )
    chain = (
        {"context": retrieve | format_documents, "question": RunnablePassthrough()}
        | PROMPT
        | LookupChatModel(answers=ANSWERS)
        | StrOutputParser()
    )
    assert chain.invoke(Q_TOWER, config={"callbacks": [handler]}) == A_TOWER
    result = handler.last_result
    check_tower(result)  # question: the user's, not a rewrite; answer: the last LLM's
    assert [d.page_content for d in result.documents] == [TOWER.page_content, CATS.page_content]
    check_clean(handler)


def test_dict_input_and_question_key(attributor: Any) -> None:
    handler = AttriBoTCallbackHandler(attributor, question_key="q", method="exact")
    chain = (
        {"context": (lambda x: x["q"]) | KeywordRetriever(docs=DOCS) | format_documents, "question": lambda x: x["q"]}
        | PROMPT
        | LookupChatModel(answers=ANSWERS)
    )
    assert chain.invoke({"q": Q_TOWER, "user": "ann"}, config={"callbacks": [handler]}).content == A_TOWER
    check_tower(handler.last_result)


def test_background_does_not_delay_the_chain(attributor: Any) -> None:
    gated = GatedAttributor(attributor)
    handler = AttriBoTCallbackHandler(gated, background=True)
    run_id = uuid4()
    try:
        assert rag_chain().invoke(Q_TOWER, config={"callbacks": [handler], "run_id": run_id}) == A_TOWER
        assert run_id not in handler.results and handler.last_result is None  # still held back
        gated.gate.set()
        check_tower(handler.wait(run_id, timeout=120))
        assert handler.last_result is handler.results[run_id]
    finally:
        gated.gate.set()
        handler.shutdown()


def test_empty_retrieval_is_recorded_not_raised(attributor: Any, caplog: pytest.LogCaptureFixture) -> None:
    handler = AttriBoTCallbackHandler(attributor)
    chain = rag_chain()
    question = "Zebras?"  # no document shares a word
    with caplog.at_level(logging.WARNING, logger="langchain_attribot"):
        output = chain.invoke(question, config={"callbacks": [handler]})
    assert output == chain.invoke(question) == "I do not know."
    result = handler.last_result
    assert "no documents retrieved" in result.error and result.attribution is None
    assert result.citations.claims == [] and result.citations.sources == []
    assert result.cited_answer() == "I do not know."
    assert "no documents retrieved" in caplog.text


def test_failing_attributor_never_breaks_the_chain_unless_strict(
    attributor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    chain = rag_chain()
    handler = AttriBoTCallbackHandler(FailingAttributor())
    with caplog.at_level(logging.WARNING, logger="langchain_attribot"):
        assert chain.invoke(Q_TOWER, config={"callbacks": [handler]}) == A_TOWER
    assert handler.last_result.error == "RuntimeError: out of memory (simulated)"
    assert "out of memory" in caplog.text
    check_clean(handler)

    # Settings are checked when the handler is made, not at the first run.
    with pytest.raises(ValidationError, match="no_such_option"):
        AttriBoTCallbackHandler(attributor, no_such_option=1)
    with pytest.raises(ValidationError, match="unknown method 'fastest'"):
        AttriBoTCallbackHandler(attributor, method="fastest")

    strict = AttriBoTCallbackHandler(FailingAttributor(), raise_error=True)
    with pytest.raises(RuntimeError, match="out of memory"):
        chain.invoke(Q_TOWER, config={"callbacks": [strict]})
    assert strict.last_result.error  # recorded as well

    strict_background = AttriBoTCallbackHandler(FailingAttributor(), raise_error=True, background=True)
    assert chain.invoke(Q_TOWER, config={"callbacks": [strict_background]}) == A_TOWER
    with pytest.raises(RuntimeError, match="out of memory"):
        strict_background.wait(timeout=60)
    strict_background.shutdown()

    async def main() -> None:
        ahandler = AttriBoTCallbackHandler(FailingAttributor(), raise_error=True)
        with pytest.raises(RuntimeError, match="out of memory"):
            await chain.ainvoke(Q_TOWER, config={"callbacks": [ahandler]})

    asyncio.run(main())


def test_runs_without_an_answer_or_that_fail_leave_nothing_behind(attributor: Any) -> None:
    handler = AttriBoTCallbackHandler(attributor)
    assert KeywordRetriever(docs=DOCS).invoke(Q_TOWER, config={"callbacks": [handler]})
    assert not handler.results and handler.last_result is None

    def boom(_: Any) -> str:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        (rag_chain() | boom).invoke(Q_TOWER, config={"callbacks": [handler]})
    assert not handler.results
    check_clean(handler)

    # A bare LLM call has an answer but no documents: recorded as such.
    LookupChatModel(answers=ANSWERS).invoke("Question: tower?", config={"callbacks": [handler]})
    assert "no documents retrieved" in handler.last_result.error
    check_clean(handler)


def test_default_attributor_is_the_core_shared_one(attributor: Any) -> None:
    handler, explicit = AttriBoTCallbackHandler(), AttriBoTCallbackHandler(model=None, device=None, dtype=None)
    assert handler.attributor is explicit.attributor is shared_attributor()
    assert handler.options.method == "auto" and handler.options.budget == "balanced"


class EventCollector(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def test_with_citations_output_stream_async_and_errors(attributor: Any) -> None:
    answer_chain = PROMPT | LookupChatModel(answers=ANSWERS) | StrOutputParser()
    chain = with_citations(KeywordRetriever(docs=DOCS), answer_chain, attributor=attributor)
    collector = EventCollector()
    output = chain.invoke(Q_TOWER, config={"callbacks": [collector]})
    assert set(output) == {"question", "context", "answer", "attribution", "citations"}
    assert output["answer"] == rag_chain().invoke(Q_TOWER)
    assert output["context"] == [TOWER, CATS]
    check_tower(output["attribution"])
    assert output["citations"] is output["attribution"].citations and isinstance(output["citations"], Citations)
    assert collector.events == [(CITATIONS_EVENT, output["attribution"])]

    streaming = with_citations(
        KeywordRetriever(docs=DOCS),
        PROMPT | GenericFakeChatModel(messages=iter([A_CATS])) | StrOutputParser(),
        attributor=attributor,
    )
    chunks = list(streaming.stream(Q_CATS))
    assert sum("answer" in c for c in chunks) > 1 and "citations" in chunks[-1]
    merged: dict[str, Any] = {}
    for chunk in chunks:
        for key, value in chunk.items():
            merged[key] = merged[key] + value if key == "answer" and key in merged else value
    assert merged["answer"] == A_CATS
    check_cats(merged["attribution"])

    async def main() -> None:
        events = [e async for e in chain.astream_events(Q_CATS, version="v2")]
        custom = [e["data"] for e in events if e["event"] == "on_custom_event" and e["name"] == CITATIONS_EVENT]
        check_cats(custom[0])
        check_cats((await chain.ainvoke(Q_CATS))["attribution"])

    asyncio.run(main())

    output = chain.invoke("Zebras?")
    assert output["answer"] == "I do not know." and output["citations"].sources == []
    assert "no documents retrieved" in output["attribution"].error
    strict = with_citations(KeywordRetriever(docs=DOCS), answer_chain, attributor=FailingAttributor(), raise_error=True)
    with pytest.raises(RuntimeError, match="out of memory"):
        strict.invoke(Q_TOWER)
