"""The handler attributes the prompt the LLM read: the last model call's own messages, with the
documents that any run returned and that prompt holds. Real chains and LangGraph graphs; the
answering LLMs are fakes (fixed answers), the attribution model is the real embedded one."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import threading
import time
from typing import Annotated, Any, TypedDict
from uuid import uuid4

import pytest
from langchain_attribot import CITATIONS_EVENT, AttriBoTCallbackHandler, CitationResult
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_core.tools import create_retriever_tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from attribot_rag.api.html import notebook_frame, render_failed

# Invented facts: the proxy can only take them from the context.
BRIDGE = Document(id="bridge", page_content="The Veltrana Bridge spans the river Osk. It was completed in 1742.")
HARROW = Document(
    id="harrow", page_content="Mount Harrow is the tallest peak in Dorland. Its summit is covered in snow."
)
BANANAS = Document(id="bananas", page_content="Bananas are yellow fruits. They grow in tropical climates.")
LIBRARY = Document(id="library", page_content="The Quell library opened in 1901. It holds old maps of Dorland.")
ALL = [BRIDGE, HARROW, BANANAS, LIBRARY]
ANSWERS = {
    "river": "It spans the river Osk.",
    "bridge": "It was completed in 1742.",
    "library": "It opened in 1901.",
    "peak": "Mount Harrow is the tallest peak.",
}
SYSTEM = "You are a careful assistant. Answer from the documents only."
PROMPT = ChatPromptTemplate.from_messages(
    [("system", SYSTEM), ("human", "Documents:\n{context}\nQuestion: {question}")]
)


class FixedRetriever(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return list(self.docs)


class LookupChatModel(BaseChatModel):
    """Answers by a keyword of the last message's question (deterministic, thread-safe)."""

    @property
    def _llm_type(self) -> str:
        return "lookup"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        question = str(messages[-1].text).rsplit("Question:", 1)[-1].lower()
        answer = next((a for key, a in ANSWERS.items() if key in question), "I do not know.")
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])


def join(documents: list[Document]) -> str:
    return "".join(f"- {d.page_content}\n" for d in documents)


def chain_over(documents: Any) -> Any:
    """A RAG chain: ``documents`` (a runnable giving documents) | format | prompt | model."""
    return (
        {"context": documents | join, "question": RunnablePassthrough()}
        | PROMPT
        | LookupChatModel()
        | StrOutputParser()
    )


def ids(documents: Any) -> list[str]:
    return [d.id for d in documents]


def check_spans(result: CitationResult) -> None:
    """Every span is verbatim in the proxy's prompt, and every citation in its document."""
    attribution = result.attribution
    for span in attribution.documents + attribution.sentences:
        assert attribution.prompt[span.prompt_start : span.prompt_end] == span.text
    for source in result.citations.sources:
        assert result.document_of(source).page_content[source.span.start : source.span.end] == source.span.text


def test_a_filter_step_leaves_the_dropped_documents_unseen(attributor: Any) -> None:
    handler = AttriBoTCallbackHandler(attributor, method="exact")
    chain = chain_over(FixedRetriever(docs=ALL) | RunnableLambda(lambda ds: ds[2:]))
    assert chain.invoke("When did the library open?", config={"callbacks": [handler]}) == "It opened in 1901."
    result = handler.last_result
    assert result.error is None, result.error
    # prompt order, the documents the prompt lacks last
    assert ids(result.documents) == ["bananas", "library", "bridge", "harrow"]
    assert ids(result.unseen) == ["bridge", "harrow"]
    top = result.citations.sources[0].span
    assert top.text == "The Quell library opened in 1901." and top.doc_id == "library"
    assert result.attribution.unseen_documents == [2, 3]  # indexes into result.documents
    assert SYSTEM in result.attribution.prompt and "Question: When did the library open?" in result.attribution.prompt
    check_spans(result)


def test_documents_from_a_lambda_and_two_retrievers_in_prompt_order(attributor: Any) -> None:
    handler = AttriBoTCallbackHandler(attributor, method="exact")
    # a vector store searched in a lambda (no BaseRetriever run at all)
    search = RunnableLambda(lambda question: [HARROW, BRIDGE], name="similarity_search")
    assert (
        chain_over(search).invoke("When was the bridge completed?", config={"callbacks": [handler]})
        == ANSWERS["bridge"]
    )
    result = handler.last_result
    assert ids(result.documents) == ["harrow", "bridge"] and result.unseen == []
    assert result.citations.sources[0].span.text == "It was completed in 1742."
    assert result.document_of(result.citations.sources[0]) is BRIDGE

    # two retrievers in parallel, merged b-first: the context follows the prompt, not the runs
    merged = RunnableParallel(a=FixedRetriever(docs=[BRIDGE, HARROW]), b=FixedRetriever(docs=[LIBRARY])) | (
        lambda r: r["b"] + r["a"]
    )
    assert (
        chain_over(merged).invoke("When was the bridge completed?", config={"callbacks": [handler]})
        == ANSWERS["bridge"]
    )
    result = handler.last_result
    assert ids(result.documents) == ["library", "bridge", "harrow"]
    assert result.citations.sources[0].span.doc_index == 1 and result.citations.sources[0].span.doc_id == "bridge"
    check_spans(result)


