"""The LangChain path of ``attribot-rag demo`` (registered as the ``attribot_rag.demo`` entry
point ``langchain``): a retriever over the question's documents, the attribution prompt as a
chat prompt, the embedded model as chat model, and ``AttriBoTCallbackHandler`` on the run."""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from attribot_rag import AttributionResult, Attributor
from attribot_rag import Document as AttribotDocument
from attribot_rag.core.prompt import DEFAULT_TEMPLATE

from .callbacks import AttriBoTCallbackHandler
from .local_models import AttributorChatModel, MiniLMEmbeddings
from .runnables import format_documents

_embeddings: MiniLMEmbeddings | None = None


def answer_and_attribute(attributor: Attributor, question: str, documents: list[AttribotDocument]) -> AttributionResult:
    """Answer ``question`` with a LangChain RAG chain over ``documents``; return the handler's
    attribution of that run (errors raise: the demo wants to see them)."""
    global _embeddings
    _embeddings = _embeddings or MiniLMEmbeddings()
    store = InMemoryVectorStore(_embeddings)
    store.add_documents([Document(id=d.id, page_content=d.text, metadata={"title": d.title}) for d in documents])
    retriever = store.as_retriever(search_kwargs={"k": len(documents)})
    prompt = ChatPromptTemplate.from_messages([("human", DEFAULT_TEMPLATE)])
    llm = AttributorChatModel(attributor=attributor, max_new_tokens=40)
    chain = (
        {"context": retriever | format_documents, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()
    )
    handler = AttriBoTCallbackHandler(attributor, raise_error=True)  # the default: method auto, budget balanced
    chain.invoke(question, config={"callbacks": [handler]})
    return handler.last_result.attribution