def test_system_prompt_and_few_shot_messages_stay_unablated(attributor: Any) -> None:
    few_shot = ChatPromptTemplate.from_messages(
        [
            ("system", SYSTEM),
            ("human", "Documents:\n- The Osk is a cold river.\nQuestion: Which river is cold?"),
            ("ai", "The Osk is cold."),
            ("human", "Documents:\n{context}\nQuestion: {question}"),
        ]
    )
    handler = AttriBoTCallbackHandler(attributor, method="exact")
    chain = (
        {"context": FixedRetriever(docs=[HARROW, BRIDGE]) | join, "question": RunnablePassthrough()}
        | few_shot
        | LookupChatModel()
    )
    chain.invoke("When was the bridge completed?", config={"callbacks": [handler]})
    attribution = handler.last_result.attribution
    prompt = attribution.prompt
    fixed = [SYSTEM, "- The Osk is a cold river.\nQuestion: Which river is cold?", "The Osk is cold."]
    ranges = [(prompt.index(text), prompt.index(text) + len(text)) for text in fixed]
    spans = [(s.prompt_start, s.prompt_end) for s in attribution.documents + attribution.sentences]
    assert all(end <= a or start >= b for start, end in spans for a, b in ranges)
    assert sorted(s.text for s in attribution.documents) == sorted([HARROW.page_content, BRIDGE.page_content])
    assert attribution.top(1)[0].text == "It was completed in 1742."


def test_a_follow_up_is_attributed_with_the_history(attributor: Any) -> None:
    """Turn 2's answer comes from a document of turn 1 that now sits in the chat history (the
    app puts only documents not yet in the conversation into the new message)."""
    chat = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), MessagesPlaceholder("history"), ("human", "Documents:\n{context}\nQuestion: {question}")]
    )
    model = LookupChatModel()

    def new_documents(inputs: dict[str, Any]) -> list[Document]:
        seen = "".join(str(m.text) for m in inputs["history"])
        return [d for d in inputs["documents"] if d.page_content not in seen]

    turn = (
        RunnablePassthrough.assign(
            documents=lambda x: FixedRetriever(docs=[HARROW, BRIDGE]).invoke(x["question"])
        ).assign(context=RunnableLambda(new_documents) | join)
        | chat
        | model
    )
    handler = AttriBoTCallbackHandler(attributor, method="exact")
    first = {"history": [], "question": "Which river does the bridge span?"}
    reply = turn.invoke(first, config={"callbacks": [handler]})
    assert reply.content == ANSWERS["river"]
    history = [HumanMessage(f"Documents:\n- {BRIDGE.page_content}\nQuestion: {first['question']}"), reply]
    second = turn.invoke(
        {"history": history, "question": "And when was the bridge completed?"}, config={"callbacks": [handler]}
    )
    assert second.content == ANSWERS["bridge"]
    result = handler.last_result
    assert result.error is None, result.error
    assert result.question == "And when was the bridge completed?"
    # the bridge is read in the history (before Mount Harrow, in this turn's message)
    assert ids(result.documents) == ["bridge", "harrow"]
    top = result.citations.sources[0].span
    assert (top.doc_id, top.text) == ("bridge", "It was completed in 1742.")
    history_at = result.attribution.prompt.index(first["question"])
    assert result.attribution.documents[0].prompt_end < history_at
    check_spans(result)


class State(TypedDict):
    question: str
    context: list[Document]
    answer: str


def test_langgraph_two_node_rag_graph(attributor: Any) -> None:
    retriever, model = FixedRetriever(docs=[LIBRARY, BRIDGE]), LookupChatModel()

    def retrieve(state: State) -> dict[str, Any]:
        return {"context": retriever.invoke(state["question"])}

    def generate(state: State) -> dict[str, Any]:
        messages = PROMPT.invoke({"question": state["question"], "context": join(state["context"])})
        return {"answer": model.invoke(messages).content}

    graph = StateGraph(State)
    graph.add_node("retrieve", retrieve)
    graph.add_node("generate", generate)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "generate")
    graph.add_edge("generate", END)
    app = graph.compile()

    handler, events = AttriBoTCallbackHandler(attributor, method="exact"), EventCollector()
    run_id = uuid4()
    config = {"callbacks": [handler, events], "run_id": run_id, "tags": ["rag"], "metadata": {"user": "ann"}}
    output = app.invoke({"question": "When did the library open?"}, config=config)
    assert output["answer"] == app.invoke({"question": "When did the library open?"})["answer"] == ANSWERS["library"]
    result = handler.wait(run_id)
    assert result.error is None, result.error
    assert ids(result.documents) == ["library", "bridge"] and result.citations.sources[0].span.doc_id == "library"
    assert result.question == "When did the library open?"
    assert "rag" in result.tags and result.metadata["user"] == "ann"
    # the result is sent to the invocation's other handlers as a custom event of the root run
    assert events.events == [(CITATIONS_EVENT, result, run_id)]


class AgentState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def test_langgraph_agent_with_a_retriever_tool(attributor: Any) -> None:
    tool = create_retriever_tool(FixedRetriever(docs=[HARROW, BRIDGE]), "search", "Search the documents.")
    call = AIMessage(content="", tool_calls=[{"name": "search", "args": {"query": "Veltrana Bridge"}, "id": "call-1"}])
    model = FakeMessagesListChatModel(responses=[call, AIMessage(content=ANSWERS["bridge"])])

    graph = StateGraph(AgentState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode([tool]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile()

    handler = AttriBoTCallbackHandler(attributor, method="exact")
    output = app.invoke(
        {"messages": [HumanMessage("When was the Veltrana Bridge completed?")]}, config={"callbacks": [handler]}
    )
    assert output["messages"][-1].content == ANSWERS["bridge"]
    result = handler.last_result
    assert result.error is None, result.error
    assert result.answer == ANSWERS["bridge"]  # the last model call's, not the tool call's
    assert ids(result.documents) == ["harrow", "bridge"] and result.unseen == []  # read in the tool message
    assert result.citations.sources[0].span.text == "It was completed in 1742."
    assert 'search({"query": "Veltrana Bridge"})' in result.attribution.prompt  # the call the model made
    check_spans(result)


def test_a_handler_on_the_model_only_says_so(attributor: Any, caplog: pytest.LogCaptureFixture) -> None:
    handler = AttriBoTCallbackHandler(attributor)
    chain = (
        {"context": FixedRetriever(docs=[BRIDGE]) | join, "question": RunnablePassthrough()}
        | PROMPT
        | LookupChatModel(callbacks=[handler])
    )
    with caplog.at_level(logging.WARNING, logger="langchain_attribot"):
        assert chain.invoke("When was the bridge completed?").content == ANSWERS["bridge"]
    assert "attached to the model only" in handler.last_result.error
    assert "attached to the model only" in caplog.text


class EventCollector(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.events.append((name, data, run_id))


class SlowAttributor:
    """The real attributor, slowed so that a stalled loop would show."""

    def __init__(self, attributor: Any, delay: float) -> None:
        self.attributor, self.delay = attributor, delay

    def attribute_messages_with(self, *args: Any) -> Any:
        time.sleep(self.delay)  # a blocking call, as attribution is
        return self.attributor.attribute_messages_with(*args)


def test_async_attribution_never_stalls_the_loop(attributor: Any) -> None:
    handler = AttriBoTCallbackHandler(SlowAttributor(attributor, 0.6), method="exact")
    chain = chain_over(FixedRetriever(docs=[HARROW, BRIDGE]))

    async def main() -> tuple[float, list[Any]]:
        gaps, stop = [], asyncio.Event()

        async def heartbeat() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.05)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        started = time.perf_counter()
        answer = await chain.ainvoke("When was the bridge completed?", config={"callbacks": [handler]})
        took = time.perf_counter() - started
        events = [
            e
            async for e in chain.astream_events(
                "When was the bridge completed?", config={"callbacks": [handler]}, version="v2"
            )
        ]
        stop.set()
        await beat
        assert answer == ANSWERS["bridge"] and took > 0.6  # the invocation waited for attribution
        return max(gaps), events

    worst, events = asyncio.run(main())
    assert worst < 0.5
    custom = [e for e in events if e["event"] == "on_custom_event" and e["name"] == CITATIONS_EVENT]
    assert len(custom) == 1 and custom[0]["data"].citations.sources[0].span.doc_id == "bridge"


class Gate:
    """The real attributor, held back until the gate opens."""

    def __init__(self, attributor: Any) -> None:
        self.attributor, self.open = attributor, threading.Event()

    def attribute_messages_with(self, *args: Any) -> Any:
        assert self.open.wait(60)
        return self.attributor.attribute_messages_with(*args)


def test_wait_says_which_case_it_is(attributor: Any) -> None:
    handler = AttriBoTCallbackHandler(Gate(attributor), background=True)
    with pytest.raises(KeyError, match=r"unknown run .* never saw it start"):
        handler.wait(uuid4(), timeout=1)

    # a run still going: wait() waits for it, and says so when the time is up
    release, run_id = threading.Event(), uuid4()
    slow = RunnableLambda(lambda q: (release.wait(60), q)[1]) | chain_over(FixedRetriever(docs=[BRIDGE]))
    worker = threading.Thread(
        target=slow.invoke,
        args=("When was the bridge completed?",),
        kwargs={"config": {"callbacks": [handler], "run_id": run_id}},
    )
    worker.start()
    try:
        time.sleep(0.2)
        with pytest.raises(TimeoutError, match="still running"):
            handler.wait(run_id, timeout=0.2)
        release.set()
        worker.join(60)
        with pytest.raises(TimeoutError, match="attribution is still going"):
            handler.wait(run_id, timeout=0.2)
        handler.attributor.open.set()
        assert handler.wait(run_id, timeout=60).citations.sources[0].span.text == "It was completed in 1742."
    finally:
        release.set()
        handler.attributor.open.set()
        handler.shutdown()

    bare = uuid4()
    (FixedRetriever(docs=[BRIDGE]) | join).invoke("bridge", config={"callbacks": [handler], "run_id": bare})
    with pytest.raises(KeyError, match="ended without an LLM or chat model call"):
        handler.wait(bare, timeout=1)
    failed = uuid4()
    with pytest.raises(ValueError, match="boom"):
        RunnableLambda(lambda _: (_ for _ in ()).throw(ValueError("boom"))).invoke(
            "x", config={"callbacks": [handler], "run_id": failed}
        )
    with pytest.raises(KeyError, match=r"failed .*ValueError"):
        handler.wait(failed)


def test_results_serialise_any_metadata_and_render_html(attributor: Any) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    when = datetime.datetime(2024, 5, 17, 12, 30)
    metadata = {"when": when, "tags": {"a"}, "obj": Opaque()}
    bridge = Document(id="bridge", page_content=BRIDGE.page_content, metadata=metadata)
    harrow = Document(id="harrow", page_content=HARROW.page_content, metadata={"obj": Opaque()})
    handler = AttriBoTCallbackHandler(attributor, method="exact", per_claim=2, min_score=0.1)
    # harrow is retrieved but filtered out: unseen, with its odd metadata
    chain = chain_over(FixedRetriever(docs=[bridge, harrow]) | RunnableLambda(lambda ds: ds[:1]))
    chain.invoke("When was the bridge completed?", config={"callbacks": [handler]})
    result = handler.last_result
    assert result.error is None, result.error
    data = json.loads(result.model_dump_json())
    expected = {"when": "2024-05-17T12:30:00", "tags": ["a"], "obj": "<opaque>"}
    assert data["documents"][0]["metadata"] == expected
    assert data["unseen"][0]["metadata"] == {"obj": "<opaque>"}
    assert data["citations"]["sources"][0]["span"]["doc_id"] == "bridge"
    # the page draws the citations with the handler's options, not the core's defaults
    assert result.to_html() == result.attribution.to_html(None, per_claim=2, min_score=0.1, min_share=0.1)
    assert result._repr_html_() == notebook_frame(result.to_html())

    # the error form: the same JSON, the answer kept, the core's page of a failed attribution
    failing = AttriBoTCallbackHandler(FailingAttributor())
    assert chain.invoke("When was the bridge completed?", config={"callbacks": [failing]}) == ANSWERS["bridge"]
    failed = failing.last_result
    data = json.loads(failed.model_dump_json())
    assert data["documents"][1]["metadata"] == {"obj": "<opaque>"} and data["citations"]["error"] == failed.error
    assert failed.cited_answer() == failed.answer == ANSWERS["bridge"] and not failed.ok
    assert failed.to_html("Q") == render_failed(ANSWERS["bridge"], "RuntimeError: out of memory (simulated)", "Q")


class FailingAttributor:
    def attribute_messages_with(self, *args: Any) -> Any:
        raise RuntimeError("out of memory (simulated)")
